//! `spawn_app`: the real application on port 0 over a real database, one per test.
//! SQLite gets a fresh file in a temp dir; PostgreSQL a fresh database on the server named by
//! `ITEMS_API_TEST_POSTGRES_URL`, dropped when the test ends.

use std::{path::PathBuf, time::Duration};

use items_api::{config::DatabaseUrl, Application, Config};
use reqwest::Response;
use serde_json::{json, Value};
use tokio::{sync::oneshot, task::JoinHandle};

pub const POSTGRES_ENV: &str = "ITEMS_API_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that lives as long as the test: a temp SQLite file, or a PostgreSQL database.
pub struct TestDb {
    pub url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("items.db").display()
                );
                Self {
                    url: url.parse().expect("sqlite url"),
                    _dir: Some(dir),
                    postgres: None,
                }
            }
            Backend::Postgres => {
                let admin = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
                    panic!("{POSTGRES_ENV} is not set: the PostgreSQL tests need a server (`just test` skips them without it)")
                });
                let name = format!("items_test_{}", uuid::Uuid::new_v4().simple());
                admin_exec(&admin, &format!("CREATE DATABASE {name}")).await;
                let mut url = url::Url::parse(&admin).expect("postgres admin url");
                url.set_path(&name);
                Self {
                    url: url.as_str().parse().expect("postgres url"),
                    _dir: None,
                    postgres: Some((admin, name)),
                }
            }
        }
    }

    /// The SQLite file, for tests that look at it.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self._dir.as_ref().map(|d| d.path().join("items.db"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.postgres.take() {
            // Drop runs outside async; a short-lived runtime on its own thread does the cleanup.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(admin_exec(
                        &admin,
                        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    ))
            })
            .join();
        }
    }
}

async fn admin_exec(admin_url: &str, sql: &str) {
    use sea_orm::{ConnectionTrait, Database};
    let db = Database::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {POSTGRES_ENV}: {e}"));
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"));
    let _ = db.close().await;
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub metrics_port: Option<u16>,
    pub client: reqwest::Client,
    pub db: TestDb,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(TestDb::new(backend).await, configure).await
}

/// Starts an app on an existing database (to restart on the same data).
pub async fn spawn_app_on(db: TestDb, configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::for_tests(db.url.clone());
    configure(&mut config);
    let app = Application::build(config)
        .await
        .expect("application builds");
    let port = app.port();
    let metrics_port = app.metrics_port();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        metrics_port,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        db,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn send_json(&self, method: reqwest::Method, path: &str, body: &Value) -> Response {
        self.client
            .request(method, self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_item(&self, body: &Value) -> Response {
        self.send_json(reqwest::Method::POST, "/items", body).await
    }

    /// Creates an item and returns its JSON, failing the test if it was not a 201.
    pub async fn create_item(&self, name: &str, price: f64) -> Value {
        let response = self.post_item(&json!({"name": name, "price": price})).await;
        assert_eq!(response.status(), 201, "creating {name}");
        response.json().await.expect("item json")
    }

    pub async fn metrics_text(&self) -> String {
        let port = self.metrics_port.unwrap_or(self.port);
        let response = self
            .client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        response.text().await.expect("metrics text")
    }

    /// Graceful stop: in-flight requests finish, the pool closes. Returns the database.
    pub async fn stop(mut self) -> TestDb {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
        // `self` owns the database; hand it over without running its Drop.
        std::mem::replace(
            &mut self.db,
            TestDb {
                url: "sqlite://unused".parse().expect("url"),
                _dir: None,
                postgres: None,
            },
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Asserts a problem+json answer with the given status, and returns its body.
pub async fn assert_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        content_type, "application/problem+json",
        "content type of a {status}"
    );
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status, "status in body: {body}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "title: {body}"
    );
    assert!(
        body["type"].as_str().is_some_and(|t| !t.is_empty()),
        "type: {body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "detail: {body}"
    );
    body
}

/// Runs an async test body on SQLite, and on PostgreSQL as a `postgres` test.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}
