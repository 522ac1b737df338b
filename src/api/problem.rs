//! RFC 9457 problem details: the one shape every error answer has.

use poem::{http::StatusCode, Response};
use poem_openapi::Object;
use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One invalid field of a request body or query (422 answers list every one).
#[derive(Debug, Clone, PartialEq, Serialize, Object)]
pub struct FieldError {
    /// The field's name as the client sent it (`price`, `limit`).
    pub field: String,
    /// What is wrong with it, in words a client developer can act on.
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Object)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Every invalid field or parameter (422 answers only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[oai(skip_serializing_if_is_empty, default)]
    pub errors: Vec<FieldError>,
    /// The W3C trace id of the request, to find its trace and logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            trace_id: crate::telemetry::current_trace_id(),
        }
    }

    pub fn with_type(mut self, kind: &str) -> Self {
        self.kind = kind.into();
        self
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Serializing plain strings and numbers cannot fail.
        let body = serde_json::to_vec(&self).unwrap_or_default();
        Response::builder()
            .status(status)
            .content_type(CONTENT_TYPE)
            .body(body)
    }
}
