//! Everything that makes the service observable lives here (docs/DESIGN.md §2, §6):
//! - `metrics`: the per-app meter provider, its Prometheus registry and OTLP reader;
//! - `http`: the one middleware that owns the server span, the HTTP metrics and the access log;
//! - `db`: the span and histogram around every statement;
//! - `business`: the typed item counters handlers bump;
//! - `process`: process and Tokio runtime gauges;
//! - `exposition`: `GET /metrics`;
//! - `resource`: who is reporting (`service.name`, `service.instance.id`, …);
//! - `init`: the process-wide subscriber, tracer and logger providers (installed by `main`).

pub mod business;
pub mod db;
pub mod exposition;
pub mod http;
pub mod init;
mod log_format;
pub mod metrics;
pub mod process;
pub mod resource;
pub mod span_pipeline;

use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace id of the current request, when it is being traced.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// How long one OTLP export may take before it is abandoned.
pub(crate) const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// An OTLP exporter (`SpanExporter`, `LogExporter`, `MetricExporter`) over the configured
/// protocol. A macro because the three builders share their method names but no trait.
macro_rules! otlp_exporter {
    ($exporter:ty, $protocol:expr, $endpoint:expr) => {{
        use opentelemetry_otlp::WithExportConfig;
        match $protocol {
            $crate::config::OtlpProtocol::Grpc => <$exporter>::builder()
                .with_tonic()
                .with_endpoint($endpoint)
                .with_timeout($crate::telemetry::EXPORT_TIMEOUT)
                .build(),
            $crate::config::OtlpProtocol::HttpProtobuf => <$exporter>::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint($endpoint)
                .with_timeout($crate::telemetry::EXPORT_TIMEOUT)
                .build(),
        }
    }};
}
pub(crate) use otlp_exporter;
