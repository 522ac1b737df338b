//! Property tests: whatever JSON, ids, paging or body sizes a client sends, the answer is 2xx or
//! 4xx, never 5xx, and the service keeps serving.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::Value;

use crate::helpers::{spawn_app, Backend, TestApp};

/// Random JSON of any shape, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,300}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::hash_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("price".to_owned()),
                    Just("quantity".to_owned()),
                    Just("description".to_owned()),
                    ".{0,20}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

fn assert_not_5xx(status: reqwest::StatusCode, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        status.is_success() || status.is_client_error(),
        "{} answered {}",
        what,
        status
    );
    Ok(())
}

async fn still_healthy(app: &TestApp) {
    assert_eq!(app.get("/health/ready").await.status(), 200);
    assert_eq!(
        app.create_item("still here", 1.0).await["name"],
        "still here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_json_bodies_never_get_a_5xx() {
    let app = spawn_app(Backend::Sqlite).await;
    let existing = app.create_item("target", 1.0).await;
    let item_path = format!("/items/{}", existing["id"]);
    let handle = tokio::runtime::Handle::current();
    let mut runner = runner(300);
    let result = tokio::task::block_in_place(|| {
        runner.run(&(any_json(), 0..3usize), |(body, verb)| {
            let (method, path) = match verb {
                0 => (reqwest::Method::POST, "/items"),
                1 => (reqwest::Method::PUT, item_path.as_str()),
                _ => (reqwest::Method::PATCH, item_path.as_str()),
            };
            let status = handle
                .block_on(app.send_json(method.clone(), path, &body))
                .status();
            assert_not_5xx(status, &format!("{method} {path} {body}"))
        })
    });
    result.unwrap();
    still_healthy(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_ids_and_paging_never_get_a_5xx() {
    let app = spawn_app(Backend::Sqlite).await;
    let handle = tokio::runtime::Handle::current();
    let mut runner = runner(300);
    // Characters that are safe in a URL path or query once percent-encoded by hand below.
    let text = "[a-zA-Z0-9%._~-]{0,40}|-?[0-9]{1,30}";
    let result = tokio::task::block_in_place(|| {
        runner.run(&(text, text, text), |(id, limit, offset)| {
            let id_path = format!("/items/{id}");
            let status = handle.block_on(app.get(&id_path)).status();
            assert_not_5xx(status, &id_path)?;
            let status = handle.block_on(app.delete(&id_path)).status();
            assert_not_5xx(status, &format!("DELETE {id_path}"))?;
            let list = format!("/items?limit={limit}&offset={offset}");
            let status = handle.block_on(app.get(&list)).status();
            assert_not_5xx(status, &list)
        })
    });
    result.unwrap();
    still_healthy(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_413() {
    let app = spawn_app_with_limit(4096).await;
    let handle = tokio::runtime::Handle::current();
    let mut runner = runner(40);
    let result = tokio::task::block_in_place(|| {
        runner.run(&(4097usize..200_000), |size| {
            let body = format!("{{\"name\":\"{}\",\"price\":1}}", "x".repeat(size));
            let response = handle.block_on(
                app.client
                    .post(app.url("/items"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send(),
            );
            let status = response.expect("sent").status();
            prop_assert_eq!(status.as_u16(), 413);
            Ok(())
        })
    });
    result.unwrap();
    let page: Value = app.get("/items?count=true").await.json().await.unwrap();
    assert_eq!(page["total"], 0, "nothing oversized was stored");
    still_healthy(&app).await;
}

async fn spawn_app_with_limit(limit: usize) -> TestApp {
    crate::helpers::spawn_app_with(Backend::Sqlite, |c| c.body_limit = limit).await
}
