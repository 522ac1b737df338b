//! Everything that makes the service observable lives here (docs/DESIGN.md §2, §6). The front
//! door is `Telemetry::new`: startup calls it once and gets what the app needs.
//! - `http`: the one middleware that owns the server span, the HTTP metrics and the access log;
//!   `server_span` builds that span;
//! - `db`: the span and histogram around every statement, and the pool gauges;
//! - `business`: the typed item counters handlers bump;
//! - `process`: process and Tokio runtime gauges;
//! - `exposition`: the Prometheus text of `GET /metrics`;
//! - `metrics`: the per-app meter provider, its Prometheus registry and OTLP reader;
//! - `span_pipeline`: accounting for finished spans on their way out;
//! - `stdout`, `log_format`: the non-blocking stdout and its line formats;
//! - `resource`: who is reporting (`service.name`, `service.instance.id`, …);
//! - `init`: the process-wide subscriber, tracer and logger providers (installed by `main`).
//!
//! Telemetry depends on `config` only: nothing here knows the API or the store.

pub mod business;
pub mod db;
pub mod exposition;
pub mod http;
pub mod init;
mod log_format;
pub mod metrics;
pub mod process;
pub mod resource;
mod server_span;
pub mod span_pipeline;
mod stdout;

use std::time::Duration;

use opentelemetry::trace::TraceContextExt;

use crate::config::Config;
use business::BusinessMetrics;
use db::DbTelemetry;
use exposition::MetricsEndpoint;
use http::HttpTelemetry;
pub use metrics::MetricsError;

/// What the app needs from telemetry, built once per `Application`.
pub struct Telemetry {
    metrics: metrics::Metrics,
    /// The middleware: SERVER span, HTTP metrics, access log.
    pub http: HttpTelemetry,
    /// The item counters handlers bump.
    pub business: BusinessMetrics,
    /// `GET /metrics`.
    pub exposition: MetricsEndpoint,
    /// Wraps every statement the store runs.
    pub db: DbTelemetry,
}

impl Telemetry {
    /// The per-app meter provider with every instrument registered. `routes` maps poem's route
    /// patterns to their OpenAPI templates (`http.route`). Spans use the process-wide tracer
    /// that `init` installed, if any.
    pub fn new(config: &Config, routes: Vec<(String, String)>) -> Result<Self, MetricsError> {
        let metrics = metrics::Metrics::new(resource::build(), &config.otel)?;
        let meter = metrics.meter();
        let tracer = init::tracer();
        process::register_process_metrics(meter);
        process::register_runtime_metrics(meter, &tokio::runtime::Handle::current());
        span_pipeline::register_span_pipeline_metrics(meter);
        stdout::register_stdout_metrics(meter);
        Ok(Self {
            http: HttpTelemetry::new(
                meter,
                tracer.clone(),
                routes,
                config.metrics_exclude.clone(),
            ),
            business: BusinessMetrics::new(meter),
            exposition: metrics.endpoint(),
            db: DbTelemetry::new(meter, &config.database_url).with_tracer(tracer),
            metrics,
        })
    }

    /// Pushes what the OTLP metric reader has not sent yet and stops the readers.
    pub fn shutdown(&self) {
        self.metrics.shutdown();
    }
}

/// The W3C trace id of the request being served, when it is traced.
pub fn current_trace_id() -> Option<String> {
    let context = opentelemetry::Context::current();
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
