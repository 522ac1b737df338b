//! The CRUD contract of docs/DESIGN.md §5, on both backends.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, Backend};

crate::on_both_backends!(
    create_returns_201_with_location_and_the_item,
    get_returns_what_was_created,
    put_replaces_every_field,
    patch_changes_only_given_fields,
    delete_removes_the_item,
    paging_is_exact_over_45_items,
    cursor_paging_visits_every_item_once,
    missing_items_are_404_for_every_verb,
);

async fn create_returns_201_with_location_and_the_item(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .post_item(
            &json!({"name": "  Desk lamp ", "description": "brass", "price": 49.9, "quantity": 3}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let item: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/items/{}", item["id"]));
    assert_eq!(item["name"], "Desk lamp");
    assert_eq!(item["description"], "brass");
    assert_eq!(item["price"], 49.9);
    assert_eq!(item["quantity"], 3);
    assert_eq!(item["created_at"], item["updated_at"]);
    assert!(chrono::DateTime::parse_from_rfc3339(item["created_at"].as_str().unwrap()).is_ok());
}

async fn get_returns_what_was_created(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_item("Chair", 20.0).await;
    let response = app.get(&format!("/items/{}", created["id"])).await;
    assert_eq!(response.status(), 200);
    let fetched: Value = response.json().await.unwrap();
    assert_eq!(fetched, created);
    assert_eq!(fetched["quantity"], 0);
    assert_eq!(fetched["description"], Value::Null);
}

async fn put_replaces_every_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .post_item(&json!({"name": "Table", "description": "oak", "price": 100, "quantity": 2}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let path = format!("/items/{}", created["id"]);
    let response = app
        .send_json(
            Method::PUT,
            &path,
            &json!({"name": "Round table", "price": 120.5}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let replaced: Value = response.json().await.unwrap();
    assert_eq!(replaced["id"], created["id"]);
    assert_eq!(replaced["name"], "Round table");
    assert_eq!(replaced["price"], 120.5);
    // A full replace: fields left out go back to their defaults.
    assert_eq!(replaced["description"], Value::Null);
    assert_eq!(replaced["quantity"], 0);
    assert_eq!(replaced["created_at"], created["created_at"]);
    assert_eq!(
        app.get(&path).await.json::<Value>().await.unwrap(),
        replaced
    );
}

async fn patch_changes_only_given_fields(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .post_item(&json!({"name": "Shelf", "description": "pine", "price": 30, "quantity": 5}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let path = format!("/items/{}", created["id"]);
    let patched: Value = app
        .send_json(Method::PATCH, &path, &json!({"quantity": 7}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(patched["quantity"], 7);
    assert_eq!(patched["name"], "Shelf");
    assert_eq!(patched["description"], "pine");
    assert_eq!(patched["price"], 30.0);
    let cleared: Value = app
        .send_json(Method::PATCH, &path, &json!({"description": null}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["description"], Value::Null);
    assert_eq!(cleared["quantity"], 7);
}

async fn delete_removes_the_item(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_item("Rug", 15.0).await;
    let path = format!("/items/{}", created["id"]);
    let response = app.delete(&path).await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.text().await.unwrap(), "");
    assert_problem(app.get(&path).await, 404).await;
    assert_problem(app.delete(&path).await, 404).await;
}

async fn paging_is_exact_over_45_items(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..45 {
        app.create_item(&format!("item {i:02}"), f64::from(i)).await;
    }
    let mut seen = Vec::new();
    for (offset, expected) in [(0, 20), (20, 20), (40, 5), (45, 0)] {
        let page: Value = app
            .get(&format!("/items?limit=20&offset={offset}&count=true"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(page["total"], 45);
        assert_eq!(page["limit"], 20);
        assert_eq!(page["offset"], offset);
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), expected, "page at offset {offset}");
        seen.extend(items.iter().map(|i| i["name"].as_str().unwrap().to_owned()));
    }
    let expected: Vec<String> = (0..45).map(|i| format!("item {i:02}")).collect();
    assert_eq!(seen, expected, "every item once, oldest first");
    let default_page: Value = app.get("/items").await.json().await.unwrap();
    assert_eq!(default_page["limit"], 20);
    assert_eq!(default_page["items"].as_array().unwrap().len(), 20);
    // Counting reads the whole table: only on request.
    assert!(default_page.get("total").is_none(), "{default_page}");
}

async fn cursor_paging_visits_every_item_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut ids = Vec::new();
    for i in 0..45 {
        ids.push(app.create_item(&format!("item {i:02}"), 1.0).await["id"].clone());
    }
    // A deleted item leaves no hole in a page: the keyset skips it.
    app.delete(&format!("/items/{}", ids.remove(30))).await;
    let mut seen = Vec::new();
    let mut url = "/items?limit=20".to_owned();
    let mut pages = 0;
    loop {
        let response = app.get(&url).await;
        assert_eq!(response.status(), 200, "{url}");
        let link = response
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_owned());
        let page: Value = response.json().await.unwrap();
        pages += 1;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].clone()),
        );
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(link, Some(format!("<{next}>; rel=\"next\"")));
                let cursor = page["next_cursor"].as_str().unwrap();
                assert_eq!(next, format!("/items?limit=20&cursor={cursor}"));
                url = next.to_owned();
            }
            None => {
                assert_eq!(link, None, "no Link on the last page");
                assert!(page["next_cursor"].is_null());
                break;
            }
        }
    }
    assert_eq!(pages, 3, "44 items in pages of 20");
    assert_eq!(seen, ids, "every item once, oldest first");

    // A cursor and an offset: the offset counts from the cursor.
    let first: Value = app.get("/items?limit=5").await.json().await.unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let skipped: Value = app
        .get(&format!("/items?limit=5&offset=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(skipped["items"][0]["id"], ids[7]);
    assert_eq!(skipped["offset"], 2);

    // A page that ends exactly at the last item says so: no next page to fetch.
    let exact: Value = app.get("/items?limit=44").await.json().await.unwrap();
    assert_eq!(exact["items"].as_array().unwrap().len(), 44);
    assert!(exact["next"].is_null(), "{exact}");

    // Cursors are checked: anything this service did not give out is a 422, never a 5xx.
    for bad in [
        "x",
        "00000000000000FF",
        "0000000000000000ff",
        "%00",
        "-1",
        "../etc",
    ] {
        let problem = assert_problem(app.get(&format!("/items?cursor={bad}")).await, 422).await;
        assert_eq!(problem["errors"][0]["field"], "cursor", "{bad}");
    }
    // A well-formed cursor past the end is simply an empty last page.
    let past: Value = app
        .get("/items?cursor=ffffffffffffffff")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(past["items"].as_array().unwrap().len(), 0);
    assert!(past["next"].is_null());
}

async fn missing_items_are_404_for_every_verb(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = json!({"name": "x", "price": 1});
    assert_problem(app.get("/items/999999").await, 404).await;
    assert_problem(
        app.send_json(Method::PUT, "/items/999999", &body).await,
        404,
    )
    .await;
    assert_problem(
        app.send_json(Method::PATCH, "/items/999999", &body).await,
        404,
    )
    .await;
    assert_problem(app.delete("/items/999999").await, 404).await;
}
