//! `JsonBody<T>`: a JSON request body that is read within `BODY_LIMIT`, answers 400 when it is not
//! JSON at all and 422 listing every bad field when it is JSON of the wrong shape. poem-openapi's
//! own `Json<T>` stops at the first bad field with a 400, which tells a client too little.

use futures_util::StreamExt;
use poem::{Request, RequestBody};
use poem_openapi::{
    payload::{ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};
use serde_json::Value;

use super::{errors::ApiError, problem::FieldError};

/// Limits on reading a body, put in the request data by the app so payloads can read them.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub max_bytes: usize,
    /// The whole body must arrive within this, so a client trickling bytes cannot hold a
    /// connection and a task forever.
    pub read_timeout: std::time::Duration,
}

impl Default for BodyLimit {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            read_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// A request body type that validates itself from a parsed JSON value.
pub trait FromJsonBody: Sized + Send {
    /// The type whose schema documents this body in the OpenAPI spec.
    type Schema: Type;

    fn from_json(value: Value) -> Result<Self, Vec<FieldError>>;
}

pub struct JsonBody<T>(pub T);

impl<T: FromJsonBody> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        matches!(content_type.parse::<mime::Mime>(), Ok(mime)
            if mime.type_() == "application"
                && (mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json")))
    }

    fn schema_ref() -> MetaSchemaRef {
        T::Schema::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::Schema::register(registry);
    }
}

impl<T: FromJsonBody> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let limit = request.data::<BodyLimit>().copied().unwrap_or_default();
        let bytes = tokio::time::timeout(
            limit.read_timeout,
            read_limited(body.take()?, limit.max_bytes),
        )
        .await
        .map_err(|_| ApiError::BodyTimeout)??;
        if bytes.is_empty() {
            return Err(ApiError::BadRequest("the request body is empty".into()).into());
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|err| ApiError::BadRequest(format!("malformed JSON: {err}")))?;
        T::from_json(value)
            .map(JsonBody)
            .map_err(|errors| ApiError::Validation(errors).into())
    }
}

/// After the limit is passed, this much more is read and thrown away so that a client that sends
/// its whole body before reading the answer still sees the 413 rather than a reset connection.
const DRAIN_MAX: usize = 16 * 1024 * 1024;

async fn read_limited(body: poem::Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = std::pin::pin!(body.into_bytes_stream());
    let mut bytes = Vec::new();
    let mut drained = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::BadRequest("the request body could not be read".into()))?;
        if drained > 0 || bytes.len() + chunk.len() > limit {
            drained += chunk.len();
            if drained > DRAIN_MAX {
                break;
            }
        } else {
            bytes.extend_from_slice(&chunk);
        }
    }
    if drained > 0 {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(bytes)
}

poem_openapi::impl_apirequest_for_payload!(JsonBody<T>, T: FromJsonBody);
