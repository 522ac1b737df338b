//! `Application::build(config)`: opens the database, builds telemetry and binds the listeners.
//! Tests build it on port 0; `main` builds it from the command line.

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use poem::{
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    middleware::AddData,
    EndpointExt, Route, Server,
};
use tokio::sync::watch;

use crate::api::{
    self, fault::FaultInjection, metrics_auth::BearerGuarded, payload::BodyLimit, AppState,
};
use crate::config::Config;
use crate::store::ItemStore;
use crate::telemetry::{business::BusinessMetrics, http::HttpTelemetry, Telemetry};

/// Why the service could not start. Each renders as one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Metrics(#[from] crate::telemetry::MetricsError),
}

pub struct Application {
    api: Listening,
    metrics: Option<Listening>,
    store: ItemStore,
    telemetry: Arc<Telemetry>,
    stored_refresh: tokio::task::JoinHandle<()>,
    shutdown_timeout: Duration,
}

struct Listening {
    acceptor: TcpAcceptor,
    port: u16,
    endpoint: poem::endpoint::BoxEndpoint<'static>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let telemetry = Telemetry::new(&config, api::route_templates())?;
        let store = ItemStore::connect(&config.store(), telemetry.db.clone()).await?;
        let pool = store.clone();
        telemetry.db.observe_pool(move || pool.pool_state());
        let business = telemetry.business.clone();
        business.set_stored(store.count().await.unwrap_or(0));
        let stored_refresh = spawn_stored_refresh(store.clone(), business.clone());

        let metrics_endpoint = Arc::new(BearerGuarded::new(
            telemetry.exposition.clone(),
            config.metrics_bearer_token.as_deref(),
        ));
        let mut routes = api::routes(AppState {
            store: store.clone(),
            business,
        });
        if config.metrics_listen_addr.is_none() {
            routes = routes.at("/metrics", metrics_endpoint.clone());
        }
        let api = Listening::bind(
            config.listen_addr,
            app(routes, telemetry.http.clone(), &config),
        )
        .await?;
        let metrics = match config.metrics_listen_addr {
            Some(addr) => Some(Listening::bind(addr, metrics_only(metrics_endpoint)).await?),
            None => None,
        };
        Ok(Self {
            api,
            metrics,
            store,
            telemetry: Arc::new(telemetry),
            stored_refresh,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The port the API listens on (the real one when the config said 0).
    pub fn port(&self) -> u16 {
        self.api.port
    }

    /// The port of the separate `/metrics` listener, when there is one.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|m| m.port)
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// (up to `SHUTDOWN_TIMEOUT`), and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let timeout = Some(self.shutdown_timeout);
        let api = self.api.serve(stopped(stop_rx.clone()), timeout);
        let result = match self.metrics {
            Some(metrics) => {
                let (api, metrics) = tokio::join!(api, metrics.serve(stopped(stop_rx), timeout));
                api.and(metrics)
            }
            None => api.await,
        };
        self.stored_refresh.abort();
        self.store.close().await;
        self.telemetry.shutdown();
        result
    }
}

impl Listening {
    async fn bind(
        addr: SocketAddr,
        endpoint: poem::endpoint::BoxEndpoint<'static>,
    ) -> Result<Self, StartupError> {
        let listen_error = |source| StartupError::Listen { addr, source };
        let acceptor = TcpListener::bind(addr)
            .into_acceptor()
            .await
            .map_err(listen_error)?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().map(SocketAddr::port))
            .unwrap_or(addr.port());
        Ok(Self {
            acceptor,
            port,
            endpoint,
        })
    }

    async fn serve(
        self,
        stop: impl Future<Output = ()> + Send,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(self.endpoint, stop, timeout)
            .await
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// How often `items.stored` is corrected from a real count (other replicas write too).
const STORED_REFRESH: Duration = Duration::from_secs(60);

fn spawn_stored_refresh(
    store: ItemStore,
    business: BusinessMetrics,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STORED_REFRESH);
        tick.tick().await; // the first tick is immediate; build() has just counted
        loop {
            tick.tick().await;
            if let Ok(count) = store.count().await {
                business.set_stored(count);
            }
        }
    })
}

/// The API with its middleware, outermost first: telemetry (so it sees the final status and
/// the whole duration), the panic guard (so a panic is a 500 telemetry sees), errors as
/// problem+json, then the data payloads and faults read.
fn app(
    routes: Route,
    http: HttpTelemetry,
    config: &Config,
) -> poem::endpoint::BoxEndpoint<'static> {
    let faults = FaultInjection {
        error_ratio: config.fault_error_ratio.unwrap_or(0.0),
        panic_ratio: config.fault_panic_ratio.unwrap_or(0.0),
        delay: config.fault_delay.unwrap_or_default(),
    };
    let faults_on = faults.any();
    if faults_on {
        tracing::warn!(
            error_ratio = faults.error_ratio,
            panic_ratio = faults.panic_ratio,
            delay_ms = faults.delay.as_millis() as u64,
            "fault injection is ON for /items: requests will fail or slow down on purpose"
        );
    }
    api::with_panic_guard(api::with_problem_errors(
        routes
            .with_if(faults_on, AddData::new(faults))
            .with(AddData::new(BodyLimit {
                max_bytes: config.body_limit,
                read_timeout: config.body_read_timeout,
            })),
    ))
    .with(http)
    .boxed()
}

fn metrics_only(endpoint: impl poem::Endpoint + 'static) -> poem::endpoint::BoxEndpoint<'static> {
    api::with_problem_errors(Route::new().at("/metrics", endpoint))
        .map_to_response()
        .boxed()
}
