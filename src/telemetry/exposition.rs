//! `GET /metrics`: the Prometheus text format, rendered from the OTel meter provider's registry.

use poem::{http::StatusCode, Endpoint, Request, Response};
use prometheus::{Encoder, TextEncoder};

/// Serves one registry. Each app has its own, so parallel test apps never share series.
/// Access control (`METRICS_BEARER_TOKEN`) is the API's business: `api::metrics_auth`.
#[derive(Clone)]
pub struct MetricsEndpoint {
    registry: prometheus::Registry,
}

impl MetricsEndpoint {
    pub fn new(registry: prometheus::Registry) -> Self {
        Self { registry }
    }

    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut buffer = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(buffer)
    }
}

impl Endpoint for MetricsEndpoint {
    type Output = Response;

    async fn call(&self, _req: Request) -> poem::Result<Response> {
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
