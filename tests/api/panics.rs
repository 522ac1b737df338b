//! A handler that panics (`FAULT_PANIC_RATIO=1`) is answered 500 problem+json, counted and
//! traced as a 500 under its route, and the process keeps serving.

use std::time::Duration;

use opentelemetry_proto::tonic::{
    common::v1::any_value::Value as Any,
    trace::v1::{span::SpanKind, status::StatusCode, Span},
};
use serde_json::Value;

use crate::cli::{free_port, items_api, sigterm, wait_for_port};
use crate::helpers::{assert_problem, spawn_app_with, Backend};
use crate::otlp_receiver::OtlpReceiver;
use crate::prom_text::{parse, value};

fn count(samples: &[crate::prom_text::Sample], route: &str, status: &str) -> f64 {
    value(
        samples,
        "http_server_request_duration_seconds_count",
        &[
            ("http_request_method", "GET"),
            ("http_route", route),
            ("http_response_status_code", status),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_counted_500_and_the_process_keeps_serving() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.fault_panic_ratio = Some(1.0)).await;
    for _ in 0..2 {
        let problem = assert_problem(app.get("/items").await, 500).await;
        assert_eq!(
            problem["detail"], "internal error",
            "nothing of the panic leaks"
        );
    }
    // Other routes are untouched, and the connection pool and runtime are fine.
    assert_eq!(app.get("/health/ready").await.status(), 200);
    let samples = parse(&app.metrics_text().await);
    assert_eq!(count(&samples, "/items", "500"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_ends_an_error_span() {
    let receiver = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = items_api(dir.path());
    command
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("FAULT_PANIC_RATIO", "1");
    let mut child = command.spawn().unwrap();
    wait_for_port(port, &mut child);
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let response = client.get(format!("{base}/items")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    let problem: Value = response.json().await.unwrap();
    // The process is still there and serving after the panic.
    let live = client
        .get(format!("{base}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    sigterm(&child);
    assert!(child.wait().unwrap().success(), "clean exit after a panic");

    receiver
        .wait_for(Duration::from_secs(10), "the server span", |r| {
            !server_spans(r).is_empty()
        })
        .await;
    let spans = server_spans(&receiver.received);
    let failed = spans
        .iter()
        .find(|s| s.name == "GET /items")
        .expect("a GET /items span");
    assert_eq!(
        failed.status.clone().unwrap_or_default().code,
        StatusCode::Error as i32
    );
    let status = failed
        .attributes
        .iter()
        .find(|a| a.key == "http.response.status_code")
        .and_then(|a| a.value.clone()?.value);
    assert_eq!(status, Some(Any::IntValue(500)));
    let trace_id: String = failed.trace_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(problem["trace_id"], trace_id, "the 500 names its trace");
}

fn server_spans(received: &crate::otlp_receiver::Received) -> Vec<Span> {
    received
        .traces
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.resource_spans.iter())
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| s.spans.iter())
        .filter(|s| s.kind == SpanKind::Server as i32)
        .cloned()
        .collect()
}
