//! The error answers each operation documents: every status it can give besides success, all as
//! problem+json, with their headers. Handlers return `Result<Success, Failure<S>>`, where `S` lists
//! the statuses of that operation; the error itself is an `ApiError`, rendered by `errors.rs`.

use std::marker::PhantomData;

use poem_openapi::{
    registry::{MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, Registry},
    types::Type,
    ApiResponse,
};

use super::{errors::ApiError, problem::Problem};

/// The statuses of one operation's error answers.
pub trait Statuses: Send + Sync + 'static {
    const STATUSES: &'static [u16];
}

macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident = [$($status:literal),*];)*) => {
        $(
            $(#[$doc])*
            pub struct $name;
            impl Statuses for $name {
                const STATUSES: &'static [u16] = &[$($status),*];
            }
        )*
    };
}

statuses! {
    /// POST /items: a body to read (400, 408, 413, 415, 422).
    CreateErrors = [400, 408, 413, 415, 422, 500, 503];
    /// GET /items: unparsable (400) or out-of-range (422) paging, a bad cursor (422).
    ListErrors = [400, 422, 500, 503];
    /// GET and DELETE /items/{id}: an id that is not an int64 (400) or names no item (404).
    ItemErrors = [400, 404, 500, 503];
    /// PUT and PATCH /items/{id}: both of the above.
    ChangeErrors = [400, 404, 408, 413, 415, 422, 500, 503];
    /// /health/ready: the database does not answer (503).
    ReadyErrors = [500, 503];
    /// /health/live: only a failure of the process itself.
    LiveErrors = [500];
}

/// An `ApiError` answered by an operation that documents the statuses `S`.
pub struct Failure<S>(ApiError, PhantomData<S>);

impl<S> From<ApiError> for Failure<S> {
    fn from(err: ApiError) -> Self {
        Self(err, PhantomData)
    }
}

impl<S> From<Failure<S>> for poem::Error {
    fn from(failure: Failure<S>) -> Self {
        failure.0.into()
    }
}

/// `traceresponse` (W3C Trace Context Level 2): present on every answer of a traced request.
pub fn traceresponse_header() -> MetaHeader {
    MetaHeader {
        name: "traceresponse".into(),
        description: Some(
            "`00-<trace id>-<span id>-<flags>` of the request's server span, when it is traced."
                .into(),
        ),
        required: false,
        deprecated: false,
        schema: String::schema_ref(),
    }
}

fn describe(status: u16) -> &'static str {
    match status {
        400 => "The request cannot be read: a malformed or empty body, or a parameter of the wrong type.",
        404 => "No item has this id.",
        408 => "The body did not arrive within BODY_READ_TIMEOUT.",
        413 => "The body is larger than BODY_LIMIT.",
        415 => "The body is not JSON (`Content-Type` must be application/json or `+json`).",
        422 => "Fields or parameters break the rules; `errors` lists every one.",
        503 => "The database is unavailable; retry after `Retry-After` seconds.",
        _ => "An internal error; `trace_id` finds its trace and logs.",
    }
}

impl<S: Statuses> ApiResponse for Failure<S> {
    fn meta() -> MetaResponses {
        let responses = S::STATUSES
            .iter()
            .map(|&status| {
                let mut headers = vec![traceresponse_header()];
                if status == 503 {
                    headers.push(MetaHeader {
                        name: "Retry-After".into(),
                        description: Some("Seconds to wait before retrying.".into()),
                        required: true,
                        deprecated: false,
                        schema: poem_openapi::registry::MetaSchemaRef::Inline(Box::new(
                            MetaSchema {
                                pattern: Some("^[0-9]+$".into()),
                                ..MetaSchema::new("string")
                            },
                        )),
                    });
                }
                MetaResponse {
                    description: describe(status),
                    status: Some(status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: super::problem::CONTENT_TYPE,
                        schema: Problem::schema_ref(),
                    }],
                    headers,
                }
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}
