//! `items-api`: parse the configuration, start telemetry, serve until SIGINT or SIGTERM.
//! `items-api migrate` applies the migrations and exits; `items-api healthcheck` asks the
//! running instance whether it is ready (the image has no shell or HTTP client for that).

use std::{net::SocketAddr, process::ExitCode, time::Duration};

/// Telemetry allocates a little on every request (span data, log records, export batches);
/// mimalloc serves those small, short-lived allocations much faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::error::ErrorKind;
use items_api::{
    config::Command,
    store,
    telemetry::{init, resource},
    Application, Config,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env_and_args() {
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
    match config.command {
        Some(Command::Migrate) => return migrate(&config).await,
        Some(Command::Healthcheck) => return healthcheck(config.listen_addr).await,
        None => {}
    }
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

async fn migrate(config: &Config) -> ExitCode {
    match store::migrate(&config.store()).await {
        Ok(()) => {
            println!("items-api: migrations applied");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("items-api: cannot migrate the database: {err}");
            ExitCode::from(1)
        }
    }
}

/// How long the health check may take in all; a container runtime kills it after its own timeout.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Exit 0 when `GET /health/ready` on the local instance answers 200. A fixed HTTP/1.1 request
/// over a plain socket is all it takes, so no HTTP client crate is needed.
async fn healthcheck(listen_addr: SocketAddr) -> ExitCode {
    let mut addr = listen_addr;
    // A wildcard listen address is reached through loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request =
            format!("GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    match tokio::time::timeout(HEALTHCHECK_TIMEOUT, probe).await {
        Ok(Ok(head)) if head.starts_with(b"HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(Ok(head)) => {
            eprintln!(
                "items-api: not ready: {}",
                String::from_utf8_lossy(&head).trim()
            );
            ExitCode::from(1)
        }
        Ok(Err(err)) => {
            eprintln!("items-api: not ready: {addr}: {err}");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("items-api: not ready: {addr} did not answer within {HEALTHCHECK_TIMEOUT:?}");
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
