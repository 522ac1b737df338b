//! Storage of items through sea-orm. This is the only code that talks SQL: handlers see
//! `ItemStore` methods and plain structs, never a backend or a statement.

mod entity;
mod migrations;
mod queries;

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

use crate::config::{Backend, StoreConfig};
use crate::telemetry::db::{DbTelemetry, PoolState};

pub use entity::Model as Item;
pub use queries::{ItemChanges, NewItem, Page, PageRequest};

/// Longest item name, in characters after trimming; also the width of its column.
pub const NAME_MAX: usize = 200;
/// Longest description, in characters.
pub const DESCRIPTION_MAX: usize = 2000;

/// What a store call can fail with, as far as a caller needs to know.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be had in time, or the server is gone: worth retrying later.
    #[error("database unavailable: {0}")]
    Unavailable(DbErr),
    /// Anything else the database refused.
    #[error("database error: {0}")]
    Other(DbErr),
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        let unavailable = matches!(err, DbErr::ConnectionAcquire(_) | DbErr::Conn(_))
            || matches!(&err, DbErr::Exec(e) | DbErr::Query(e) if is_connection_error(&e.to_string()));
        if unavailable {
            StoreError::Unavailable(err)
        } else {
            StoreError::Other(err)
        }
    }
}

// sqlx reports a dropped server as an I/O or protocol error wrapped in the runtime error text.
fn is_connection_error(message: &str) -> bool {
    const SIGNS: [&str; 6] = [
        "error communicating with database",
        "connection refused",
        "connection reset",
        "broken pipe",
        "terminating connection",
        "pool timed out",
    ];
    let message = message.to_ascii_lowercase();
    SIGNS.iter().any(|sign| message.contains(sign))
}

#[derive(Clone)]
pub struct ItemStore {
    db: DatabaseConnection,
    telemetry: DbTelemetry,
}

impl ItemStore {
    /// Applies the migrations (once, whoever else starts at the same time), connects, and
    /// returns a store ready to serve.
    pub async fn connect(config: &StoreConfig, telemetry: DbTelemetry) -> Result<Self, DbErr> {
        migrate(config).await?;
        let db = Database::connect(connect_options(config, config.max_connections)).await?;
        Ok(Self { db, telemetry })
    }

    /// Whether the database answers a trivial statement right now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(StoreError::from)
    }

    /// Pool occupancy, for the connection gauges.
    pub fn pool_state(&self) -> PoolState {
        match self.db.get_database_backend() {
            sea_orm::DbBackend::Sqlite => {
                let pool = self.db.get_sqlite_connection_pool();
                pool_state(
                    pool.size(),
                    pool.num_idle(),
                    pool.options().get_max_connections(),
                )
            }
            sea_orm::DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                pool_state(
                    pool.size(),
                    pool.num_idle(),
                    pool.options().get_max_connections(),
                )
            }
            _ => PoolState::default(),
        }
    }

    pub fn backend(&self) -> sea_orm::DbBackend {
        self.db.get_database_backend()
    }

    /// Closes every pooled connection; called once the server has drained.
    pub async fn close(&self) {
        let _ = self.db.close_by_ref().await;
    }
}

/// Applies pending migrations and closes its connection: `items-api migrate`, and the first
/// step of every start.
pub async fn migrate(config: &StoreConfig) -> Result<(), DbErr> {
    // One connection: the migration lock belongs to the connection that takes it.
    let db = Database::connect(connect_options(config, 1)).await?;
    let result = migrations::apply_locked(&db).await;
    let _ = db.close().await;
    result
}

fn connect_options(config: &StoreConfig, max_connections: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(config.url.as_str());
    options
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(config.acquire_timeout)
        .connect_timeout(config.acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
        // Per-query INFO lines from sqlx are noise; spans and metrics carry the same facts.
        .sqlx_logging(false);
    if config.url.backend() == Backend::Sqlite {
        options.map_sqlx_sqlite_opts(|opts| {
            // WAL lets readers run beside the writer; NORMAL sync keeps committed rows
            // across a process crash (the WAL is written before commit returns).
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    }
    options
}

fn pool_state(size: u32, idle: usize, max: u32) -> PoolState {
    let idle = idle as u64;
    PoolState {
        used: u64::from(size).saturating_sub(idle),
        idle,
        max: u64::from(max),
    }
}
