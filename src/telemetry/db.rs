//! DB instrumentation: every statement the store runs goes through `DbTelemetry::observe`,
//! which opens its CLIENT span and records `db.client.operation.duration` for the same interval.
//! Wrapping the store's calls (rather than sea-orm's metric callback) also covers statements the
//! callback skips, and gives the span a real start time.

use std::{future::Future, time::Instant};

use std::sync::{Arc, OnceLock};

use opentelemetry::{
    metrics::{BoundHistogram, Histogram, Meter},
    trace::{Span as _, SpanKind, Status, Tracer as _},
    Context, Key, KeyValue,
};
use opentelemetry_sdk::trace::SdkTracer;
use opentelemetry_semantic_conventions::{
    attribute::{
        DB_CLIENT_CONNECTION_POOL_NAME, DB_CLIENT_CONNECTION_STATE, DB_COLLECTION_NAME,
        DB_NAMESPACE, DB_OPERATION_NAME, DB_QUERY_TEXT, DB_SYSTEM_NAME, ERROR_TYPE, SERVER_ADDRESS,
        SERVER_PORT,
    },
    metric::{DB_CLIENT_CONNECTION_COUNT, DB_CLIENT_CONNECTION_MAX, DB_CLIENT_OPERATION_DURATION},
};
use sea_orm::{DbErr, Statement};

use crate::config::{Backend, DatabaseUrl};

/// Seconds; fine-grained at the bottom because SQLite answers in tens of microseconds.
const DURATION_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// One kind of statement: its operation and table, fixed at compile time so that labels and span
/// names cost no formatting per call. Made by `db_operation!("SELECT", "items")`.
#[derive(Debug, Clone, Copy)]
pub struct DbOperation {
    operation: &'static str,
    collection: &'static str,
    /// `{operation} {collection}`, the span name.
    name: &'static str,
}

impl DbOperation {
    #[doc(hidden)]
    pub const fn new(
        operation: &'static str,
        collection: &'static str,
        name: &'static str,
    ) -> Self {
        Self {
            operation,
            collection,
            name,
        }
    }
}

/// A `DbOperation` with its span name joined at compile time.
macro_rules! db_operation {
    ($operation:literal, $collection:literal) => {
        $crate::telemetry::db::DbOperation::new(
            $operation,
            $collection,
            concat!($operation, " ", $collection),
        )
    };
}
pub(crate) use db_operation;

/// How many kinds of statement get a bound series (the store has four); more are measured the
/// ordinary way.
const BOUND_OPERATIONS: usize = 16;

/// `db.client.operation.duration` bound once per kind of statement, so a successful statement's
/// measurement skips the SDK's attribute hashing.
type BoundDurations = [OnceLock<(&'static str, BoundHistogram<f64>)>; BOUND_OPERATIONS];

/// What every DB span and measurement shares: the backend and where it lives.
#[derive(Clone)]
pub struct DbTelemetry {
    duration: Histogram<f64>,
    bound: Arc<BoundDurations>,
    system: &'static str,
    namespace: String,
    server: Option<(String, u16)>,
    /// None when spans are off; see `HttpTelemetry`.
    tracer: Option<SdkTracer>,
    meter: Meter,
}

impl DbTelemetry {
    pub fn new(meter: &Meter, url: &DatabaseUrl) -> Self {
        let duration = meter
            .f64_histogram(DB_CLIENT_OPERATION_DURATION)
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
            bound: Arc::new(std::array::from_fn(|_| OnceLock::new())),
            system,
            namespace,
            server,
            tracer: None,
            meter: meter.clone(),
        }
    }

    /// CLIENT spans for every statement, children of the request's span.
    pub fn with_tracer(mut self, tracer: Option<SdkTracer>) -> Self {
        self.tracer = tracer;
        self
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
        let mut span = self.tracer.as_ref().map(|tracer| {
            let mut span = tracer
                .span_builder(op.name)
                .with_kind(SpanKind::Client)
                .start_with_context(tracer, &Context::current());
            if span.is_recording() {
                span.set_attributes(self.span_attributes(op, &stmt));
            }
            span
        });
        let start = Instant::now();
        // Boxed: the driver's future is large, and moved inline it costs more copying than the
        // allocation does.
        let result = Box::pin(run(stmt)).await;
        let elapsed = start.elapsed().as_secs_f64();
        let base = [
            KeyValue::new(DB_SYSTEM_NAME, self.system),
            KeyValue::new(DB_OPERATION_NAME, op.operation),
            KeyValue::new(DB_COLLECTION_NAME, op.collection),
        ];
        match &result {
            Ok(_) => match self.bound_duration(op, &base) {
                Some(bound) => bound.record(elapsed),
                None => self.duration.record(elapsed, &base),
            },
            Err(err) => {
                let error_type = error_type(err);
                if let Some(span) = &mut span {
                    span.set_attribute(KeyValue::new(ERROR_TYPE, error_type));
                    span.set_status(Status::error(""));
                }
                let [a, b, c] = base;
                self.duration
                    .record(elapsed, &[a, b, c, KeyValue::new(ERROR_TYPE, error_type)]);
            }
        }
        // Ended now, so it covers exactly the interval the histogram recorded.
        if let Some(mut span) = span {
            span.end();
        }
        result
    }

    /// The bound series of a kind of statement, bound on its first use.
    fn bound_duration(&self, op: &DbOperation, base: &[KeyValue]) -> Option<&BoundHistogram<f64>> {
        self.bound.iter().find_map(|slot| {
            let (name, bound) = slot.get_or_init(|| (op.name, self.duration.bind(base)));
            (*name == op.name).then_some(bound)
        })
    }

    /// semconv `db.*` attributes; the SQL is the parameterised text, never its values.
    fn span_attributes(&self, op: &DbOperation, stmt: &Statement) -> Vec<KeyValue> {
        let kv = |key: &'static str, value: opentelemetry::Value| {
            KeyValue::new(Key::from_static_str(key), value)
        };
        let mut attributes = Vec::with_capacity(8);
        attributes.push(kv(DB_SYSTEM_NAME, self.system.into()));
        attributes.push(kv(DB_NAMESPACE, self.namespace.clone().into()));
        attributes.push(kv(DB_OPERATION_NAME, op.operation.into()));
        attributes.push(kv(DB_COLLECTION_NAME, op.collection.into()));
        attributes.push(kv(DB_QUERY_TEXT, stmt.sql.clone().into()));
        if let Some((host, port)) = &self.server {
            attributes.push(kv(SERVER_ADDRESS, host.clone().into()));
            attributes.push(kv(SERVER_PORT, i64::from(*port).into()));
        }
        attributes
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

impl DbTelemetry {
    /// Registers `db.client.connection.count` (idle/used) and `db.client.connection.max`.
    /// `state` is read at collection time.
    pub fn observe_pool(&self, state: impl Fn() -> PoolState + Send + Sync + Clone + 'static) {
        register_pool_metrics(&self.meter, state);
    }
}

fn register_pool_metrics(
    meter: &Meter,
    state: impl Fn() -> PoolState + Send + Sync + Clone + 'static,
) {
    let read = state.clone();
    meter
        .i64_observable_up_down_counter(DB_CLIENT_CONNECTION_COUNT)
        .with_unit("{connection}")
        .with_description("Connections of the pool, by state")
        .with_callback(move |gauge| {
            let pool = read();
            let name = KeyValue::new(DB_CLIENT_CONNECTION_POOL_NAME, POOL_NAME);
            gauge.observe(
                pool.idle as i64,
                &[
                    name.clone(),
                    KeyValue::new(DB_CLIENT_CONNECTION_STATE, "idle"),
                ],
            );
            gauge.observe(
                pool.used as i64,
                &[name, KeyValue::new(DB_CLIENT_CONNECTION_STATE, "used")],
            );
        })
        .build();
    meter
        .i64_observable_up_down_counter(DB_CLIENT_CONNECTION_MAX)
        .with_unit("{connection}")
        .with_description("Most connections the pool may open")
        .with_callback(move |gauge| {
            gauge.observe(
                state().max as i64,
                &[KeyValue::new(DB_CLIENT_CONNECTION_POOL_NAME, POOL_NAME)],
            );
        })
        .build();
}
