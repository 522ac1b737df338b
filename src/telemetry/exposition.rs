//! `GET /metrics`: the Prometheus text format, rendered from the OTel meter provider's registry.

use poem::{http::StatusCode, Endpoint, Request, Response};
use prometheus::{Encoder, TextEncoder};

/// Serves one registry. Each app has its own, so parallel test apps never share series.
#[derive(Clone)]
pub struct MetricsEndpoint {
    registry: prometheus::Registry,
    /// `Bearer <token>`, when `/metrics` is protected.
    expected_authorization: Option<Vec<u8>>,
}

impl MetricsEndpoint {
    pub fn new(registry: prometheus::Registry) -> Self {
        Self {
            registry,
            expected_authorization: None,
        }
    }

    pub fn with_bearer_token(mut self, token: Option<&str>) -> Self {
        self.expected_authorization = token.map(|t| format!("Bearer {t}").into_bytes());
        self
    }

    fn authorized(&self, req: &Request) -> bool {
        let Some(expected) = &self.expected_authorization else {
            return true;
        };
        let given = req
            .headers()
            .get(poem::http::header::AUTHORIZATION)
            .map_or(&[][..], |v| v.as_bytes());
        constant_time_eq(given, expected)
    }

    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut buffer = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(buffer)
    }
}

impl Endpoint for MetricsEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if !self.authorized(&req) {
            let mut response = crate::api::problem::Problem::new(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required for /metrics",
            )
            .into_response();
            response.headers_mut().insert(
                poem::http::header::WWW_AUTHENTICATE,
                poem::http::HeaderValue::from_static("Bearer"),
            );
            return Ok(response);
        }
        match self.render() {
            Ok(body) => Ok(Response::builder()
                .content_type(prometheus::TEXT_FORMAT)
                .body(body)),
            Err(err) => {
                tracing::error!(error = %err, "rendering /metrics failed");
                Ok(Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .body("metrics unavailable"))
            }
        }
    }
}

/// Compares without an early exit, so response timing does not reveal how much of a guess was
/// right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!constant_time_eq(b"", b"Bearer abc"));
    }
}
