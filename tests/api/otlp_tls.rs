//! OTLP to a backend over TLS, as a hosted backend or a Collector behind TLS would be reached:
//! the real binary exports spans, log records and metrics over gRPC and over HTTP/protobuf to
//! the in-process receiver serving a certificate from a CA made at test time, with a client
//! certificate (mutual TLS), extra headers and gzip. With a CA that did not sign the server's
//! certificate, requests are still answered, nothing is delivered, and the binary says so once
//! per signal. Also: per-signal certificates, an outage and its end reported once each, the span
//! queue cap following `OTEL_BSP_MAX_QUEUE_SIZE`, and bad OTLP settings stopping start-up.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    common::v1::any_value::Value as Any, metrics::v1::metric::Data, trace::v1::span::SpanKind,
};
use serde_json::{json, Value};

use crate::cli::{free_port, items_api, wait_for_port};
use crate::otlp_receiver::{OtlpReceiver, Pki, Received};
use crate::traces::{hex, Traced};

/// `OTEL_EXPORTER_OTLP_HEADERS` as an operator would write it: values URL-encoded.
const HEADERS: &str = "x-tenant=acme%20corp, authorization=Bearer%20s3cret";

/// The binary exporting everything to `endpoint` over TLS, trusting the CA in `ca_pem` and
/// presenting `client`'s certificate, with its JSON stdout collected.
struct Exporting {
    app: Traced,
    _certs: tempfile::TempDir,
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

impl Exporting {
    fn start(endpoint: &str, protocol: &str, ca_pem: &str, client: &Pki) -> Self {
        Self::start_with(endpoint, protocol, ca_pem, client, &[])
    }

    fn start_with(
        endpoint: &str,
        protocol: &str,
        ca_pem: &str,
        client: &Pki,
        env: &[(&str, &str)],
    ) -> Self {
        let certs = tempfile::tempdir().unwrap();
        let ca = write(certs.path(), "ca.pem", ca_pem);
        let client_cert = write(certs.path(), "client.pem", &client.client_cert_pem);
        let client_key = write(certs.path(), "client-key.pem", &client.client_key_pem);
        let mut all = vec![
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                client_cert.as_str(),
            ),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", client_key.as_str()),
            ("OTEL_EXPORTER_OTLP_HEADERS", HEADERS),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_METRICS_EXPORTER", "prometheus,otlp"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
        ];
        all.extend_from_slice(env);
        Self {
            app: Traced::start(endpoint, protocol, &all),
            _certs: certs,
        }
    }

    /// A create, a read and a miss; every answer as if no backend existed. Returns the trace
    /// id of the 404 body.
    async fn requests(&self) -> String {
        let client = reqwest::Client::new();
        let created = client
            .post(self.app.url("/items"))
            .json(&json!({"name": "tls", "price": 1.5}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let id = created.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap();
        let read = client
            .get(self.app.url(&format!("/items/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        let missing = client
            .get(self.app.url("/items/999999"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        missing.json::<Value>().await.unwrap()["trace_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// SIGTERM, a clean exit, the JSON lines.
    fn stop(self) -> Vec<Value> {
        self.app.stop()
    }
}

fn has_server_span(received: &Received, trace_id: &str) -> bool {
    received.traces.lock().unwrap().iter().any(|export| {
        export
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .any(|span| {
                hex(&span.trace_id) == trace_id
                    && span.kind == SpanKind::Server as i32
                    && span.name == "GET /items/{id}"
            })
    })
}

fn has_log_record(received: &Received, trace_id: &str) -> bool {
    received.logs.lock().unwrap().iter().any(|export| {
        export
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .any(|record| hex(&record.trace_id) == trace_id)
    })
}

/// Points of `http.server.request.duration` for `GET /items/{id}` answered 404, in the newest
/// export that has any.
fn missing_item_count(received: &Received) -> u64 {
    let exports = received.metrics.lock().unwrap();
    exports
        .iter()
        .rev()
        .flat_map(|e| &e.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == "http.server.request.duration")
        .find_map(|metric| {
            let Some(Data::Histogram(histogram)) = &metric.data else {
                panic!("http.server.request.duration is not a histogram")
            };
            histogram
                .data_points
                .iter()
                .find(|point| {
                    let attr = |key: &str| {
                        point
                            .attributes
                            .iter()
                            .find(|a| a.key == key)
                            .and_then(|a| a.value.clone()?.value)
                    };
                    attr("http.route") == Some(Any::StringValue("/items/{id}".into()))
                        && attr("http.response.status_code") == Some(Any::IntValue(404))
                })
                .map(|point| point.count)
        })
        .unwrap_or(0)
}

async fn delivers_over_tls(protocol: &str) {
    let pki = Pki::generate();
    let receiver = OtlpReceiver::start_tls(&pki).await;
    let (endpoint, paths, encoding) = match protocol {
        "grpc" => (
            &receiver.grpc_endpoint,
            [
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            ],
            "grpc-encoding",
        ),
        _ => (
            &receiver.http_endpoint,
            ["/v1/traces", "/v1/logs", "/v1/metrics"],
            "content-encoding",
        ),
    };
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let app = Exporting::start(endpoint, protocol, &pki.ca_pem, &pki);
    let trace_id = app.requests().await;

    receiver
        .wait_for(Duration::from_secs(20), "the 404's span", |r| {
            has_server_span(r, &trace_id)
        })
        .await;
    receiver
        .wait_for(Duration::from_secs(20), "the 404's log record", |r| {
            has_log_record(r, &trace_id)
        })
        .await;
    receiver
        .wait_for(Duration::from_secs(20), "the 404 in the metrics", |r| {
            missing_item_count(r) == 1
        })
        .await;
    let lines = app.stop();

    let received = &receiver.received;
    assert_eq!(
        received.tls_failures.lock().unwrap().clone(),
        Vec::<String>::new()
    );
    let headers = received.headers.lock().unwrap().clone();
    let seen: BTreeSet<&str> = headers.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(seen, BTreeSet::from(paths), "every signal was exported");
    for (path, headers) in &headers {
        assert_eq!(headers.get("x-tenant").unwrap(), "acme corp", "{path}");
        assert_eq!(
            headers.get("authorization").unwrap(),
            "Bearer s3cret",
            "{path}"
        );
        assert_eq!(headers.get(encoding).unwrap(), "gzip", "{path}");
    }
    let complaints: Vec<&Value> = lines
        .iter()
        .filter(|l| l["level"] == "ERROR" || l["level"] == "WARN")
        .filter(|l| !l["name"].as_str().unwrap_or("").ends_with("AfterShutdown"))
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_delivers_spans_logs_and_metrics_with_headers_and_gzip() {
    delivers_over_tls("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_over_tls_delivers_spans_logs_and_metrics_with_headers_and_gzip() {
    delivers_over_tls("http/protobuf").await;
}

async fn refuses_an_unknown_issuer(protocol: &str) {
    let pki = Pki::generate();
    let unrelated = Pki::generate();
    let receiver = OtlpReceiver::start_tls(&pki).await;
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint.clone(),
        _ => receiver.http_endpoint.clone(),
    };
    // The client certificate is the receiver's own CA's: only the server's is in question.
    let app = Exporting::start(&endpoint, protocol, &unrelated.ca_pem, &pki);
    // Requests while every export fails, until each signal has been refused several times.
    let started = Instant::now();
    while received_refusals(&receiver) < 12 || started.elapsed() < Duration::from_secs(2) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the receiver saw only {} handshakes",
            received_refusals(&receiver)
        );
        app.requests().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = app.stop();

    let received = &receiver.received;
    assert_eq!(received.traces.lock().unwrap().len(), 0);
    assert_eq!(received.logs.lock().unwrap().len(), 0);
    assert_eq!(received.metrics.lock().unwrap().len(), 0);
    assert!(received.headers.lock().unwrap().is_empty());

    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    let signals: BTreeSet<&str> = errors
        .iter()
        .map(|l| l["signal"].as_str().unwrap())
        .collect();
    assert_eq!(
        (errors.len(), signals),
        (3, BTreeSet::from(["log", "metric", "trace"])),
        "one error line per signal: {errors:#?}"
    );
    for line in errors {
        let message = line["message"].as_str().unwrap();
        let signal = line["signal"].as_str().unwrap();
        // Over HTTP each signal has its own URL under the base endpoint.
        let url = match (protocol, signal) {
            ("grpc", _) => endpoint.clone(),
            (_, "trace") => format!("{endpoint}/v1/traces"),
            (_, "log") => format!("{endpoint}/v1/logs"),
            _ => format!("{endpoint}/v1/metrics"),
        };
        assert!(
            message.starts_with(&format!("OTLP {signal} export to {url} failed: ")),
            "{message}"
        );
        assert!(message.contains("UnknownIssuer"), "{message}");
    }
    // The SDK's own per-batch failure lines are not printed.
    let sdk_noise: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["target"]
                .as_str()
                .unwrap_or("")
                .starts_with("opentelemetry")
        })
        .filter(|l| !l["name"].as_str().unwrap_or("").ends_with("AfterShutdown"))
        .collect();
    assert!(sdk_noise.is_empty(), "{sdk_noise:#?}");
}

fn received_refusals(receiver: &OtlpReceiver) -> usize {
    receiver.received.tls_failures.lock().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_to_an_unknown_issuer_delivers_nothing_and_says_so_once_per_signal() {
    refuses_an_unknown_issuer("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_an_unknown_issuer_delivers_nothing_and_says_so_once_per_signal() {
    refuses_an_unknown_issuer("http/protobuf").await;
}

/// Each bad OTLP setting stops start-up with one line on stderr that names its variable.
#[test]
fn bad_otlp_settings_stop_start_up_with_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &Pki::generate().ca_pem);
    let not_pem = write(dir.path(), "not.pem", "not a certificate");
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:4318");
    // (environment, exit code, what stderr must say)
    type Case<'a> = (Vec<(&'a str, &'a str)>, i32, String);
    let cases: Vec<Case> = vec![
        (
            vec![("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant")],
            2,
            "OTEL_EXPORTER_OTLP_HEADERS>': `x-tenant` is not key=value".into(),
        ),
        (
            vec![("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "a=1,b=")],
            2,
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS>': `b` has an empty value".into(),
        ),
        (
            vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nowhere/ca.pem")],
            2,
            "OTEL_EXPORTER_OTLP_CERTIFICATE>': cannot read /nowhere/ca.pem".into(),
        ),
        (
            vec![("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", not_pem.as_str())],
            2,
            format!("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY>': {not_pem} holds no PEM private key"),
        ),
        (
            vec![("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")],
            2,
            "OTEL_EXPORTER_OTLP_COMPRESSION".into(),
        ),
        (
            vec![("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "5s")],
            2,
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT>': must be a number of milliseconds".into(),
        ),
        (
            vec![("OTEL_BSP_MAX_QUEUE_SIZE", "0")],
            2,
            "OTEL_BSP_MAX_QUEUE_SIZE>': must be larger than 0".into(),
        ),
        (
            vec![("OTEL_PROPAGATORS", "tracecontext,b3")],
            2,
            "OTEL_PROPAGATORS>': unknown propagator `b3`".into(),
        ),
        (
            vec![endpoint, ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096")],
            1,
            "cannot set up trace export: OTEL_BSP_MAX_EXPORT_BATCH_SIZE (4096) is larger than OTEL_BSP_MAX_QUEUE_SIZE (2048)".into(),
        ),
        (
            vec![
                endpoint,
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", ca.as_str()),
            ],
            1,
            "cannot set up trace export: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is set but OTEL_EXPORTER_OTLP_CLIENT_KEY is not".into(),
        ),
    ];
    for (env, code, expected) in cases {
        let mut command = items_api(dir.path());
        command.env("LISTEN_ADDR", "127.0.0.1:0");
        for (key, value) in &env {
            command.env(key, value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{env:?}: {stderr}");
        assert!(stderr.starts_with("items-api: "), "{env:?}: {stderr}");
        assert!(stderr.contains(&expected), "{env:?}: {stderr}");
    }
}

/// `OTEL_BSP_MAX_QUEUE_SIZE` is the cap on spans waiting for export: with a backend that takes
/// the connection and never answers, exactly that many spans are taken for export and every
/// later one is dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_span_queue_holds_exactly_otel_bsp_max_queue_size() {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", hole.local_addr().unwrap());
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = items_api(dir.path());
    command
        .stdout(std::process::Stdio::null())
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_LOGS_EXPORTER", "none")
        .env("OTEL_BSP_MAX_QUEUE_SIZE", "64")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        // No export finishes while the test runs.
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "120000")
        .env("OTEL_BSP_EXPORT_TIMEOUT", "120000");
    let mut child = command.spawn().unwrap();
    wait_for_port(port, &mut child);
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let answer = client
            .get(format!("http://127.0.0.1:{port}/items?limit=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let scrape = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let samples = crate::prom_text::parse(&scrape);
    let processed =
        crate::prom_text::select(&samples, "otel_sdk_processor_span_processed_total", &[]);
    let accepted: Vec<f64> = processed
        .iter()
        .filter(|s| s.label("error_type").is_none())
        .map(|s| s.value)
        .collect();
    let dropped: Vec<f64> = processed
        .iter()
        .filter(|s| s.label("error_type") == Some("queue_full"))
        .map(|s| s.value)
        .collect();
    assert_eq!(accepted, vec![64.0], "{scrape}");
    assert_eq!(dropped.len(), 1, "{scrape}");
    assert!(dropped[0] >= 100.0 * 2.0 - 64.0, "{scrape}");
}

/// A backend that answers too slowly fails every export (one ERROR line per signal); once it
/// answers in time again, delivery resumes and one INFO line per signal says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_reported_once_and_its_end_once() {
    let pki = Pki::generate();
    let receiver = OtlpReceiver::start_tls(&pki).await;
    receiver.set_delay(Duration::from_secs(2));
    let app = Exporting::start_with(
        &receiver.http_endpoint,
        "http/protobuf",
        &pki.ca_pem,
        &pki,
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", "300")],
    );
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(2) {
        app.requests().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.set_delay(Duration::ZERO);
    let metric_exports = receiver.received.metrics.lock().unwrap().len();
    let trace_id = app.requests().await;
    receiver
        .wait_for(Duration::from_secs(20), "a span after the outage", |r| {
            has_server_span(r, &trace_id)
        })
        .await;
    receiver
        .wait_for(
            Duration::from_secs(20),
            "a log record after the outage",
            |r| has_log_record(r, &trace_id),
        )
        .await;
    receiver
        .wait_for(Duration::from_secs(20), "metrics after the outage", |r| {
            r.metrics.lock().unwrap().len() > metric_exports + 1
        })
        .await;
    let lines = app.stop();

    let reports = |level: &str| -> Vec<(String, String)> {
        let mut reports: Vec<(String, String)> = lines
            .iter()
            .filter(|l| l["level"] == level && l["target"] == "items_api::telemetry::otlp")
            .map(|l| {
                (
                    l["signal"].as_str().unwrap().to_owned(),
                    l["message"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        reports.sort();
        reports
    };
    let url = |path: &str| format!("{}/v1/{path}", receiver.http_endpoint);
    let errors = reports("ERROR");
    assert_eq!(
        errors.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        ["log", "metric", "trace"],
        "{errors:#?}"
    );
    for ((signal, message), path) in errors.iter().zip(["logs", "metrics", "traces"]) {
        let prefix = format!("OTLP {signal} export to {} failed: ", url(path));
        assert!(message.starts_with(&prefix), "{message}");
    }
    assert_eq!(
        reports("INFO"),
        [("log", "logs"), ("metric", "metrics"), ("trace", "traces")]
            .map(|(signal, path)| (
                signal.to_owned(),
                format!("OTLP {signal} export to {} works again", url(path))
            ))
            .to_vec()
    );
}

/// A per-signal certificate wins over the base one: traces trust the receiver's CA and arrive,
/// logs and metrics trust an unrelated CA and are refused, each said once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_certificate_overrides_the_base_one() {
    let pki = Pki::generate();
    let unrelated = Pki::generate();
    let receiver = OtlpReceiver::start_tls(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let right = write(dir.path(), "right-ca.pem", &pki.ca_pem);
    let app = Exporting::start_with(
        &receiver.grpc_endpoint,
        "grpc",
        &unrelated.ca_pem,
        &pki,
        &[("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", right.as_str())],
    );
    let trace_id = app.requests().await;
    receiver
        .wait_for(Duration::from_secs(20), "the 404's span", |r| {
            has_server_span(r, &trace_id)
        })
        .await;
    let started = Instant::now();
    while received_refusals(&receiver) < 6 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "logs and metrics were never refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = app.stop();

    assert_eq!(receiver.received.logs.lock().unwrap().len(), 0);
    assert_eq!(receiver.received.metrics.lock().unwrap().len(), 0);
    let refused: BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["level"] == "ERROR")
        .map(|l| l["signal"].as_str().unwrap())
        .collect();
    assert_eq!(refused, BTreeSet::from(["log", "metric"]));
    assert_eq!(
        lines.iter().filter(|l| l["level"] == "ERROR").count(),
        2,
        "one line per refused signal"
    );
}
