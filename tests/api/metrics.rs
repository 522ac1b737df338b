//! The metrics pillar (docs/DESIGN.md §6): exact counts, bounded cardinality, clean labels, a valid
//! exposition, and the same numbers in a real Prometheus.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};
use crate::prom_text::{parse, select, value, Sample};

const DURATION: &str = "http_server_request_duration_seconds";

fn count(samples: &[Sample], method: &str, route: &str, status: &str) -> f64 {
    value(
        samples,
        &format!("{DURATION}_count"),
        &[
            ("http_request_method", method),
            ("http_route", route),
            ("http_response_status_code", status),
        ],
    )
}

/// The exact mix of the issue: 7 creates, 11 reads of one id, 3 reads of a missing id,
/// 2 updates, 1 delete, 5 invalid bodies, 4 unknown paths. Returns the id read 11 times.
async fn send_the_mix(app: &TestApp) {
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            app.create_item(&format!("mix {i}"), 1.0).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    for _ in 0..11 {
        assert_eq!(app.get(&format!("/items/{}", ids[0])).await.status(), 200);
    }
    for missing in [900_001, 900_002, 900_003] {
        assert_eq!(app.get(&format!("/items/{missing}")).await.status(), 404);
    }
    for id in &ids[1..3] {
        let r = app
            .send_json(
                Method::PATCH,
                &format!("/items/{id}"),
                &json!({"quantity": 9}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        app.delete(&format!("/items/{}", ids[6])).await.status(),
        204
    );
    for bad in [
        json!({}),
        json!({"name": ""}),
        json!({"price": -1}),
        json!([1]),
        json!(7),
    ] {
        assert_eq!(app.post_item(&bad).await.status(), 422);
    }
    for path in ["/nope", "/items/1/2", "/admin/123", "/.env?x=1"] {
        assert_eq!(app.get(path).await.status(), 404);
    }
}

crate::on_both_backends!(http_db_and_business_counts_are_exact);

async fn http_db_and_business_counts_are_exact(backend: Backend) {
    let app = spawn_app(backend).await;
    send_the_mix(&app).await;
    let samples = parse(&app.metrics_text().await);

    assert_eq!(count(&samples, "POST", "/items", "201"), 7.0);
    assert_eq!(count(&samples, "GET", "/items/{id}", "200"), 11.0);
    assert_eq!(count(&samples, "GET", "/items/{id}", "404"), 3.0);
    assert_eq!(count(&samples, "PATCH", "/items/{id}", "200"), 2.0);
    assert_eq!(count(&samples, "DELETE", "/items/{id}", "204"), 1.0);
    assert_eq!(count(&samples, "POST", "/items", "422"), 5.0);
    assert_eq!(count(&samples, "GET", "unmatched", "404"), 4.0);
    let total: f64 = select(&samples, &format!("{DURATION}_count"), &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(
        total, 33.0,
        "no other request was counted (not /metrics, not /health)"
    );

    assert_eq!(value(&samples, "items_created_total", &[]), 7.0);
    assert_eq!(value(&samples, "items_read_total", &[]), 11.0);
    assert_eq!(value(&samples, "items_updated_total", &[]), 2.0);
    assert_eq!(value(&samples, "items_deleted_total", &[]), 1.0);
    assert_eq!(value(&samples, "items_stored", &[]), 6.0);

    // Every series' buckets rise monotonically and end at its _count.
    for series in select(&samples, &format!("{DURATION}_count"), &[]) {
        let mut labels: Vec<(&str, &str)> = series
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        labels.retain(|(k, _)| *k != "le");
        let buckets = select(&samples, &format!("{DURATION}_bucket"), &labels);
        assert_eq!(buckets.len(), 22, "21 bounds and +Inf for {labels:?}");
        let values: Vec<f64> = buckets.iter().map(|b| b.value).collect();
        assert!(
            values.windows(2).all(|w| w[0] <= w[1]),
            "monotonic: {values:?}"
        );
        assert_eq!(*values.last().unwrap(), series.value, "+Inf equals _count");
        let bounds: Vec<&str> = buckets.iter().map(|b| b.label("le").unwrap()).collect();
        assert_eq!(
            bounds,
            [
                "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.075", "0.1",
                "0.2", "0.25", "0.3", "0.5", "0.75", "1", "2", "2.5", "3", "5", "7.5", "10",
                "+Inf"
            ]
        );
    }

    // The store ran exactly these statements: 7 INSERT, 2 UPDATE, 1 DELETE.
    let system = if backend == Backend::Sqlite {
        "sqlite"
    } else {
        "postgresql"
    };
    let db = |op: &str| {
        value(
            &samples,
            "db_client_operation_duration_seconds_count",
            &[
                ("db_operation_name", op),
                ("db_system_name", system),
                ("db_collection_name", "items"),
            ],
        )
    };
    assert_eq!(db("INSERT"), 7.0);
    assert_eq!(db("UPDATE"), 2.0);
    assert_eq!(db("DELETE"), 1.0);
    // 11 + 3 reads by id, plus one count at start-up.
    assert_eq!(db("SELECT"), 15.0);
    let pool = |state: &str| {
        value(
            &samples,
            "db_client_connection_count",
            &[
                ("db_client_connection_state", state),
                ("db_client_connection_pool_name", "items"),
            ],
        )
    };
    assert!(pool("idle") >= 1.0, "an idle connection after the load");
    assert_eq!(pool("used"), 0.0);
    assert_eq!(value(&samples, "db_client_connection_max", &[]), 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_distinct_paths_and_ids_add_no_series() {
    let app = spawn_app(Backend::Sqlite).await;
    // One of each kind first, so every series that can exist exists.
    assert_eq!(app.get("/warm/up").await.status(), 404);
    assert_eq!(app.get("/items/1").await.status(), 404);
    let series = |text: &str| -> BTreeSet<String> {
        parse(text)
            .into_iter()
            .filter(|s| !s.name.starts_with("process_") && !s.name.starts_with("tokio_"))
            .map(|s| format!("{}{:?}", s.name, s.labels))
            .collect()
    };
    let before = series(&app.metrics_text().await);

    let client = app.client.clone();
    let base = app.address.clone();
    let tasks: Vec<_> = (0..8)
        .map(|worker| {
            let client = client.clone();
            let base = base.clone();
            tokio::spawn(async move {
                for i in 0..1250u64 {
                    let n = worker * 1_000_000 + i;
                    let path = if i % 2 == 0 {
                        format!("{base}/scan/{n}/wp-login.php?q={n}")
                    } else {
                        format!("{base}/items/{}", 10_000_000 + n)
                    };
                    let status = client.get(path).send().await.unwrap().status();
                    assert_eq!(status, 404);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let text = app.metrics_text().await;
    assert_eq!(
        series(&text),
        before,
        "10,000 distinct paths added a series"
    );
    let samples = parse(&text);
    assert_eq!(count(&samples, "GET", "unmatched", "404"), 5001.0);
    assert_eq!(count(&samples, "GET", "/items/{id}", "404"), 5001.0);
}

#[tokio::test]
async fn labels_hold_templates_never_raw_paths_ids_or_queries() {
    let app = spawn_app(Backend::Sqlite).await;
    send_the_mix(&app).await;
    for path in [
        "/health/live",
        "/health/ready",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/favicon.ico",
    ] {
        app.get(path).await;
    }
    let samples = parse(&app.metrics_text().await);
    let routes: BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| s.label("http_route"))
        .collect();
    assert_eq!(
        routes,
        BTreeSet::from(["/items", "/items/{id}", "unmatched"])
    );
    for sample in &samples {
        for (key, value) in &sample.labels {
            if matches!(key.as_str(), "service_instance_id" | "le") {
                continue;
            }
            assert!(!value.contains('?'), "query string in {key}={value}");
            assert!(
                !value.split('/').any(|seg| !seg.is_empty()
                    && seg.chars().all(|c| c.is_ascii_digit())
                    && value.contains('/')),
                "digit-only path segment in {key}={value}"
            );
            assert!(
                !value.contains("/health") && !value.contains("/metrics"),
                "{key}={value}"
            );
        }
    }
}

#[tokio::test]
async fn five_hundreds_carry_error_type_and_others_do_not() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.fault_error_ratio = Some(1.0)).await;
    for _ in 0..3 {
        assert_eq!(app.get("/items").await.status(), 500);
    }
    let samples = parse(&app.metrics_text().await);
    let errors = select(
        &samples,
        &format!("{DURATION}_count"),
        &[("error_type", "500")],
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].value, 3.0);
    assert_eq!(errors[0].label("http_route"), Some("/items"));
    let app = spawn_app(Backend::Sqlite).await;
    app.get("/items/12345").await;
    let samples = parse(&app.metrics_text().await);
    assert!(
        samples
            .iter()
            .filter(|s| s.name.starts_with("http_server_"))
            .all(|s| s.label("error_type").is_none()),
        "a 404 is not an error.type"
    );
}

#[tokio::test]
async fn metrics_content_type_and_separate_listener() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app.get("/metrics").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    let text = response.text().await.unwrap();
    let info = parse(&text)
        .into_iter()
        .find(|s| s.name == "target_info")
        .expect("target_info");
    assert_eq!(info.label("service_name"), Some("items-api"));
    assert_eq!(
        info.label("service_version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(info
        .label("service_instance_id")
        .is_some_and(|id| id.len() == 36));
    assert!(info.label("deployment_environment_name").is_some());
    // host.name and process.pid: the Sanic-style `server` and `worker` labels come from these.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(info.label("host_name"), Some(host.trim()));
    let pid = std::process::id().to_string();
    assert_eq!(info.label("process_pid"), Some(pid.as_str()));

    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.metrics_listen_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    assert_eq!(
        app.get("/metrics").await.status(),
        404,
        "not on the API port"
    );
    let port = app.metrics_port.expect("a metrics listener");
    assert_ne!(port, app.port);
    let text = app.metrics_text().await;
    assert!(text.contains("target_info"));
}

#[tokio::test]
async fn business_counters_exist_at_zero_before_any_request() {
    let app = spawn_app(Backend::Sqlite).await;
    let samples = parse(&app.metrics_text().await);
    for name in [
        "items_created_total",
        "items_read_total",
        "items_updated_total",
        "items_deleted_total",
    ] {
        let found: Vec<f64> = samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .collect();
        assert_eq!(found, [0.0], "{name}: one series at 0 from start-up");
    }
}

#[tokio::test]
async fn sdk_disabled_serves_an_empty_exposition() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.otel.sdk_disabled = true).await;
    app.create_item("quiet", 1.0).await;
    assert_eq!(app.metrics_text().await, "");
}

/// `promtool check metrics` on a live scrape. Semantic-convention names ending in `_count`
/// trip its histogram-suffix lint; those are the contract (docs/DESIGN.md §6), so they are the only
/// findings allowed, listed by name.
#[tokio::test]
async fn promtool_accepts_the_exposition() {
    const ALLOWED: [&str; 3] = [
        "db_client_connection_count",
        "process_thread_count",
        "process_unix_file_descriptor_count",
    ];
    let app = spawn_app(Backend::Sqlite).await;
    send_the_mix(&app).await;
    let text = app.metrics_text().await;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool on PATH (Debian package `prometheus`)");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let findings = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    let unexpected: Vec<&str> = findings
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !ALLOWED
                .iter()
                .any(|name| l.starts_with(&format!("{name} ")))
        })
        .collect();
    assert!(unexpected.is_empty(), "promtool findings: {unexpected:#?}");
    // The exceptions are exact: each one is still reported, none is stale.
    for name in ALLOWED {
        assert!(
            findings.contains(&format!("{name} non-histogram")),
            "{name} no longer flagged: {findings}"
        );
    }
}

/// A real Prometheus scrapes the app every second; after the load and one more scrape it holds
/// exactly what was sent. Raw counter values, since `increase()` extrapolates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_records_exactly_what_was_sent() {
    use crate::prometheus_server::{by_labels, Prometheus, Target};
    let app = spawn_app(Backend::Sqlite).await;
    let prometheus = Prometheus::start(
        &[Target {
            job: "items-api".into(),
            address: format!("127.0.0.1:{}", app.port),
        }],
        &[],
    )
    .await;
    send_the_mix(&app).await;
    prometheus.wait_for_fresh_scrape().await;

    let result = prometheus
        .query("sum by (http_route, http_response_status_code) (http_server_request_duration_seconds_count)")
        .await;
    let got = by_labels(&result, &["http_route", "http_response_status_code"]);
    let key = |r: &str, s: &str| vec![r.to_owned(), s.to_owned()];
    let expected = std::collections::BTreeMap::from([
        (key("/items", "201"), 7.0),
        (key("/items/{id}", "200"), 13.0), // 11 GET + 2 PATCH
        (key("/items/{id}", "404"), 3.0),
        (key("/items/{id}", "204"), 1.0),
        (key("/items", "422"), 5.0),
        (key("unmatched", "404"), 4.0),
    ]);
    assert_eq!(got, expected);
    let created = prometheus.query("items_created_total").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["value"][1], "7");
    assert_eq!(created[0]["metric"]["job"], "items-api");
}

mod otlp_push {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use opentelemetry_proto::tonic::{
        collector::metrics::v1::ExportMetricsServiceRequest, common::v1::any_value::Value as Any,
        metrics::v1::metric::Data,
    };

    use super::send_the_mix;
    use crate::helpers::{spawn_app_with, Backend};
    use crate::otlp_receiver::{OtlpReceiver, Received};
    use items_api::config::{MetricsExporters, OtlpProtocol};

    /// Histogram point counts of `http.server.request.duration` in one export, summed by
    /// (route, status) like the Prometheus query.
    fn durations(export: &ExportMetricsServiceRequest) -> BTreeMap<(String, i64), u64> {
        let mut counts = BTreeMap::new();
        for metric in export
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .filter(|m| m.name == "http.server.request.duration")
        {
            let Some(Data::Histogram(histogram)) = &metric.data else {
                panic!("not a histogram")
            };
            for point in &histogram.data_points {
                let attr = |key: &str| {
                    point
                        .attributes
                        .iter()
                        .find(|a| a.key == key)
                        .and_then(|a| a.value.clone()?.value)
                };
                let (Some(Any::StringValue(route)), Some(Any::IntValue(status))) =
                    (attr("http.route"), attr("http.response.status_code"))
                else {
                    panic!("route and status attributes")
                };
                *counts.entry((route, status)).or_default() += point.count;
            }
        }
        counts
    }

    fn newest_with_http(received: &Received) -> Option<ExportMetricsServiceRequest> {
        received
            .metrics
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|e| !durations(e).is_empty())
            .cloned()
    }

    async fn pushes_the_same_metrics(protocol: OtlpProtocol) {
        let receiver = OtlpReceiver::start().await;
        let endpoint = match protocol {
            OtlpProtocol::Grpc => receiver.grpc_endpoint.clone(),
            OtlpProtocol::HttpProtobuf => receiver.http_endpoint.clone(),
        };
        let app = spawn_app_with(Backend::Sqlite, |c| {
            c.otel.metrics_exporter = MetricsExporters {
                prometheus: true,
                otlp: true,
            };
            c.otel.otlp_endpoint = Some(endpoint);
            c.otel.otlp_protocol = protocol;
            c.otel.metric_export_interval = Duration::from_millis(200);
        })
        .await;
        send_the_mix(&app).await;
        receiver
            .wait_for(Duration::from_secs(20), "the whole mix", |r| {
                newest_with_http(r).is_some_and(|e| durations(&e).values().sum::<u64>() == 33)
            })
            .await;
        let export = newest_with_http(&receiver.received).unwrap();
        let expected = BTreeMap::from([
            (("/items".to_owned(), 201), 7),
            (("/items/{id}".to_owned(), 200), 13),
            (("/items/{id}".to_owned(), 404), 3),
            (("/items/{id}".to_owned(), 204), 1),
            (("/items".to_owned(), 422), 5),
            (("unmatched".to_owned(), 404), 4),
        ]);
        assert_eq!(durations(&export), expected);

        // The same instruments, by their OTel names, as /metrics shows by Prometheus names.
        let names: BTreeSet<String> = export
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| m.name.clone())
            .collect();
        for name in [
            "http.server.request.duration",
            "http.server.active_requests",
            "http.server.request.body.size",
            "http.server.response.body.size",
            "db.client.operation.duration",
            "db.client.connection.count",
            "db.client.connection.max",
            "items.created",
            "items.stored",
            "process.cpu.time",
            "process.memory.usage",
            "tokio.runtime.workers",
        ] {
            assert!(names.contains(name), "{name} missing from OTLP: {names:?}");
        }
        let resource = export.resource_metrics[0].resource.clone().unwrap();
        let service = resource
            .attributes
            .iter()
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.clone()?.value);
        assert_eq!(service, Some(Any::StringValue("items-api".into())));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_http_protobuf_push_carries_the_same_names_and_counts() {
        pushes_the_same_metrics(OtlpProtocol::HttpProtobuf).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_grpc_push_carries_the_same_names_and_counts() {
        pushes_the_same_metrics(OtlpProtocol::Grpc).await;
    }
}
