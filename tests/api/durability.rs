//! Data outlives the process: a graceful restart on the same SQLite file keeps every item.

use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_on, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_survive_a_restart_on_the_sqlite_file() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            app.create_item(&format!("kept {i}"), f64::from(i) + 0.5)
                .await,
        );
    }
    let db = app.stop().await;
    assert!(db.sqlite_path().unwrap().exists());

    let app = spawn_app_on(db, |_| {}).await;
    let page: Value = app.get("/items?count=true").await.json().await.unwrap();
    assert_eq!(page["total"], 5);
    assert_eq!(page["items"].as_array().unwrap(), &created);
    // Ids keep counting from where they were.
    let next = app.create_item("after restart", 1.0).await;
    assert_eq!(
        next["id"].as_i64().unwrap(),
        created[4]["id"].as_i64().unwrap() + 1
    );
}
