//! The meter provider. Each `Application` builds its own (not the global one), so several apps
//! in one test process never share a counter, and `/metrics` shows exactly one app's numbers.

use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::{metrics::SdkMeterProvider, Resource};

use super::{exposition::MetricsEndpoint, otlp};
use crate::config::{OtelConfig, Signal};

pub struct Metrics {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    meter: Meter,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up metrics: {0}")]
pub struct MetricsError(String);

impl Metrics {
    /// A provider with the readers `OTEL_METRICS_EXPORTER` asks for. With `OTEL_SDK_DISABLED`
    /// it has none, so instruments cost nothing and `/metrics` is empty.
    pub fn new(resource: Resource, otel: &OtelConfig) -> Result<Self, MetricsError> {
        let registry = prometheus::Registry::new();
        let mut builder = SdkMeterProvider::builder().with_resource(resource);
        let exporters = otel.metrics_exporter;
        if !otel.sdk_disabled && exporters.prometheus {
            let reader = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                // Scope labels would repeat the same two values on every series.
                .scope_info_enabled(false)
                .build()
                .map_err(|e| MetricsError(e.to_string()))?;
            builder = builder.with_reader(reader);
        }
        if !otel.sdk_disabled && exporters.otlp {
            let endpoint = otel.endpoint(Signal::Metrics).ok_or_else(|| {
                MetricsError(
                    "OTEL_METRICS_EXPORTER=otlp needs OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
                        .into(),
                )
            })?;
            let reader =
                otlp::metric_reader(otel, endpoint).map_err(|e| MetricsError(e.to_string()))?;
            builder = builder.with_reader(reader);
        }
        let provider = builder.build();
        let meter = provider.meter("items-api");
        Ok(Self {
            provider,
            registry,
            meter,
        })
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    pub fn endpoint(&self) -> MetricsEndpoint {
        MetricsEndpoint::new(self.registry.clone())
    }

    /// Pushes what the OTLP reader has not sent yet and stops the readers.
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::debug!(error = %err, "meter provider shutdown");
        }
    }
}
