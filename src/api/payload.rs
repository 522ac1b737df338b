//! `JsonBody<T>`: a JSON request body that is read within `BODY_LIMIT`, answers 400 when it is not
//! JSON at all and 422 listing every bad field when it is JSON of the wrong shape. poem-openapi's
//! own `Json<T>` stops at the first bad field with a 400, which tells a client too little.

use poem::{Request, RequestBody};
use poem_openapi::{
    payload::{ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};
use serde_json::Value;

use super::{errors::ApiError, problem::FieldError};

/// The body size limit, put in the request data by the app so payloads can read it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

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
        let limit = request
            .data::<BodyLimit>()
            .map_or(1024 * 1024, |limit| limit.0);
        let bytes = body
            .take()?
            .into_bytes_limit(limit)
            .await
            .map_err(|err| match err {
                poem::error::ReadBodyError::PayloadTooLarge => ApiError::PayloadTooLarge(limit),
                _ => ApiError::BadRequest("the request body could not be read".into()),
            })?;
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

poem_openapi::impl_apirequest_for_payload!(JsonBody<T>, T: FromJsonBody);
