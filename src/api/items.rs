//! `/items`: the CRUD handlers. They validate, call the store, and bump a business counter after
//! success; HTTP metrics and spans are the middleware's job, not theirs.

use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    ApiResponse, OpenApi, Tags,
};

use super::{
    errors::ApiError,
    fault::inject as inject_faults,
    model::{self, Item, ItemList},
    payload::JsonBody,
};
use crate::store::{ItemChanges, ItemStore, NewItem};
use crate::telemetry::business::BusinessMetrics;

#[derive(Tags)]
enum ApiTags {
    /// Create, read, update and delete items.
    Items,
}

pub struct ItemsApi {
    pub store: ItemStore,
    pub business: BusinessMetrics,
}

#[derive(ApiResponse)]
enum Created {
    /// The item was created; `Location` names it.
    #[oai(status = 201)]
    Created(Json<Item>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
enum Deleted {
    /// The item was deleted.
    #[oai(status = 204)]
    NoContent,
}

type ApiResult<T> = poem::Result<T>;

#[OpenApi(tag = "ApiTags::Items")]
impl ItemsApi {
    /// Create an item.
    #[oai(
        path = "/items",
        method = "post",
        operation_id = "createItem",
        transform = "inject_faults"
    )]
    async fn create(&self, body: JsonBody<NewItem>) -> ApiResult<Created> {
        let item = self.store.create(body.0).await.map_err(ApiError::from)?;
        self.business.created();
        let location = format!("/items/{}", item.id);
        Ok(Created::Created(Json(item.into()), location))
    }

    /// List items, oldest first.
    #[oai(
        path = "/items",
        method = "get",
        operation_id = "listItems",
        transform = "inject_faults"
    )]
    async fn list(
        &self,
        /// Page size, 1 to 100 (default 20).
        limit: Query<Option<i64>>,
        /// Items to skip (default 0).
        offset: Query<Option<i64>>,
    ) -> ApiResult<Json<ItemList>> {
        let (limit, offset) = model::paging(limit.0, offset.0).map_err(ApiError::Validation)?;
        // paging() bounds both to non-negative values.
        let page = self
            .store
            .list(limit.unsigned_abs(), offset.unsigned_abs())
            .await
            .map_err(ApiError::from)?;
        self.business.read(page.items.len() as u64);
        Ok(Json(ItemList {
            items: page.items.into_iter().map(Item::from).collect(),
            total: page.total,
            limit,
            offset,
        }))
    }

    /// Get one item.
    #[oai(
        path = "/items/:id",
        method = "get",
        operation_id = "getItem",
        transform = "inject_faults"
    )]
    async fn get(&self, id: Path<i64>) -> ApiResult<Json<Item>> {
        let item = self.store.get(id.0).await.map_err(ApiError::from)?;
        let item = item.ok_or(ApiError::NotFound(id.0))?;
        self.business.read(1);
        Ok(Json(item.into()))
    }

    /// Replace an item: every writable field is set (omitted `quantity` becomes 0).
    #[oai(
        path = "/items/:id",
        method = "put",
        operation_id = "replaceItem",
        transform = "inject_faults"
    )]
    async fn replace(&self, id: Path<i64>, body: JsonBody<NewItem>) -> ApiResult<Json<Item>> {
        let item = self
            .store
            .replace(id.0, body.0)
            .await
            .map_err(ApiError::from)?;
        let item = item.ok_or(ApiError::NotFound(id.0))?;
        self.business.updated();
        Ok(Json(item.into()))
    }

    /// Change some fields of an item.
    #[oai(
        path = "/items/:id",
        method = "patch",
        operation_id = "updateItem",
        transform = "inject_faults"
    )]
    async fn update(&self, id: Path<i64>, body: JsonBody<ItemChanges>) -> ApiResult<Json<Item>> {
        let item = self
            .store
            .update(id.0, body.0)
            .await
            .map_err(ApiError::from)?;
        let item = item.ok_or(ApiError::NotFound(id.0))?;
        self.business.updated();
        Ok(Json(item.into()))
    }

    /// Delete an item.
    #[oai(
        path = "/items/:id",
        method = "delete",
        operation_id = "deleteItem",
        transform = "inject_faults"
    )]
    async fn delete(&self, id: Path<i64>) -> ApiResult<Deleted> {
        if !self.store.delete(id.0).await.map_err(ApiError::from)? {
            return Err(ApiError::NotFound(id.0).into());
        }
        self.business.deleted();
        Ok(Deleted::NoContent)
    }
}
