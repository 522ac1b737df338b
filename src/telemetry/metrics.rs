//! The meter provider. Each `Application` builds its own (not the global one), so several apps
//! in one test process never share a counter, and `/metrics` shows exactly one app's numbers.

use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::{metrics::SdkMeterProvider, Resource};

use super::exposition::MetricsEndpoint;

pub struct Metrics {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    meter: Meter,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up metrics: {0}")]
pub struct MetricsError(String);

impl Metrics {
    pub fn new(resource: Resource) -> Result<Self, MetricsError> {
        let registry = prometheus::Registry::new();
        let prometheus_reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            // Scope labels would repeat the same two values on every series.
            .scope_info_enabled(false)
            .build()
            .map_err(|e| MetricsError(e.to_string()))?;
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(prometheus_reader)
            .build();
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
