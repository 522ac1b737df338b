//! Runtime configuration: every setting is a `--flag` and an environment variable (DESIGN §7).
//! Values are parsed and checked here, so a bad value stops start-up before anything is opened.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use clap::{Parser, ValueEnum};

/// The `items-api` command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "items-api", version, about = "Items CRUD API, observable by construction")]
pub struct Config {
    /// `sqlite://…` or `postgres://…`; migrations run at start.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://items.db?mode=rwc", value_parser = DatabaseUrl::from_str)]
    pub database_url: DatabaseUrl,

    /// Address of the API (and of `/metrics` unless `METRICS_LISTEN_ADDR` is set).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8000")]
    pub listen_addr: SocketAddr,

    /// Serve `/metrics` on its own listener instead of the API port.
    #[arg(long, env = "METRICS_LISTEN_ADDR")]
    pub metrics_listen_addr: Option<SocketAddr>,

    /// Log format on stdout.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long = "log-filter", env = "RUST_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub log_filter: String,

    /// Largest request body accepted; larger ones get 413.
    #[arg(long, env = "BODY_LIMIT", default_value = "1MiB", value_parser = parse_byte_size)]
    pub body_limit: usize,

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

    /// Delay added to every `/items*` request (`150ms`, `1s`), for demos and alert tests.
    #[arg(long, env = "FAULT_DELAY", value_parser = parse_duration)]
    pub fault_delay: Option<Duration>,
}

impl Config {
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

/// A database URL that has been checked to name a supported backend.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: String,
    backend: Backend,
}

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
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
        let backend = match parsed.scheme() {
            "sqlite" => Backend::Sqlite,
            "postgres" | "postgresql" => Backend::Postgres,
            other => {
                return Err(format!(
                    "unsupported scheme `{other}`: use sqlite://… or postgres://…"
                ))
            }
        };
        Ok(Self {
            url: s.to_owned(),
            backend,
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
    humantime::parse_duration(s.trim()).map_err(|e| format!("not a duration such as 150ms or 2s ({e})"))
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let value: f64 = s.trim().parse().map_err(|_| "not a number".to_string())?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err("must be between 0 and 1".into())
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
}
