//! `/items`: the CRUD handlers. They validate, call the store, and bump a business counter after
//! success; HTTP metrics and spans are the middleware's job, not theirs.

use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    ApiResponse, OpenApi, Tags,
};

use super::{
    answers::{ChangeErrors, CreateErrors, Failure, ItemErrors, ListErrors},
    errors::ApiError,
    fault::inject as inject_faults,
    model::{self, Cursor, Item, ItemList},
    payload::JsonBody,
    schema::{CursorText, ItemId, Limit, Offset},
};
use crate::store::{ItemChanges, ItemStore, NewItem, PageRequest};
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
#[oai(header(
    name = "traceresponse",
    ty = "Option<String>",
    description = "`00-<trace id>-<span id>-<flags>` of the request's server span, when it is traced."
))]
enum Created {
    /// The item was created; `Location` names it.
    #[oai(status = 201)]
    Created(
        Json<Item>,
        /// The path of the new item.
        #[oai(header = "Location")]
        String,
    ),
}

#[derive(ApiResponse)]
#[oai(header(
    name = "traceresponse",
    ty = "Option<String>",
    description = "`00-<trace id>-<span id>-<flags>` of the request's server span, when it is traced."
))]
enum Listed {
    /// A page of items.
    #[oai(status = 200)]
    Page(
        Json<ItemList>,
        /// `<…>; rel="next"`: the next page, when there is one (RFC 8288).
        #[oai(header = "Link")]
        Option<String>,
    ),
}

#[derive(ApiResponse)]
#[oai(header(
    name = "traceresponse",
    ty = "Option<String>",
    description = "`00-<trace id>-<span id>-<flags>` of the request's server span, when it is traced."
))]
enum Found {
    /// The item.
    #[oai(status = 200)]
    Item(Json<Item>),
}

#[derive(ApiResponse)]
#[oai(header(
    name = "traceresponse",
    ty = "Option<String>",
    description = "`00-<trace id>-<span id>-<flags>` of the request's server span, when it is traced."
))]
enum Deleted {
    /// The item was deleted.
    #[oai(status = 204)]
    NoContent,
}

type Answer<T, E> = Result<T, Failure<E>>;

/// The id as the store knows it; one outside the documented range just finds no item (404).
fn item_id(id: &ItemId) -> i64 {
    id.0
}

#[OpenApi(tag = "ApiTags::Items")]
impl ItemsApi {
    /// Create an item.
    #[oai(
        path = "/items",
        method = "post",
        operation_id = "createItem",
        transform = "inject_faults"
    )]
    async fn create(&self, body: JsonBody<NewItem>) -> Answer<Created, CreateErrors> {
        let item = self.store.create(body.0).await.map_err(ApiError::from)?;
        self.business.created();
        let location = format!("/items/{}", item.id);
        Ok(Created::Created(Json(item.into()), location))
    }

    /// List items, oldest first. Follow `next` (or the `Link` header) to page through every
    /// item at a constant cost per page; `offset` still works, at a cost that grows with it.
    #[oai(
        path = "/items",
        method = "get",
        operation_id = "listItems",
        transform = "inject_faults"
    )]
    async fn list(
        &self,
        /// Page size, 1 to 100 (default 20).
        limit: Query<Option<Limit>>,
        /// Items to skip (default 0), counted after `cursor` when both are given.
        offset: Query<Option<Offset>>,
        /// Where to continue: the `next_cursor` of the previous page.
        cursor: Query<Option<CursorText>>,
        /// Also count every stored item into `total` (reads the whole table; default false).
        count: Query<Option<bool>>,
    ) -> Answer<Listed, ListErrors> {
        let paging = model::paging(
            limit.0.map(|l| l.0),
            offset.0.map(|o| o.0),
            cursor.0.as_ref().map(|c| c.0.as_str()),
        )
        .map_err(ApiError::Validation)?;
        // paging() bounds limit and offset to non-negative values.
        let page = self
            .store
            .list(PageRequest {
                limit: paging.limit.unsigned_abs(),
                offset: paging.offset.unsigned_abs(),
                after: paging.after.map(|c| c.0),
                count: count.0.unwrap_or(false),
            })
            .await
            .map_err(ApiError::from)?;
        self.business.read(page.items.len() as u64);
        let next_cursor = match page.items.last() {
            Some(last) if page.more => Some(Cursor(last.id).encode()),
            _ => None,
        };
        let next = next_cursor
            .as_ref()
            .map(|c| format!("/items?limit={}&cursor={c}", paging.limit));
        let link = next.as_ref().map(|url| format!("<{url}>; rel=\"next\""));
        Ok(Listed::Page(
            Json(ItemList {
                items: page.items.into_iter().map(Item::from).collect(),
                total: page.total,
                limit: paging.limit,
                offset: paging.offset,
                next,
                next_cursor,
            }),
            link,
        ))
    }

    /// Get one item.
    #[oai(
        path = "/items/:id",
        method = "get",
        operation_id = "getItem",
        transform = "inject_faults"
    )]
    async fn get(&self, id: Path<ItemId>) -> Answer<Found, ItemErrors> {
        let id = item_id(&id.0);
        let item = self.store.get(id).await.map_err(ApiError::from)?;
        let item = item.ok_or(ApiError::NotFound(id))?;
        self.business.read(1);
        Ok(Found::Item(Json(item.into())))
    }

    /// Replace an item: every writable field is set (omitted `quantity` becomes 0).
    #[oai(
        path = "/items/:id",
        method = "put",
        operation_id = "replaceItem",
        transform = "inject_faults"
    )]
    async fn replace(
        &self,
        id: Path<ItemId>,
        body: JsonBody<NewItem>,
    ) -> Answer<Found, ChangeErrors> {
        let id = item_id(&id.0);
        let item = self
            .store
            .replace(id, body.0)
            .await
            .map_err(ApiError::from)?;
        let item = item.ok_or(ApiError::NotFound(id))?;
        self.business.updated();
        Ok(Found::Item(Json(item.into())))
    }

    /// Change some fields of an item.
    #[oai(
        path = "/items/:id",
        method = "patch",
        operation_id = "updateItem",
        transform = "inject_faults"
    )]
    async fn update(
        &self,
        id: Path<ItemId>,
        body: JsonBody<ItemChanges>,
    ) -> Answer<Found, ChangeErrors> {
        let id = item_id(&id.0);
        let item = self
            .store
            .update(id, body.0)
            .await
            .map_err(ApiError::from)?;
        let item = item.ok_or(ApiError::NotFound(id))?;
        self.business.updated();
        Ok(Found::Item(Json(item.into())))
    }

    /// Delete an item.
    #[oai(
        path = "/items/:id",
        method = "delete",
        operation_id = "deleteItem",
        transform = "inject_faults"
    )]
    async fn delete(&self, id: Path<ItemId>) -> Answer<Deleted, ItemErrors> {
        let id = item_id(&id.0);
        if !self.store.delete(id).await.map_err(ApiError::from)? {
            return Err(ApiError::NotFound(id).into());
        }
        self.business.deleted();
        Ok(Deleted::NoContent)
    }
}
