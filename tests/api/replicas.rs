//! Replicas and images: `items-api migrate`, `items-api healthcheck`, and several instances
//! starting at once on one empty database (the migrations take a lock, so all of them start).

use std::{
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use crate::cli::{free_port, items_api, sigterm};
use crate::helpers::{Backend, TestDb};

/// `items-api healthcheck` against `port`: its exit code and stderr.
fn healthcheck(dir: &Path, port: u16) -> (i32, String) {
    let output = items_api(dir)
        .arg("healthcheck")
        .env("LISTEN_ADDR", format!("0.0.0.0:{port}"))
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn serve(dir: &Path, database_url: &str, port: u16) -> Child {
    let mut command: Command = items_api(dir);
    command
        .env("DATABASE_URL", database_url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("OTEL_TRACES_EXPORTER", "none");
    command.spawn().unwrap()
}

/// Polls `healthcheck` until it passes; fails with the instance's stderr if it exits first.
fn wait_ready(dir: &Path, port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if healthcheck(dir, port).0 == 0 {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "instance on {port} exited with {status}: {}",
                stderr_of(child)
            );
        }
        assert!(
            Instant::now() < deadline,
            "instance on {port} never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    err
}

fn stop(children: Vec<Child>) {
    for child in &children {
        sigterm(child);
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn healthcheck_passes_on_a_ready_instance_and_fails_when_nothing_listens() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Nothing listens yet: non-zero, one line, quickly.
    let started = Instant::now();
    let (code, stderr) = healthcheck(dir.path(), port);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("items-api: not ready: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("items.db").display()
    );
    let mut child = serve(dir.path(), &url, port);
    wait_ready(dir.path(), port, &mut child);
    // LISTEN_ADDR 0.0.0.0 is probed through 127.0.0.1.
    assert_eq!(healthcheck(dir.path(), port).0, 0);
    stop(vec![child]);
    assert_eq!(healthcheck(dir.path(), port).0, 1, "stopped: not ready");
}

#[test]
fn migrate_applies_the_schema_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("items.db");
    let output = items_api(dir.path())
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", file.display()),
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "items-api: migrations applied\n"
    );
    assert!(file.exists());
    // Again: nothing to do, still success.
    let again = items_api(dir.path())
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", file.display()),
        )
        .output()
        .unwrap();
    assert!(again.status.success(), "{again:?}");
    // A database that cannot be reached: one line, non-zero.
    let output = items_api(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", "postgres://u:secret@127.0.0.1:1/db")
        .env("DB_ACQUIRE_TIMEOUT", "1s")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("items-api: cannot migrate the database"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
}

mod postgres {
    use super::*;

    /// Four instances of the real binary, started at the same moment on an empty database.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn four_instances_started_at_once_on_an_empty_database_all_become_ready() {
        let db = TestDb::new(Backend::Postgres).await;
        let url = db.url.as_str().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
        let mut children: Vec<Child> = ports
            .iter()
            .map(|&port| serve(dir.path(), &url, port))
            .collect();
        for (child, &port) in children.iter_mut().zip(&ports) {
            wait_ready(dir.path(), port, child);
        }
        // Every one of them serves the same table.
        let client = reqwest::Client::new();
        for (i, port) in ports.iter().enumerate() {
            let response = client
                .post(format!("http://127.0.0.1:{port}/items"))
                .json(&serde_json::json!({"name": format!("from {i}"), "price": 1}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
        }
        let page: serde_json::Value = client
            .get(format!("http://127.0.0.1:{}/items?count=true", ports[0]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["total"], 4);
        stop(children);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_runs_on_postgres_before_the_service() {
        let db = TestDb::new(Backend::Postgres).await;
        let dir = tempfile::tempdir().unwrap();
        let output = items_api(dir.path())
            .arg("migrate")
            .env("DATABASE_URL", db.url.as_str())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let port = free_port();
        let mut child = serve(dir.path(), db.url.as_str(), port);
        wait_ready(dir.path(), port, &mut child);
        stop(vec![child]);
    }
}
