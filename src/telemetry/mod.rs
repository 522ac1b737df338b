//! Everything that makes the service observable lives here (docs/DESIGN.md §2, §6):
//! - `metrics`: the per-app meter provider, its Prometheus registry and OTLP reader;
//! - `http`: the one middleware that owns the server span, the HTTP metrics and the access log;
//! - `db`: the span and histogram around every statement;
//! - `business`: the typed item counters handlers bump;
//! - `process`: process and Tokio runtime gauges;
//! - `exposition`: `GET /metrics`;
//! - `resource`: who is reporting (`service.name`, `service.instance.id`, …);
//! - `otlp`: the OTLP exporters, their TLS, headers, compression and batching, the propagator;
//! - `init`: the process-wide subscriber, tracer and logger providers (installed by `main`).

pub mod business;
pub mod db;
pub mod exposition;
pub mod http;
pub mod init;
mod log_format;
pub mod metrics;
pub mod otlp;
pub mod process;
pub mod resource;
pub mod span_pipeline;

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
