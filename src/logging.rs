//! The process-wide `tracing` subscriber: stdout in text or JSON. Installed once by `main`;
//! tests that run apps in-process do not install it.

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use crate::config::{Config, LogFormat};

pub fn init(config: &Config) {
    // The filter was checked when the config was parsed.
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let stdout = match config.log_format {
        LogFormat::Text => fmt::layer().with_target(true).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stdout)
        .init();
}
