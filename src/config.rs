//! Runtime configuration: every setting is a `--flag` and an environment variable (docs/DESIGN.md §7).
//! Values are parsed and checked here, so a bad value stops start-up before anything is opened.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// The `items-api` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "items-api",
    version,
    about = "Items CRUD API, observable by construction"
)]
pub struct Config {
    /// What to do; with none, the service serves.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// `sqlite://…` or `postgres://…`; migrations run at start.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://items.db?mode=rwc", value_parser = DatabaseUrl::from_str)]
    pub database_url: DatabaseUrl,

    /// Address of the API (and of `/metrics` unless `METRICS_LISTEN_ADDR` is set).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8000")]
    pub listen_addr: SocketAddr,

    /// Serve `/metrics` on its own listener instead of the API port.
    #[arg(long, env = "METRICS_LISTEN_ADDR")]
    pub metrics_listen_addr: Option<SocketAddr>,

    /// When set, `/metrics` answers 401 unless the request carries `Authorization: Bearer <token>`.
    #[arg(long, env = "METRICS_BEARER_TOKEN", hide_env_values = true)]
    pub metrics_bearer_token: Option<String>,

    /// Log format on stdout.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long = "log-filter", env = "RUST_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub log_filter: String,

    /// Largest request body accepted; larger ones get 413.
    #[arg(long, env = "BODY_LIMIT", default_value = "1MiB", value_parser = parse_byte_size)]
    pub body_limit: usize,

    /// How long a client may take to send a request body before it gets 408 (slow-body attacks).
    #[arg(long, env = "BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,

    /// How long a request waits for a database connection before it gets 503.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub db_acquire_timeout: Duration,

    /// Size of the database connection pool.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,

    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Path prefixes that are served but not measured (comma-separated).
    #[arg(
        long,
        env = "METRICS_EXCLUDE",
        value_delimiter = ',',
        default_value = "/metrics,/health/,/docs,/openapi.json,/favicon.ico"
    )]
    pub metrics_exclude: Vec<String>,

    /// Share (0..=1) of `/items*` requests that answer 500, for demos and alert tests.
    #[arg(long, env = "FAULT_ERROR_RATIO", value_parser = parse_ratio)]
    pub fault_error_ratio: Option<f64>,

    /// Share (0..=1) of `/items*` requests whose handler panics (answered 500), for demos and
    /// tests of the panic guard.
    #[arg(long, env = "FAULT_PANIC_RATIO", value_parser = parse_ratio)]
    pub fault_panic_ratio: Option<f64>,

    /// Delay added to every `/items*` request (`150ms`, `1s`), for demos and alert tests.
    #[arg(long, env = "FAULT_DELAY", value_parser = parse_duration)]
    pub fault_delay: Option<Duration>,

    #[command(flatten)]
    pub otel: OtelConfig,
}

/// What the binary does besides serving (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Apply the database migrations and exit (a Kubernetes init container or Job runs this).
    Migrate,
    /// Exit 0 when the instance at `LISTEN_ADDR` answers `/health/ready` with 200, else 1
    /// (the container health check: distroless images have no shell or wget).
    Healthcheck,
}

/// The standard OpenTelemetry SDK variables this service honours.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "OpenTelemetry (standard OTEL_* variables)")]
pub struct OtelConfig {
    /// Turn every signal off: no spans, no log export, `/metrics` empty.
    #[arg(long = "otel-sdk-disabled", env = "OTEL_SDK_DISABLED", default_value = "false", action = ArgAction::Set, value_parser = parse_bool)]
    pub sdk_disabled: bool,

    /// `prometheus`, `otlp`, `none`, or a comma-separated mix.
    #[arg(long = "otel-metrics-exporter", env = "OTEL_METRICS_EXPORTER", default_value = "prometheus", value_parser = parse_metrics_exporters)]
    pub metrics_exporter: MetricsExporters,

    /// `otlp` (used when an OTLP endpoint is set), `console` or `none`.
    #[arg(long = "otel-traces-exporter", env = "OTEL_TRACES_EXPORTER", value_enum, default_value_t = SignalExporter::Otlp)]
    pub traces_exporter: SignalExporter,

    /// `otlp` (used when an OTLP endpoint is set), `console` or `none`.
    #[arg(long = "otel-logs-exporter", env = "OTEL_LOGS_EXPORTER", value_enum, default_value_t = SignalExporter::Otlp)]
    pub logs_exporter: SignalExporter,

    /// Base OTLP endpoint (`http://collector:4318` for http/protobuf, `:4317` for grpc).
    #[arg(long = "otel-exporter-otlp-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = parse_endpoint)]
    pub otlp_endpoint: Option<String>,

    /// Full OTLP endpoint for traces; overrides the base one.
    #[arg(long = "otel-exporter-otlp-traces-endpoint", env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value_parser = parse_endpoint)]
    pub otlp_traces_endpoint: Option<String>,

    /// Full OTLP endpoint for metrics; overrides the base one.
    #[arg(long = "otel-exporter-otlp-metrics-endpoint", env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", value_parser = parse_endpoint)]
    pub otlp_metrics_endpoint: Option<String>,

    /// Full OTLP endpoint for logs; overrides the base one.
    #[arg(long = "otel-exporter-otlp-logs-endpoint", env = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", value_parser = parse_endpoint)]
    pub otlp_logs_endpoint: Option<String>,

    /// `http/protobuf` or `grpc`.
    #[arg(long = "otel-exporter-otlp-protocol", env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum, default_value_t = OtlpProtocol::HttpProtobuf)]
    pub otlp_protocol: OtlpProtocol,

    /// Milliseconds between OTLP metric pushes.
    #[arg(long = "otel-metric-export-interval", env = "OTEL_METRIC_EXPORT_INTERVAL", default_value = "60000", value_parser = parse_millis)]
    pub metric_export_interval: Duration,

    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`,
    /// `parentbased_always_off`, `parentbased_traceidratio`.
    #[arg(long = "otel-traces-sampler", env = "OTEL_TRACES_SAMPLER", value_enum, default_value_t = SamplerKind::ParentbasedAlwaysOn)]
    pub traces_sampler: SamplerKind,

    /// The ratio (0..=1) of the `traceidratio` samplers.
    #[arg(long = "otel-traces-sampler-arg", env = "OTEL_TRACES_SAMPLER_ARG", value_parser = parse_ratio)]
    pub traces_sampler_arg: Option<f64>,

    /// Context propagation on incoming requests: `tracecontext`, `baggage`, a comma-separated
    /// mix, or `none`.
    #[arg(long = "otel-propagators", env = "OTEL_PROPAGATORS", value_name = "OTEL_PROPAGATORS", default_value = "tracecontext,baggage", value_parser = parse_propagators)]
    pub propagators: Propagators,

    /// Extra headers on every OTLP export, `key=value,key2=value2` (values URL-encoded).
    #[arg(long = "otel-exporter-otlp-headers", env = "OTEL_EXPORTER_OTLP_HEADERS", value_name = "OTEL_EXPORTER_OTLP_HEADERS", hide_env_values = true, value_parser = parse_headers)]
    pub otlp_headers: Option<OtlpHeaders>,

    /// Headers for trace exports; replaces the base list.
    #[arg(long = "otel-exporter-otlp-traces-headers", env = "OTEL_EXPORTER_OTLP_TRACES_HEADERS", value_name = "OTEL_EXPORTER_OTLP_TRACES_HEADERS", hide_env_values = true, value_parser = parse_headers)]
    pub otlp_traces_headers: Option<OtlpHeaders>,

    /// Headers for metric exports; replaces the base list.
    #[arg(long = "otel-exporter-otlp-metrics-headers", env = "OTEL_EXPORTER_OTLP_METRICS_HEADERS", value_name = "OTEL_EXPORTER_OTLP_METRICS_HEADERS", hide_env_values = true, value_parser = parse_headers)]
    pub otlp_metrics_headers: Option<OtlpHeaders>,

    /// Headers for log exports; replaces the base list.
    #[arg(long = "otel-exporter-otlp-logs-headers", env = "OTEL_EXPORTER_OTLP_LOGS_HEADERS", value_name = "OTEL_EXPORTER_OTLP_LOGS_HEADERS", hide_env_values = true, value_parser = parse_headers)]
    pub otlp_logs_headers: Option<OtlpHeaders>,

    /// `gzip` or `none` (the default), for every OTLP export.
    #[arg(
        long = "otel-exporter-otlp-compression",
        env = "OTEL_EXPORTER_OTLP_COMPRESSION",
        value_name = "OTEL_EXPORTER_OTLP_COMPRESSION",
        value_enum
    )]
    pub otlp_compression: Option<OtlpCompression>,

    /// Compression of trace exports; overrides the base one.
    #[arg(
        long = "otel-exporter-otlp-traces-compression",
        env = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        value_name = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        value_enum
    )]
    pub otlp_traces_compression: Option<OtlpCompression>,

    /// Compression of metric exports; overrides the base one.
    #[arg(
        long = "otel-exporter-otlp-metrics-compression",
        env = "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        value_name = "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        value_enum
    )]
    pub otlp_metrics_compression: Option<OtlpCompression>,

    /// Compression of log exports; overrides the base one.
    #[arg(
        long = "otel-exporter-otlp-logs-compression",
        env = "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
        value_name = "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
        value_enum
    )]
    pub otlp_logs_compression: Option<OtlpCompression>,

    /// Milliseconds one OTLP export (retries included) may take; 10000 when unset.
    #[arg(long = "otel-exporter-otlp-timeout", env = "OTEL_EXPORTER_OTLP_TIMEOUT", value_name = "OTEL_EXPORTER_OTLP_TIMEOUT", value_parser = parse_millis)]
    pub otlp_timeout: Option<Duration>,

    /// Timeout of trace exports, in milliseconds; overrides the base one.
    #[arg(long = "otel-exporter-otlp-traces-timeout", env = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", value_name = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", value_parser = parse_millis)]
    pub otlp_traces_timeout: Option<Duration>,

    /// Timeout of metric exports, in milliseconds; overrides the base one.
    #[arg(long = "otel-exporter-otlp-metrics-timeout", env = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", value_name = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", value_parser = parse_millis)]
    pub otlp_metrics_timeout: Option<Duration>,

    /// Timeout of log exports, in milliseconds; overrides the base one.
    #[arg(long = "otel-exporter-otlp-logs-timeout", env = "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", value_name = "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", value_parser = parse_millis)]
    pub otlp_logs_timeout: Option<Duration>,

    /// PEM file of the CA(s) that sign the backend's certificate; when set, the only roots
    /// trusted (else the system's).
    #[arg(long = "otel-exporter-otlp-certificate", env = "OTEL_EXPORTER_OTLP_CERTIFICATE", value_name = "OTEL_EXPORTER_OTLP_CERTIFICATE", value_parser = parse_certificate_file)]
    pub otlp_certificate: Option<PemFile>,

    /// CA file for trace exports; overrides the base one.
    #[arg(long = "otel-exporter-otlp-traces-certificate", env = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", value_name = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", value_parser = parse_certificate_file)]
    pub otlp_traces_certificate: Option<PemFile>,

    /// CA file for metric exports; overrides the base one.
    #[arg(long = "otel-exporter-otlp-metrics-certificate", env = "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", value_name = "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", value_parser = parse_certificate_file)]
    pub otlp_metrics_certificate: Option<PemFile>,

    /// CA file for log exports; overrides the base one.
    #[arg(long = "otel-exporter-otlp-logs-certificate", env = "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", value_name = "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", value_parser = parse_certificate_file)]
    pub otlp_logs_certificate: Option<PemFile>,

    /// PEM client certificate (chain) for mutual TLS; needs the matching client key.
    #[arg(long = "otel-exporter-otlp-client-certificate", env = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", value_name = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", value_parser = parse_certificate_file)]
    pub otlp_client_certificate: Option<PemFile>,

    /// Client certificate for trace exports; overrides the base one.
    #[arg(long = "otel-exporter-otlp-traces-client-certificate", env = "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", value_name = "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", value_parser = parse_certificate_file)]
    pub otlp_traces_client_certificate: Option<PemFile>,

    /// Client certificate for metric exports; overrides the base one.
    #[arg(long = "otel-exporter-otlp-metrics-client-certificate", env = "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE", value_name = "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE", value_parser = parse_certificate_file)]
    pub otlp_metrics_client_certificate: Option<PemFile>,

    /// Client certificate for log exports; overrides the base one.
    #[arg(long = "otel-exporter-otlp-logs-client-certificate", env = "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE", value_name = "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE", value_parser = parse_certificate_file)]
    pub otlp_logs_client_certificate: Option<PemFile>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the client certificate.
    #[arg(long = "otel-exporter-otlp-client-key", env = "OTEL_EXPORTER_OTLP_CLIENT_KEY", value_name = "OTEL_EXPORTER_OTLP_CLIENT_KEY", value_parser = parse_private_key_file)]
    pub otlp_client_key: Option<PemFile>,

    /// Client key for trace exports; overrides the base one.
    #[arg(long = "otel-exporter-otlp-traces-client-key", env = "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", value_name = "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", value_parser = parse_private_key_file)]
    pub otlp_traces_client_key: Option<PemFile>,

    /// Client key for metric exports; overrides the base one.
    #[arg(long = "otel-exporter-otlp-metrics-client-key", env = "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", value_name = "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", value_parser = parse_private_key_file)]
    pub otlp_metrics_client_key: Option<PemFile>,

    /// Client key for log exports; overrides the base one.
    #[arg(long = "otel-exporter-otlp-logs-client-key", env = "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", value_name = "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", value_parser = parse_private_key_file)]
    pub otlp_logs_client_key: Option<PemFile>,

    /// Milliseconds between two span exports.
    #[arg(long = "otel-bsp-schedule-delay", env = "OTEL_BSP_SCHEDULE_DELAY", value_name = "OTEL_BSP_SCHEDULE_DELAY", default_value = "5000", value_parser = parse_millis)]
    pub bsp_schedule_delay: Duration,

    /// Milliseconds one span export may take before it is abandoned.
    #[arg(long = "otel-bsp-export-timeout", env = "OTEL_BSP_EXPORT_TIMEOUT", value_name = "OTEL_BSP_EXPORT_TIMEOUT", default_value = "30000", value_parser = parse_millis)]
    pub bsp_export_timeout: Duration,

    /// Finished spans that may wait for export; past it they are dropped and counted.
    #[arg(long = "otel-bsp-max-queue-size", env = "OTEL_BSP_MAX_QUEUE_SIZE", value_name = "OTEL_BSP_MAX_QUEUE_SIZE", default_value = "2048", value_parser = parse_count)]
    pub bsp_max_queue_size: usize,

    /// Most spans in one export (512, or the queue size if smaller); at most
    /// `OTEL_BSP_MAX_QUEUE_SIZE`.
    #[arg(long = "otel-bsp-max-export-batch-size", env = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", value_name = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", value_parser = parse_count)]
    pub bsp_max_export_batch_size: Option<usize>,

    /// Milliseconds between two log record exports.
    #[arg(long = "otel-blrp-schedule-delay", env = "OTEL_BLRP_SCHEDULE_DELAY", value_name = "OTEL_BLRP_SCHEDULE_DELAY", default_value = "1000", value_parser = parse_millis)]
    pub blrp_schedule_delay: Duration,

    /// Milliseconds one log record export may take before it is abandoned.
    #[arg(long = "otel-blrp-export-timeout", env = "OTEL_BLRP_EXPORT_TIMEOUT", value_name = "OTEL_BLRP_EXPORT_TIMEOUT", default_value = "30000", value_parser = parse_millis)]
    pub blrp_export_timeout: Duration,

    /// Log records that may wait for export; past it they are dropped.
    #[arg(long = "otel-blrp-max-queue-size", env = "OTEL_BLRP_MAX_QUEUE_SIZE", value_name = "OTEL_BLRP_MAX_QUEUE_SIZE", default_value = "2048", value_parser = parse_count)]
    pub blrp_max_queue_size: usize,

    /// Most log records in one export (512, or the queue size if smaller); at most
    /// `OTEL_BLRP_MAX_QUEUE_SIZE`.
    #[arg(long = "otel-blrp-max-export-batch-size", env = "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", value_name = "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", value_parser = parse_count)]
    pub blrp_max_export_batch_size: Option<usize>,

    /// Milliseconds one OTLP metric export may take before it is abandoned.
    #[arg(long = "otel-metric-export-timeout", env = "OTEL_METRIC_EXPORT_TIMEOUT", value_name = "OTEL_METRIC_EXPORT_TIMEOUT", default_value = "30000", value_parser = parse_millis)]
    pub metric_export_timeout: Duration,
}

/// Which propagators read (and would write) trace context and baggage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Propagators {
    pub tracecontext: bool,
    pub baggage: bool,
}

/// OTLP headers as `(name, value)`: names checked, values URL-decoded and checked. Values are
/// often credentials, so `Debug` shows the names only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct OtlpHeaders(pub Vec<(String, String)>);

impl std::fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}=…")))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpCompression {
    Gzip,
    None,
}

/// A PEM file named by a setting, read and checked at start-up. Its contents never appear in
/// `Debug` output (it may be a private key).
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PemFile({})", self.path.display())
    }
}

/// Which readers the meter provider gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsExporters {
    pub prometheus: bool,
    pub otlp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignalExporter {
    Otlp,
    Console,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    Traceidratio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    ParentbasedTraceidratio,
}

/// An OTLP signal, for endpoint resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl OtelConfig {
    /// Where a signal goes: its own endpoint as given, else the base endpoint plus the signal's
    /// path for http/protobuf (the base as is for grpc). `None`: nowhere, nothing connects.
    pub fn endpoint(&self, signal: Signal) -> Option<String> {
        let (own, path) = match signal {
            Signal::Traces => (&self.otlp_traces_endpoint, "v1/traces"),
            Signal::Metrics => (&self.otlp_metrics_endpoint, "v1/metrics"),
            Signal::Logs => (&self.otlp_logs_endpoint, "v1/logs"),
        };
        if let Some(own) = own {
            return Some(own.clone());
        }
        let base = self.otlp_endpoint.as_ref()?;
        Some(match self.otlp_protocol {
            OtlpProtocol::Grpc => base.clone(),
            OtlpProtocol::HttpProtobuf => format!("{}/{path}", base.trim_end_matches('/')),
        })
    }
}

impl Config {
    /// Parses the command line and the environment. An empty environment variable counts as
    /// unset, for every setting: compose and Kubernetes pass `VAR=` for "not given".
    pub fn from_env_and_args() -> Result<Self, clap::Error> {
        let mut command = Self::command();
        let empty: Vec<clap::Id> = command
            .get_arguments()
            .filter(|arg| {
                arg.get_env()
                    .and_then(std::env::var_os)
                    .is_some_and(|value| value.is_empty())
            })
            .map(|arg| arg.get_id().clone())
            .collect();
        for id in empty {
            command = command.mut_arg(id, |arg| arg.env(None::<&str>));
        }
        let matches = command.try_get_matches()?;
        Self::from_arg_matches(&matches)
    }

    /// The settings the store uses, and only those.
    pub fn store(&self) -> StoreConfig {
        StoreConfig {
            url: self.database_url.clone(),
            max_connections: self.db_max_connections,
            acquire_timeout: self.db_acquire_timeout,
        }
    }

    /// The configuration a test wants: everything default, on the given database, on port 0.
    pub fn for_tests(database_url: DatabaseUrl) -> Self {
        let mut config = Config::parse_from(["items-api"]);
        config.database_url = database_url;
        config.listen_addr = "127.0.0.1:0".parse().expect("static address"); // ok: literal
        config
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which database backend a URL names. Anything else is refused at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What the store needs to open its pool.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: DatabaseUrl,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

/// A database URL that has been checked to name a supported backend, parsed once: the parts
/// telemetry reports (database name, server) are read here, never re-parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: String,
    backend: Backend,
    namespace: String,
    server: Option<(String, u16)>,
}

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database: the file of a SQLite URL, the database name of a PostgreSQL one.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Host and port of a PostgreSQL server (5432 when the URL names none); `None` for SQLite.
    pub fn server(&self) -> Option<(&str, u16)> {
        self.server
            .as_ref()
            .map(|(host, port)| (host.as_str(), *port))
    }
}

// The URL may hold a password: never print it.
impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.backend)
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = url::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
        let (backend, namespace, server) = match parsed.scheme() {
            // sqlite://path/to/file.db?mode=rwc: host and path together name the file.
            "sqlite" => {
                let file = s.trim_start_matches("sqlite://");
                let file = file.split('?').next().unwrap_or_default().to_owned();
                (Backend::Sqlite, file, None)
            }
            "postgres" | "postgresql" => {
                let database = parsed.path().trim_start_matches('/').to_owned();
                let server = parsed
                    .host_str()
                    .map(|host| (host.to_owned(), parsed.port().unwrap_or(5432)));
                (Backend::Postgres, database, server)
            }
            other => {
                return Err(format!(
                    "unsupported scheme `{other}`: use sqlite://… or postgres://…"
                ))
            }
        };
        Ok(Self {
            url: s.to_owned(),
            backend,
            namespace,
            server,
        })
    }
}

fn parse_byte_size(s: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e| format!("not a size such as 1MiB or 512KB ({e})"))?;
    match usize::try_from(size.as_u64()) {
        Ok(0) => Err("must be larger than 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("too large".into()),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("not a duration such as 150ms or 2s ({e})"))
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let value: f64 = s.trim().parse().map_err(|_| "not a number".to_string())?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err("must be between 0 and 1".into())
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

fn parse_millis(s: &str) -> Result<Duration, String> {
    let ms: u64 = s
        .trim()
        .parse()
        .map_err(|_| "must be a number of milliseconds".to_string())?;
    if ms == 0 {
        return Err("must be larger than 0".into());
    }
    Ok(Duration::from_millis(ms))
}

fn parse_endpoint(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s.trim()).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" => Ok(s.trim().to_owned()),
        other => Err(format!("scheme `{other}` is not http or https")),
    }
}

fn parse_metrics_exporters(s: &str) -> Result<MetricsExporters, String> {
    let mut exporters = MetricsExporters::default();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "prometheus" => exporters.prometheus = true,
            "otlp" => exporters.otlp = true,
            "none" => {}
            other => {
                return Err(format!(
                    "unknown exporter `{other}`: use prometheus, otlp or none"
                ))
            }
        }
    }
    Ok(exporters)
}

fn parse_propagators(s: &str) -> Result<Propagators, String> {
    let mut propagators = Propagators::default();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "tracecontext" => propagators.tracecontext = true,
            "baggage" => propagators.baggage = true,
            "none" => {}
            other => {
                return Err(format!(
                    "unknown propagator `{other}`: use tracecontext, baggage or none"
                ))
            }
        }
    }
    Ok(propagators)
}

/// `key=value,key2=value2` as the OTLP exporter specification has it: keys and values trimmed,
/// values URL-decoded. Anything the exporters would silently drop is refused here instead.
fn parse_headers(s: &str) -> Result<OtlpHeaders, String> {
    let mut headers = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, value)) = entry.split_once('=') else {
            return Err(format!("`{entry}` is not key=value"));
        };
        let (name, value) = (name.trim(), value.trim());
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("`{name}` is not a valid header name"));
        }
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("the value of `{name}` is not URL-encoded UTF-8"))?;
        if decoded.is_empty() {
            return Err(format!("`{name}` has an empty value"));
        }
        if http::HeaderValue::from_str(&decoded).is_err() {
            return Err(format!("the value of `{name}` is not a valid header value"));
        }
        headers.push((name.to_ascii_lowercase(), decoded.into_owned()));
    }
    Ok(OtlpHeaders(headers))
}

fn read_pem(path: &str) -> Result<PemFile, String> {
    let path = PathBuf::from(path.trim());
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(PemFile { path, pem })
}

fn parse_certificate_file(s: &str) -> Result<PemFile, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let file = read_pem(s)?;
    let certificates = CertificateDer::pem_slice_iter(&file.pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM ({e})", file.path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{} holds no PEM certificate", file.path.display()));
    }
    Ok(file)
}

fn parse_private_key_file(s: &str) -> Result<PemFile, String> {
    use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
    let file = read_pem(s)?;
    PrivateKeyDer::from_pem_slice(&file.pem)
        .map_err(|e| format!("{} holds no PEM private key ({e})", file.path.display()))?;
    Ok(file)
}

fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be larger than 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a whole number".into()),
    }
}

fn parse_log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_names_its_backend() {
        let sqlite: DatabaseUrl = "sqlite://items.db?mode=rwc".parse().unwrap();
        assert_eq!(sqlite.backend(), Backend::Sqlite);
        let pg: DatabaseUrl = "postgres://u:secret@h/db".parse().unwrap();
        assert_eq!(pg.backend(), Backend::Postgres);
        assert_eq!(pg.namespace(), "db");
        assert_eq!(pg.server(), Some(("h", 5432)));
        assert_eq!(sqlite.namespace(), "items.db");
        assert_eq!(sqlite.server(), None);
        let pg: DatabaseUrl = "postgresql://u@10.0.0.2:6543/items".parse().unwrap();
        assert_eq!(
            (pg.namespace(), pg.server()),
            ("items", Some(("10.0.0.2", 6543)))
        );
        assert!(!format!("{pg:?}").contains("secret"));
        assert!("mysql://h/db".parse::<DatabaseUrl>().is_err());
        assert!("not a url".parse::<DatabaseUrl>().is_err());
    }

    #[test]
    fn sizes_ratios_and_durations_parse_or_explain() {
        assert_eq!(parse_byte_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_byte_size("512KB"), Ok(512_000));
        assert!(parse_byte_size("lots").is_err());
        assert!(parse_byte_size("0").is_err());
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
        assert!(parse_ratio("1.5").is_err());
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn otlp_headers_are_key_value_pairs_with_url_encoded_values() {
        assert_eq!(
            parse_headers(" X-Tenant = acme%20corp ,authorization=Bearer%20a%3Db,"),
            Ok(OtlpHeaders(vec![
                ("x-tenant".into(), "acme corp".into()),
                ("authorization".into(), "Bearer a=b".into()),
            ]))
        );
        assert_eq!(parse_headers(""), Ok(OtlpHeaders(vec![])));
        let secret = parse_headers("authorization=Bearer%20s3cret").unwrap();
        assert_eq!(format!("{secret:?}"), r#"["authorization=…"]"#);
        assert_eq!(
            parse_headers("a=1,broken"),
            Err("`broken` is not key=value".into())
        );
        assert_eq!(
            parse_headers("=1"),
            Err("`` is not a valid header name".into())
        );
        assert_eq!(
            parse_headers("bad key=1"),
            Err("`bad key` is not a valid header name".into())
        );
        assert_eq!(parse_headers("a="), Err("`a` has an empty value".into()));
        assert_eq!(
            parse_headers("a=%0A"),
            Err("the value of `a` is not a valid header value".into())
        );
        assert_eq!(
            parse_headers("a=%FF"),
            Err("the value of `a` is not URL-encoded UTF-8".into())
        );
    }

    #[test]
    fn propagators_are_a_known_list_or_none() {
        let both = Propagators {
            tracecontext: true,
            baggage: true,
        };
        assert_eq!(Config::parse_from(["items-api"]).otel.propagators, both);
        assert_eq!(parse_propagators("baggage, tracecontext,baggage"), Ok(both));
        assert_eq!(
            parse_propagators("tracecontext"),
            Ok(Propagators {
                tracecontext: true,
                baggage: false
            })
        );
        assert_eq!(parse_propagators("none"), Ok(Propagators::default()));
        assert_eq!(
            parse_propagators("tracecontext,b3"),
            Err("unknown propagator `b3`: use tracecontext, baggage or none".into())
        );
    }

    #[test]
    fn pem_files_are_read_and_checked_at_parse_time() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let missing = missing.to_str().unwrap();
        assert_eq!(
            parse_certificate_file(missing),
            Err(format!(
                "cannot read {missing}: No such file or directory (os error 2)"
            ))
        );
        let text = dir.path().join("text.pem");
        std::fs::write(&text, "hello").unwrap();
        let text = text.to_str().unwrap();
        assert_eq!(
            parse_certificate_file(text),
            Err(format!("{text} holds no PEM certificate"))
        );
        assert!(parse_private_key_file(text)
            .unwrap_err()
            .starts_with(&format!("{text} holds no PEM private key")));
        let cert = dir.path().join("cert.pem");
        // A syntactically valid PEM block is enough here; rustls judges the DER at start-up.
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let file = parse_certificate_file(cert.to_str().unwrap()).unwrap();
        assert_eq!(file.path, cert);
        assert_eq!(format!("{file:?}"), format!("PemFile({})", cert.display()));
    }

    #[test]
    fn otel_settings_parse_and_resolve_endpoints() {
        assert_eq!(
            parse_metrics_exporters("prometheus, otlp"),
            Ok(MetricsExporters {
                prometheus: true,
                otlp: true
            })
        );
        assert_eq!(
            parse_metrics_exporters("none"),
            Ok(MetricsExporters::default())
        );
        assert!(parse_metrics_exporters("statsd").is_err());
        assert!(parse_endpoint("grpc://x").is_err());
        let mut otel = Config::parse_from(["items-api"]).otel;
        assert_eq!(otel.endpoint(Signal::Traces), None);
        otel.otlp_endpoint = Some("http://c:4318/".into());
        assert_eq!(
            otel.endpoint(Signal::Logs).as_deref(),
            Some("http://c:4318/v1/logs")
        );
        otel.otlp_protocol = OtlpProtocol::Grpc;
        assert_eq!(
            otel.endpoint(Signal::Metrics).as_deref(),
            Some("http://c:4318/")
        );
        otel.otlp_traces_endpoint = Some("http://t:4318/custom".into());
        assert_eq!(
            otel.endpoint(Signal::Traces).as_deref(),
            Some("http://t:4318/custom")
        );
    }
}
