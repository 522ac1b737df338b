//! Schema migrations, applied at start-up by `ItemStore::connect` and by `items-api migrate`.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use sea_orm_migration::{prelude::*, schema::*};

/// The PostgreSQL advisory lock that serialises migrators ("items-api" in ASCII). sea-orm's
/// migrator takes no lock: N replicas starting on an empty database would race on the schema
/// and on the migration records, and all but one would fail.
const MIGRATION_LOCK: i64 = 0x6974_656d_732d_6170;

/// Applies pending migrations while holding a database-wide lock, so that instances starting
/// together apply each migration once and the others wait, then find nothing to do.
/// `db` must be a one-connection pool: the lock belongs to a session.
pub async fn apply_locked(db: &DatabaseConnection) -> Result<(), DbErr> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            db.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .await?;
            let result = Migrator::up(db, None).await;
            let unlocked = db
                .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                .await;
            result.and(unlocked.map(|_| ()))
        }
        // SQLite: the write lock of an IMMEDIATE transaction; others wait on the busy timeout.
        _ => {
            db.execute_unprepared("BEGIN IMMEDIATE").await?;
            match Migrator::up(db, None).await {
                Ok(()) => db.execute_unprepared("COMMIT").await.map(|_| ()),
                Err(err) => {
                    let _ = db.execute_unprepared("ROLLBACK").await;
                    Err(err)
                }
            }
        }
    }
}

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
                    .col(string_len(Items::Name, super::NAME_MAX as u32))
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
