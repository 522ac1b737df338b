//! The statements the store runs. Each is built with sea-query (so placeholders, never values,
//! are in the SQL text) and executed through `DbTelemetry::observe`, which times it and opens
//! its CLIENT span.

use chrono::Utc;
use sea_orm::sea_query::{Expr, Func, Query, SelectStatement};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Statement,
};

use super::entity::{self, ActiveModel, Column, Entity};
use super::{Item, ItemStore, StoreError};
use crate::telemetry::db::{db_operation, DbOperation};

const SELECT: DbOperation = db_operation!("SELECT", "items");
const INSERT: DbOperation = db_operation!("INSERT", "items");
const UPDATE: DbOperation = db_operation!("UPDATE", "items");
const DELETE: DbOperation = db_operation!("DELETE", "items");

/// A validated item to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewItem {
    pub name: String,
    pub description: Option<String>,
    pub price: f64,
    pub quantity: i64,
}

/// A validated partial update: `None` leaves a field as it is; `Some(None)` clears the description.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub price: Option<f64>,
    pub quantity: Option<i64>,
}

/// Which page to read: the items after `after` (keyset: `WHERE id > ?`, served by the primary
/// key index whatever the table size), skipping `offset` of them; the total only on request,
/// because counting reads the whole index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u64,
    pub offset: u64,
    pub after: Option<i64>,
    pub count: bool,
}

/// One page of items, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Item>,
    /// Whether items follow this page.
    pub more: bool,
    /// Every stored item, when the request asked for it.
    pub total: Option<u64>,
}

impl ItemStore {
    pub async fn create(&self, new: NewItem) -> Result<Item, StoreError> {
        let now = Utc::now();
        let model = ActiveModel {
            id: NotSet,
            name: Set(new.name),
            description: Set(new.description),
            price: Set(new.price),
            quantity: Set(new.quantity),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let mut insert = Entity::insert(model);
        insert.query().returning_all();
        let stmt = insert.build(self.backend());
        self.fetch_one(&INSERT, stmt)
            .await?
            .ok_or_else(|| StoreError::Other(DbErr::RecordNotInserted))
    }

    pub async fn get(&self, id: i64) -> Result<Option<Item>, StoreError> {
        let stmt = Entity::find_by_id(id).build(self.backend());
        self.fetch_one(&SELECT, stmt).await
    }

    pub async fn list(&self, page: PageRequest) -> Result<Page, StoreError> {
        let mut select = Entity::find().order_by_asc(Column::Id);
        if let Some(after) = page.after {
            select = select.filter(Column::Id.gt(after));
        }
        // One row more than asked tells whether a next page exists, without counting.
        let stmt = select
            .limit(page.limit.saturating_add(1))
            .offset(page.offset)
            .build(self.backend());
        let mut items = self.fetch_all(&SELECT, stmt).await?;
        let more = items.len() as u64 > page.limit;
        items.truncate(usize::try_from(page.limit).unwrap_or(usize::MAX));
        let total = if page.count {
            Some(self.count().await?)
        } else {
            None
        };
        Ok(Page { items, more, total })
    }

    /// How many items are stored.
    pub async fn count(&self) -> Result<u64, StoreError> {
        let stmt = self.backend().build(&count_items());
        let row = self
            .telemetry
            .observe(&SELECT, stmt, |stmt| self.db.query_one_raw(stmt))
            .await?;
        let total: i64 = match row {
            Some(row) => row.try_get_by_index(0)?,
            None => 0,
        };
        Ok(u64::try_from(total).unwrap_or(0))
    }

    /// Full replace (PUT): every writable field is set.
    pub async fn replace(&self, id: i64, new: NewItem) -> Result<Option<Item>, StoreError> {
        let changes = ItemChanges {
            name: Some(new.name),
            description: Some(new.description),
            price: Some(new.price),
            quantity: Some(new.quantity),
        };
        self.update(id, changes).await
    }

    /// Partial update (PATCH): only the given fields change; `updated_at` always does.
    pub async fn update(&self, id: i64, changes: ItemChanges) -> Result<Option<Item>, StoreError> {
        let mut update = Query::update();
        update
            .table(Entity)
            .value(Column::UpdatedAt, Utc::now())
            .and_where(Column::Id.eq(id))
            .returning_all();
        if let Some(name) = changes.name {
            update.value(Column::Name, name);
        }
        if let Some(description) = changes.description {
            update.value(Column::Description, description);
        }
        if let Some(price) = changes.price {
            update.value(Column::Price, price);
        }
        if let Some(quantity) = changes.quantity {
            update.value(Column::Quantity, quantity);
        }
        let stmt = self.backend().build(&update);
        self.fetch_one(&UPDATE, stmt).await
    }

    /// Deletes one item; `false` when there was none.
    pub async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        let stmt = Entity::delete_by_id(id).build(self.backend());
        let result = self
            .telemetry
            .observe(&DELETE, stmt, |stmt| self.db.execute_raw(stmt))
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn fetch_one(
        &self,
        op: &DbOperation,
        stmt: Statement,
    ) -> Result<Option<Item>, StoreError> {
        let row = self
            .telemetry
            .observe(op, stmt, |stmt| self.db.query_one_raw(stmt))
            .await?;
        row.map(|row| entity::Model::from_query_result(&row, ""))
            .transpose()
            .map_err(StoreError::from)
    }

    async fn fetch_all(&self, op: &DbOperation, stmt: Statement) -> Result<Vec<Item>, StoreError> {
        let rows = self
            .telemetry
            .observe(op, stmt, |stmt| self.db.query_all_raw(stmt))
            .await?;
        rows.iter()
            .map(|row| entity::Model::from_query_result(row, ""))
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }
}

fn count_items() -> SelectStatement {
    Query::select()
        .expr(Func::count(Expr::col(Column::Id)))
        .from(Entity)
        .to_owned()
}
