//! `items-api`: parse the configuration, start telemetry, serve until SIGINT or SIGTERM.

use std::process::ExitCode;

/// Telemetry allocates a little on every request (span data, log records, export batches);
/// mimalloc serves those small, short-lived allocations much faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{error::ErrorKind, Parser};
use items_api::{
    telemetry::{init, resource},
    Application, Config,
};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // clap explains over several lines; an operator wants the one that matters.
            let text = err.to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid configuration");
            eprintln!("items-api: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let telemetry = match init::init(&config, resource::build()) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("items-api: {err}");
            return ExitCode::from(1);
        }
    };

    let app = match Application::build(config.clone()).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("items-api: {err}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        port = app.port(),
        metrics_port = app.metrics_port(),
        "items-api listening on {}",
        config.listen_addr
    );
    let result = app.run_until_stopped(shutdown_signal()).await;
    if result.is_ok() {
        // Logged before the flush below, which also closes stdout's writer.
        tracing::info!("items-api stopped");
    }
    // Flushing blocks until the last batches are exported (or time out); keep it off the
    // runtime's workers, which the gRPC exporter needs to make progress.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("items-api: server error: {err}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
