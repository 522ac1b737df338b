//! How failures become answers. Handlers return `ApiError`; every other error poem or
//! poem-openapi raises (unknown route, bad method, unparsable parameter, wrong content type)
//! is turned into the same problem+json shape by `into_problem`, so no error leaves without it.

use poem::{http::StatusCode, Response};

use super::problem::{FieldError, Problem};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("item {0} not found")]
    NotFound(i64),
    #[error("{} invalid field(s)", .0.len())]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("the database is unavailable, try again later")]
    Unavailable,
    #[error("internal error")]
    Internal,
    #[error("injected fault (FAULT_ERROR_RATIO)")]
    InjectedFault,
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal | ApiError::InjectedFault => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn as_response(&self) -> Response {
        let problem = Problem::new(self.status(), self.to_string());
        let mut response = match self {
            ApiError::Validation(errors) => problem
                .with_type("urn:items-api:problem:validation")
                .with_errors(errors.clone()),
            _ => problem,
        }
        .into_response();
        if matches!(self, ApiError::Unavailable) {
            response.headers_mut().insert(
                poem::http::header::RETRY_AFTER,
                poem::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable
            }
            StoreError::Other(e) => {
                tracing::error!(error = %e, "database error");
                ApiError::Internal
            }
        }
    }
}

/// The answer to a request whose handler panicked: a 500 like any other, the panic logged.
/// The task that panicked is gone; the process and its other connections go on serving.
pub fn answer_panic(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned());
    tracing::error!(panic = %message, "a handler panicked");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

/// Longest `detail` we echo from a framework error; it may quote a header the client sent.
const MAX_DETAIL: usize = 200;

/// Renders any error as problem+json. Framework errors keep their status (400, 404, 405, 415…);
/// their text is shown for 4xx only, so a 5xx never reveals internals.
pub async fn into_problem(err: poem::Error) -> Response {
    // The matched route rides on the error; the HTTP middleware needs it on the response.
    let pattern = err.data::<poem::PathPattern>().cloned();
    let mut response = problem_for(err);
    if let Some(pattern) = pattern {
        response.set_data(pattern);
    }
    response
}

fn problem_for(err: poem::Error) -> Response {
    if err.is::<ApiError>() {
        return err.into_response();
    }
    let status = err.status();
    let detail = if status.is_server_error() {
        tracing::error!(error = %err, "unhandled error");
        "internal error".to_owned()
    } else if err.is::<poem::error::NotFoundError>() {
        "no such resource".to_owned()
    } else {
        let mut text = err.to_string();
        if text.len() > MAX_DETAIL {
            let mut cut = MAX_DETAIL;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        // poem-openapi names path parameters by position; our only one is the item id.
        text.replace("path `param0`", "path parameter `id`")
    };
    Problem::new(status, detail).into_response()
}
