//! The OTel resource: who is reporting. Defaults first, then `OTEL_RESOURCE_ATTRIBUTES`, then
//! `OTEL_SERVICE_NAME`, so the standard variables always win.

use opentelemetry::KeyValue;
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::Resource;

pub const DEFAULT_SERVICE_NAME: &str = "items-api";

/// Unique per process, so replicas behind one DNS name stay apart, and the same for every
/// signal of this process, so its metrics, traces and logs name one instance.
fn instance_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().to_string()).clone()
}

pub fn build() -> Resource {
    let mut builder = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes([
            KeyValue::new("service.name", DEFAULT_SERVICE_NAME),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance_id()),
            KeyValue::new("deployment.environment.name", "development"),
        ])
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
    {
        builder = builder.with_service_name(name);
    }
    builder.build()
}
