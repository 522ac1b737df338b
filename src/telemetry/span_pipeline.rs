//! Accounting for finished spans on their way out, so a dead or slow tracing backend shows up on
//! `/metrics` instead of only in a log line at shutdown.
//!
//! `BoundedSpanProcessor` caps the spans waiting for export (queued or in an export under way)
//! and counts what it has to drop; `CountingExporter` counts what was exported or failed. The
//! SDK's batch processor behind them keeps a private drop count, so the cap lives here, set to the
//! batch queue's own size: the batch queue itself never overflows.

use std::{
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use opentelemetry::{metrics::Meter, Context, KeyValue};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor},
    Resource,
};

/// Process-wide: there is one tracer provider per process.
static STATS: SpanStats = SpanStats {
    accepted: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    exported: AtomicU64::new(0),
    failed: AtomicU64::new(0),
};

struct SpanStats {
    accepted: AtomicU64,
    dropped: AtomicU64,
    exported: AtomicU64,
    failed: AtomicU64,
}

impl SpanStats {
    fn outstanding(&self) -> u64 {
        let done = self.exported.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed);
        self.accepted.load(Ordering::Relaxed).saturating_sub(done)
    }
}

/// How spans are batched (`OTEL_BSP_*`). The export timeout is the exporter's own, since the
/// SDK's thread-based batch processor ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanBatching {
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub scheduled_delay: Duration,
}

/// The SDK batch processor behind a cap on spans waiting for export.
#[derive(Debug)]
pub struct BoundedSpanProcessor {
    inner: BatchSpanProcessor,
    capacity: u64,
}

impl BoundedSpanProcessor {
    /// The cap is the configured queue size, so `OTEL_BSP_MAX_QUEUE_SIZE` governs both.
    pub fn new<E: SpanExporter + 'static>(exporter: E, batching: SpanBatching) -> Self {
        let config = opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_max_queue_size(batching.max_queue_size)
            .with_max_export_batch_size(batching.max_export_batch_size)
            .with_scheduled_delay(batching.scheduled_delay)
            .build();
        Self {
            inner: BatchSpanProcessor::builder(CountingExporter(exporter))
                .with_batch_config(config)
                .build(),
            capacity: batching.max_queue_size as u64,
        }
    }
}

impl SpanProcessor for BoundedSpanProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if STATS.outstanding() >= self.capacity {
            STATS.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        STATS.accepted.fetch_add(1, Ordering::Relaxed);
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[derive(Debug)]
struct CountingExporter<E>(E);

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let spans = batch.len() as u64;
        let export = self.0.export(batch);
        async move {
            let result = export.await;
            let counter = if result.is_ok() {
                &STATS.exported
            } else {
                &STATS.failed
            };
            counter.fetch_add(spans, Ordering::Relaxed);
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// `otel.sdk.processor.span.processed` and `otel.sdk.exporter.span.exported` (OTel SDK
/// self-observability names), `error.type` marking drops and failed exports.
pub fn register_span_pipeline_metrics(meter: &Meter) {
    meter
        .u64_observable_counter("otel.sdk.processor.span.processed")
        .with_unit("{span}")
        .with_description(
            "Finished spans taken for export, and those dropped because the queue was full",
        )
        .with_callback(|counter| {
            counter.observe(STATS.accepted.load(Ordering::Relaxed), &[]);
            counter.observe(
                STATS.dropped.load(Ordering::Relaxed),
                &[KeyValue::new("error.type", "queue_full")],
            );
        })
        .build();
    meter
        .u64_observable_counter("otel.sdk.exporter.span.exported")
        .with_unit("{span}")
        .with_description(
            "Spans the exporter delivered, and those whose export failed or timed out",
        )
        .with_callback(|counter| {
            counter.observe(STATS.exported.load(Ordering::Relaxed), &[]);
            counter.observe(
                STATS.failed.load(Ordering::Relaxed),
                &[KeyValue::new("error.type", "export_failed")],
            );
        })
        .build();
}
