//! The process-wide half of telemetry, installed once by `main`: the `tracing` subscriber for log
//! events (stdout in text or JSON, and OTLP log records through opentelemetry-appender-tracing),
//! the tracer provider whose tracer the HTTP middleware and the store use directly, and the
//! propagator.
//!
//! `RUST_LOG` filters log events only. Spans are not `tracing` spans: the sampler alone decides
//! them, so raising the log level to `warn` keeps every trace, `traceresponse` and problem
//! `trace_id`.
//!
//! Failure isolation: both providers use the SDK's batch processors, which run exports on their
//! own threads with bounded queues (2048 spans, 2048 log records; the rest are dropped, and
//! dropped spans are counted on `/metrics`), so a slow or dead backend never blocks a request.

use std::sync::OnceLock;

use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::{LogExporter, SpanExporter};
use opentelemetry_sdk::{
    logs::SdkLoggerProvider,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracer, SdkTracerProvider},
    Resource,
};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::{
    filter::{filter_fn, FilterExt},
    fmt,
    layer::SubscriberExt,
    util::SubscriberInitExt,
    EnvFilter, Layer,
};

use super::{
    log_format::{JsonWithTraceIds, TextWithTraceIds},
    otlp_exporter,
    span_pipeline::BoundedSpanProcessor,
    stdout::{self, LineSafe},
};
use crate::config::{Config, LogFormat, OtelConfig, SamplerKind, Signal, SignalExporter};

/// Spans that may wait for export; past it they are dropped and counted.
const SPAN_QUEUE: usize = 2048;

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
    /// Writes out the stdout lines still buffered.
    _stdout: WorkerGuard,
}

/// The process's tracer, once `init` has installed one.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The tracer spans are made with; None when spans are off (`OTEL_TRACES_EXPORTER=none`,
/// `OTEL_SDK_DISABLED=true`) or nothing installed one (in-process tests).
pub fn tracer() -> Option<SdkTracer> {
    TRACER.get().cloned()
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
    global::set_text_map_propagator(TraceContextPropagator::new());

    // `OTEL_TRACES_EXPORTER=none` means no spans at all, and answers carry no trace ids.
    let tracer_provider = (!otel.sdk_disabled && otel.traces_exporter != SignalExporter::None)
        .then(|| tracer_provider(otel, resource.clone()))
        .transpose()?;
    if let Some(provider) = &tracer_provider {
        let _ = TRACER.set(provider.tracer("items-api"));
    }
    let logger_provider = (!otel.sdk_disabled)
        .then(|| logger_provider(otel, resource))
        .transpose()?
        .flatten();

    // The filter was checked when the config was parsed. Each log layer gets its own copy: as a
    // global filter it would also govern what the other layers see.
    let log_filter =
        || EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let events = || filter_fn(|meta| meta.is_event());
    let (writer, stdout_guard) = stdout::non_blocking();
    let stdout = match config.log_format {
        LogFormat::Text => fmt::layer()
            .event_format(TextWithTraceIds(fmt::format().with_target(true)))
            .with_writer(LineSafe(writer))
            .with_filter(events().and(log_filter()))
            .boxed(),
        LogFormat::Json => fmt::layer()
            .event_format(JsonWithTraceIds)
            .with_writer(writer)
            .with_filter(events().and(log_filter()))
            .boxed(),
    };
    // The exporters' own crates log through `tracing` too; feeding those records back into the
    // OTLP log pipeline would loop, so they stay on stdout only.
    let logs = logger_provider.as_ref().map(|provider| {
        let not_exporters = filter_fn(|meta| {
            !["opentelemetry", "hyper", "h2", "tonic", "reqwest", "tower"]
                .iter()
                .any(|prefix| meta.target().starts_with(prefix))
        });
        OpenTelemetryTracingBridge::new(provider)
            .with_filter(events().and(not_exporters).and(log_filter()))
    });
    tracing_subscriber::registry()
        .with(stdout)
        .with(logs)
        .init();

    Ok(TelemetryGuard {
        tracer_provider,
        logger_provider,
        _stdout: stdout_guard,
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
            let exporter =
                otlp_exporter!(SpanExporter, otel.otlp_protocol, endpoint).map_err(|e| {
                    InitError {
                        signal: "trace",
                        message: e.to_string(),
                    }
                })?;
            builder = builder.with_span_processor(BoundedSpanProcessor::new(exporter, SPAN_QUEUE));
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
            let exporter =
                otlp_exporter!(LogExporter, otel.otlp_protocol, endpoint).map_err(|e| {
                    InitError {
                        signal: "log",
                        message: e.to_string(),
                    }
                })?;
            builder.with_batch_exporter(exporter).build()
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
