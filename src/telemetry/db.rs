//! DB instrumentation: every statement the store runs goes through `DbTelemetry::observe`,
//! which opens its CLIENT span and records `db.client.operation.duration` for the same interval.
//! Wrapping the store's calls (rather than sea-orm's metric callback) also covers statements the
//! callback skips, and gives the span a real start time.

use std::{future::Future, time::Instant};

use opentelemetry::{metrics::Histogram, metrics::Meter, trace::TraceContextExt, KeyValue};
use sea_orm::{DbErr, Statement};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{Backend, DatabaseUrl};

/// Seconds; fine-grained at the bottom because SQLite answers in tens of microseconds.
const DURATION_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// One kind of statement: its operation and table, fixed at compile time so that labels and span
/// names cost no formatting per call.
#[derive(Debug, Clone, Copy)]
pub struct DbOperation {
    operation: &'static str,
    collection: &'static str,
}

impl DbOperation {
    pub const fn new(operation: &'static str, collection: &'static str) -> Self {
        Self {
            operation,
            collection,
        }
    }
}

/// What every DB span and measurement shares: the backend and where it lives.
#[derive(Clone)]
pub struct DbTelemetry {
    duration: Histogram<f64>,
    system: &'static str,
    namespace: String,
    server: Option<(String, u16)>,
}

impl DbTelemetry {
    pub fn new(meter: &Meter, url: &DatabaseUrl) -> Self {
        let duration = meter
            .f64_histogram("db.client.operation.duration")
            .with_unit("s")
            .with_description("Duration of database client operations")
            .with_boundaries(DURATION_BOUNDS.to_vec())
            .build();
        let system = match url.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        };
        let namespace = url.namespace().to_owned();
        let server = url.server().map(|(host, port)| (host.to_owned(), port));
        Self {
            duration,
            system,
            namespace,
            server,
        }
    }

    /// The value of `db.system.name` for this backend.
    pub fn system(&self) -> &'static str {
        self.system
    }

    /// Runs one statement inside its CLIENT span and records how long it took.
    pub async fn observe<T, F, Fut>(
        &self,
        op: &DbOperation,
        stmt: Statement,
        run: F,
    ) -> Result<T, DbErr>
    where
        F: FnOnce(Statement) -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        let (server_address, server_port) = match &self.server {
            // i64: tracing-opentelemetry keeps i64 as an int attribute (unsigned becomes a string).
            Some((host, port)) => (Some(host.as_str()), Some(i64::from(*port))),
            None => (None, None),
        };
        let span = tracing::info_span!(
            target: "items_api::db",
            "db",
            otel.name = format_args!("{} {}", op.operation, op.collection),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = self.system,
            db.namespace = %self.namespace,
            db.operation.name = op.operation,
            db.collection.name = op.collection,
            db.query.text = %stmt.sql,
            server.address = server_address,
            server.port = server_port,
            error.type = tracing::field::Empty,
        );
        let start = Instant::now();
        let result = run(stmt).instrument(span.clone()).await;
        let elapsed = start.elapsed().as_secs_f64();
        let base = [
            KeyValue::new("db.system.name", self.system),
            KeyValue::new("db.operation.name", op.operation),
            KeyValue::new("db.collection.name", op.collection),
        ];
        match &result {
            Ok(_) => self.duration.record(elapsed, &base),
            Err(err) => {
                let error_type = error_type(err);
                span.record("otel.status_code", "ERROR");
                span.record("error.type", error_type);
                let [a, b, c] = base;
                self.duration
                    .record(elapsed, &[a, b, c, KeyValue::new("error.type", error_type)]);
            }
        }
        // sqlx hands the current span to its connection worker, which may drop it later; end the
        // OTel span now so it covers exactly the interval the histogram recorded.
        if !span.is_disabled() {
            span.context().span().end();
        }
        result
    }
}

/// A small, fixed set of values, so that `error.type` can never carry a message or a value.
fn error_type(err: &DbErr) -> &'static str {
    match err {
        DbErr::ConnectionAcquire(_) => "pool_timeout",
        DbErr::Conn(_) => "connection",
        DbErr::Exec(_) | DbErr::Query(_) => "query",
        DbErr::RecordNotFound(_) | DbErr::RecordNotInserted | DbErr::RecordNotUpdated => {
            "no_record"
        }
        _ => "other",
    }
}

/// Connections of the pool: in use, idle, and the most it may open.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    pub used: u64,
    pub idle: u64,
    pub max: u64,
}

/// The pool is named once per app; there is one.
const POOL_NAME: &str = "items";

/// Registers `db.client.connection.count` (idle/used) and `db.client.connection.max`.
/// `state` is read at collection time.
pub fn register_pool_metrics(
    meter: &Meter,
    state: impl Fn() -> PoolState + Send + Sync + Clone + 'static,
) {
    let read = state.clone();
    meter
        .i64_observable_up_down_counter("db.client.connection.count")
        .with_unit("{connection}")
        .with_description("Connections of the pool, by state")
        .with_callback(move |gauge| {
            let pool = read();
            let name = KeyValue::new("db.client.connection.pool.name", POOL_NAME);
            gauge.observe(
                pool.idle as i64,
                &[
                    name.clone(),
                    KeyValue::new("db.client.connection.state", "idle"),
                ],
            );
            gauge.observe(
                pool.used as i64,
                &[name, KeyValue::new("db.client.connection.state", "used")],
            );
        })
        .build();
    meter
        .i64_observable_up_down_counter("db.client.connection.max")
        .with_unit("{connection}")
        .with_description("Most connections the pool may open")
        .with_callback(move |gauge| {
            gauge.observe(
                state().max as i64,
                &[KeyValue::new("db.client.connection.pool.name", POOL_NAME)],
            );
        })
        .build();
}
