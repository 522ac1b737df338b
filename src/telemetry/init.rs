//! The process-wide half of telemetry, installed once by `main`: the `tracing` subscriber
//! (stdout in text or JSON), the tracer provider bridged by tracing-opentelemetry, the logger
//! provider bridged by opentelemetry-appender-tracing, and the W3C propagator. `tracing` is the
//! only API the code uses; these layers turn it into OTel spans and log records.
//!
//! Failure isolation: both providers use the SDK's batch processors, which run exports on their
//! own threads with bounded queues (2048 spans, 2048 log records; the rest are dropped, and
//! dropped spans are counted on `/metrics`), so a slow or dead backend never blocks a request.

use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::{
    logs::SdkLoggerProvider,
    trace::{Sampler, SdkTracerProvider},
    Resource,
};
use tracing_subscriber::{
    filter::filter_fn, fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer,
};

use super::{
    log_format::{JsonWithTraceIds, LineSafeStdout},
    otlp,
};
use crate::config::{Config, LogFormat, OtelConfig, SamplerKind, Signal, SignalExporter};

#[derive(Debug, thiserror::Error)]
#[error("cannot set up {signal} export: {message}")]
pub struct InitError {
    signal: &'static str,
    message: String,
}

/// Flushes and stops the providers when dropped: the spans and logs of the last requests
/// before SIGTERM are exported before the process exits.
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    logger_provider: Option<SdkLoggerProvider>,
}

impl TelemetryGuard {
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            let _ = provider.shutdown();
        }
        if let Some(provider) = self.logger_provider.take() {
            let _ = provider.shutdown();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Installs the global subscriber and providers. Call once, inside the Tokio runtime (the gRPC
/// exporter binds to it).
pub fn init(config: &Config, resource: Resource) -> Result<TelemetryGuard, InitError> {
    let otel = &config.otel;
    global::set_text_map_propagator(otlp::propagator(otel.propagators));

    // `OTEL_TRACES_EXPORTER=none` means no spans at all: with no layer wanting them, the
    // `tracing` span macros short-circuit and requests carry no trace ids.
    let tracer_provider = (!otel.sdk_disabled && otel.traces_exporter != SignalExporter::None)
        .then(|| tracer_provider(otel, resource.clone()))
        .transpose()?;
    let logger_provider = (!otel.sdk_disabled)
        .then(|| logger_provider(otel, resource))
        .transpose()?
        .flatten();

    // The filter was checked when the config was parsed.
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Stdout shows events only: the access event carries what a span prefix would, and a span
    // nobody else wants then costs nothing.
    let stdout = match config.log_format {
        LogFormat::Text => fmt::layer()
            .with_target(true)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_writer(LineSafeStdout)
            .with_filter(filter_fn(|meta| meta.is_event()))
            .boxed(),
        LogFormat::Json => fmt::layer()
            .event_format(JsonWithTraceIds)
            .with_filter(filter_fn(|meta| meta.is_event()))
            .boxed(),
    };
    let spans = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("items-api"))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            // Events travel as OTLP log records (below); as span events they would be sent twice.
            .with_filter(filter_fn(|meta| meta.is_span()))
    });
    // The exporters' own crates log through `tracing` too; feeding those records back into the
    // OTLP log pipeline would loop, so they stay on stdout only.
    let logs = logger_provider.as_ref().map(|provider| {
        OpenTelemetryTracingBridge::new(provider).with_filter(filter_fn(|meta| {
            !["opentelemetry", "hyper", "h2", "tonic", "reqwest", "tower"]
                .iter()
                .any(|prefix| meta.target().starts_with(prefix))
        }))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(otlp::quiet_sdk_export_errors())
        .with(stdout)
        .with(spans)
        .with(logs)
        .init();

    Ok(TelemetryGuard {
        tracer_provider,
        logger_provider,
    })
}

/// Always a provider (so trace ids exist for logs, headers and error bodies); an exporter only
/// when one is configured.
fn tracer_provider(otel: &OtelConfig, resource: Resource) -> Result<SdkTracerProvider, InitError> {
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler(otel));
    match (otel.traces_exporter, otel.endpoint(Signal::Traces)) {
        (SignalExporter::Otlp, Some(endpoint)) => {
            let processor = otlp::span_processor(otel, endpoint).map_err(|e| InitError {
                signal: "trace",
                message: e.to_string(),
            })?;
            builder = builder.with_span_processor(processor);
        }
        (SignalExporter::Console, _) => {
            builder = builder.with_simple_exporter(opentelemetry_stdout::SpanExporter::default());
        }
        _ => {}
    }
    Ok(builder.build())
}

/// A provider only when logs go somewhere besides stdout.
fn logger_provider(
    otel: &OtelConfig,
    resource: Resource,
) -> Result<Option<SdkLoggerProvider>, InitError> {
    let builder = SdkLoggerProvider::builder().with_resource(resource);
    let provider = match (otel.logs_exporter, otel.endpoint(Signal::Logs)) {
        (SignalExporter::Otlp, Some(endpoint)) => {
            let processor = otlp::log_processor(otel, endpoint).map_err(|e| InitError {
                signal: "log",
                message: e.to_string(),
            })?;
            builder.with_log_processor(processor).build()
        }
        (SignalExporter::Console, _) => builder
            .with_simple_exporter(opentelemetry_stdout::LogExporter::default())
            .build(),
        _ => return Ok(None),
    };
    Ok(Some(provider))
}

fn sampler(otel: &OtelConfig) -> Sampler {
    let ratio = otel.traces_sampler_arg.unwrap_or(1.0);
    match otel.traces_sampler {
        SamplerKind::AlwaysOn => Sampler::AlwaysOn,
        SamplerKind::AlwaysOff => Sampler::AlwaysOff,
        SamplerKind::Traceidratio => Sampler::TraceIdRatioBased(ratio),
        SamplerKind::ParentbasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerKind::ParentbasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerKind::ParentbasedTraceidratio => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}
