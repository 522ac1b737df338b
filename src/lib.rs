//! items-api: an items CRUD service that is observable by construction.
//! `startup::Application` is the entry point for `main` and for the integration tests.

pub mod api;
pub mod config;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use startup::{Application, StartupError};
