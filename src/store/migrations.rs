//! Schema migrations, applied at start-up by `ItemStore::connect`.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateItems)]
    }
}

#[derive(DeriveIden)]
enum Items {
    Table,
    Id,
    Name,
    Description,
    Price,
    Quantity,
    CreatedAt,
    UpdatedAt,
}

struct CreateItems;

impl MigrationName for CreateItems {
    fn name(&self) -> &str {
        "m20260101_000001_create_items"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateItems {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Items::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Items::Id))
                    .col(string_len(Items::Name, 200))
                    .col(text_null(Items::Description))
                    .col(double(Items::Price))
                    .col(big_integer(Items::Quantity).default(0))
                    .col(timestamp_with_time_zone(Items::CreatedAt))
                    .col(timestamp_with_time_zone(Items::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Items::Table).to_owned())
            .await
    }
}
