//! `METRICS_BEARER_TOKEN`: when set, `/metrics` answers 401 problem+json unless the request
//! carries `Authorization: Bearer <token>`. Telemetry renders the text; who may read it is
//! decided here, with the API's error shape.

use poem::{
    http::{header, HeaderValue, StatusCode},
    Endpoint, IntoResponse, Request, Response,
};

use super::problem::Problem;

/// The `/metrics` endpoint behind an optional bearer token.
pub struct BearerGuarded<E> {
    inner: E,
    /// `Bearer <token>`; None leaves `/metrics` open.
    expected: Option<Vec<u8>>,
}

impl<E> BearerGuarded<E> {
    pub fn new(inner: E, token: Option<&str>) -> Self {
        Self {
            inner,
            expected: token.map(|t| format!("Bearer {t}").into_bytes()),
        }
    }
}

impl<E: Endpoint> Endpoint for BearerGuarded<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if let Some(expected) = &self.expected {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .map_or(&[][..], |v| v.as_bytes());
            if !constant_time_eq(given, expected) {
                let mut response = Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "a valid bearer token is required for /metrics",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return Ok(response);
            }
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
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
