//! Every error status of docs/DESIGN.md §5 is produced here and answered as problem+json.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, Backend};

fn fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app
        .client
        .post(app.url("/items"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 400).await;
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .starts_with("malformed JSON"));
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    let app = spawn_app(Backend::Sqlite).await;
    let body = r#"{"name":"a","price":1}"#;
    let text = app
        .client
        .post(app.url("/items"))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_problem(text, 415).await;
    let none = app
        .client
        .post(app.url("/items"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_problem(none, 415).await;
}

#[tokio::test]
async fn body_over_the_limit_is_413_and_nothing_is_stored() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.body_limit = 1024).await;
    let big = json!({"name": "big", "price": 1, "description": "x".repeat(2000)});
    let problem = assert_problem(app.post_item(&big).await, 413).await;
    assert_eq!(problem["detail"], "request body is larger than 1024 bytes");
    let created = app.create_item("small", 1.0).await;
    let path = format!("/items/{}", created["id"]);
    assert_problem(app.send_json(Method::PUT, &path, &big).await, 413).await;
    assert_problem(app.send_json(Method::PATCH, &path, &big).await, 413).await;
    let page: Value = app.get("/items?count=true").await.json().await.unwrap();
    assert_eq!(page["total"], 1);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.body_limit = 1024).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b' '; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = app
        .client
        .post(app.url("/items"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_problem(response, 413).await;
}

#[tokio::test]
async fn invalid_fields_are_422_listing_every_one() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app
        .post_item(
            &json!({"name": "", "price": -3, "quantity": 2.5, "description": 7, "colour": "red"}),
        )
        .await;
    let problem = assert_problem(response, 422).await;
    assert_eq!(
        fields(&problem),
        ["name", "description", "price", "quantity", "colour"]
    );
    assert_eq!(problem["type"], "urn:items-api:problem:validation");

    let problem = assert_problem(app.post_item(&json!({})).await, 422).await;
    assert_eq!(fields(&problem), ["name", "price"]);
    let problem = assert_problem(app.post_item(&json!([1, 2, 3])).await, 422).await;
    assert_eq!(fields(&problem), ["$"]);
    let long = "n".repeat(201);
    let problem =
        assert_problem(app.post_item(&json!({"name": long, "price": 1})).await, 422).await;
    assert_eq!(fields(&problem), ["name"]);

    let created = app.create_item("ok", 1.0).await;
    let path = format!("/items/{}", created["id"]);
    let problem = assert_problem(
        app.send_json(
            Method::PATCH,
            &path,
            &json!({"price": "free", "name": null}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(fields(&problem), ["name", "price"]);
    let unchanged: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(unchanged, created);
}

#[tokio::test]
async fn bad_paging_is_422_and_unparsable_paging_is_400() {
    let app = spawn_app(Backend::Sqlite).await;
    let problem = assert_problem(app.get("/items?limit=0&offset=-1").await, 422).await;
    assert_eq!(fields(&problem), ["limit", "offset"]);
    let problem = assert_problem(app.get("/items?limit=101").await, 422).await;
    assert_eq!(fields(&problem), ["limit"]);
    assert_problem(app.get("/items?limit=ten").await, 400).await;
    assert_problem(app.get("/items?offset=99999999999999999999999").await, 400).await;
}

#[tokio::test]
async fn bad_ids_are_400_and_unknown_ones_404() {
    let app = spawn_app(Backend::Sqlite).await;
    let problem = assert_problem(app.get("/items/abc").await, 400).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("`id`"),
        "{problem}"
    );
    assert_problem(app.get("/items/99999999999999999999999").await, 400).await;
    assert_problem(app.get("/items/-1").await, 404).await;
    assert_problem(app.get("/items/0").await, 404).await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let app = spawn_app(Backend::Sqlite).await;
    assert_problem(app.get("/nope").await, 404).await;
    assert_problem(app.get("/items/1/extra").await, 404).await;
    let response = app
        .client
        .request(Method::TRACE, app.url("/items"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 405).await;
    let response = app.client.post(app.url("/items/1")).send().await.unwrap();
    assert_problem(response, 405).await;
}

#[tokio::test]
async fn health_probes_answer_and_docs_are_served() {
    let app = spawn_app(Backend::Sqlite).await;
    assert_eq!(app.get("/health/live").await.status(), 200);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(spec["info"]["title"], "items-api");
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.contains_key("/items") && paths.contains_key("/items/{id}"));
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
}
