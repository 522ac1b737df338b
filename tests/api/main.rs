//! The one integration-test crate: every module starts real apps with `helpers::spawn_app`.
//! Tests under a `postgres` module need `ITEMS_API_TEST_POSTGRES_URL`; `just test` sets it
//! when a server is reachable and skips them, saying so, when not.

mod cli;
mod contract;
mod crud;
mod dashboards;
mod durability;
mod errors;
mod helpers;
mod metrics;
mod otlp_receiver;
mod otlp_tls;
mod panics;
mod prom_text;
mod prometheus_server;
mod properties;
mod reliability;
mod replicas;
mod stdout;
mod tcp_proxy;
mod traces;
