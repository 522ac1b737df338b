//! Reliability and security (faults the service must survive): database outages, crashes,
//! hostile input, slow clients, and who may read `/metrics`.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{free_port, items_api, wait_for_port};
use crate::helpers::{
    assert_problem, spawn_app, spawn_app_on, spawn_app_with, Backend, TestApp, TestDb,
};
use crate::prom_text::{parse, select};

async fn assert_healthy(app: &TestApp) {
    assert_eq!(app.get("/health/ready").await.status(), 200);
    assert_eq!(
        app.create_item("still serving", 1.0).await["name"],
        "still serving"
    );
}

/// Sends raw bytes and returns the status line's code (0 when the server closed without one).
fn raw_status(port: u16, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

mod db_outage {
    pub mod postgres {
        use super::super::*;
        use crate::tcp_proxy::TcpProxy;

        /// The database goes away mid-load: requests answer 503 within the acquire timeout,
        /// readiness fails while liveness holds, `/metrics` keeps serving with `error.type`, and
        /// when the database returns the service recovers by itself.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_database_outage_is_503_fast_and_recovers_without_a_restart() {
            let db = TestDb::new(Backend::Postgres).await;
            let mut url = url::Url::parse(db.url.as_str()).unwrap();
            let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
            let proxy = TcpProxy::start(upstream.parse().unwrap()).await;
            url.set_port(Some(proxy.port)).unwrap();
            let through_proxy = url.as_str().parse().unwrap();
            let app = spawn_app_on(db, |c| {
                c.database_url = through_proxy;
                c.db_acquire_timeout = Duration::from_secs(1);
            })
            .await;
            let item = app.create_item("before the outage", 1.0).await;
            let path = format!("/items/{}", item["id"]);

            // Load running while the database goes away.
            let load = {
                let client = app.client.clone();
                let url = app.url("/items");
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    let until = Instant::now() + Duration::from_secs(3);
                    while Instant::now() < until {
                        let started = Instant::now();
                        let status = client.get(&url).send().await.unwrap().status().as_u16();
                        statuses.push((status, started.elapsed()));
                    }
                    statuses
                })
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.cut().await;

            for _ in 0..5 {
                let started = Instant::now();
                let response = app.get(&path).await;
                let took = started.elapsed();
                let problem = assert_problem(response, 503).await;
                assert!(
                    took < Duration::from_secs(2),
                    "a 503 took {took:?}: it must not hang"
                );
                assert_eq!(
                    problem["detail"],
                    "the database is unavailable, try again later"
                );
            }
            let write = app.post_item(&json!({"name": "during", "price": 1})).await;
            assert_problem(write, 503).await;
            assert_problem(app.get("/health/ready").await, 503).await;
            assert_eq!(app.get("/health/live").await.status(), 200);
            let samples = parse(&app.metrics_text().await);
            let unavailable = select(
                &samples,
                "http_server_request_duration_seconds_count",
                &[("error_type", "503"), ("http_route", "/items/{id}")],
            );
            assert_eq!(unavailable.len(), 1, "error.type on the HTTP metrics");
            assert!(unavailable[0].value >= 5.0);

            let during: Vec<(u16, Duration)> = load.await.unwrap();
            for (status, took) in &during {
                assert!(
                    matches!(status, 200 | 503),
                    "load saw {status}: never a 500"
                );
                assert!(*took < Duration::from_secs(2), "a request took {took:?}");
            }
            assert!(
                during.iter().any(|(s, _)| *s == 503),
                "the load saw the outage"
            );

            proxy.restore().await;
            let restored = Instant::now();
            loop {
                if app.get(&path).await.status() == 200 {
                    break;
                }
                assert!(
                    restored.elapsed() < Duration::from_secs(5),
                    "no recovery within 5 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!(
                "recovered {:?} after the database returned",
                restored.elapsed()
            );
            assert_eq!(app.get("/health/ready").await.status(), 200);
            assert_eq!(app.get(&path).await.json::<Value>().await.unwrap(), item);
        }
    }
}

crate::on_both_backends!(every_acknowledged_create_survives_sigkill);

/// Creates under concurrent load, then SIGKILL: every item whose 201 the client received is
/// there after a restart, with the same fields.
async fn every_acknowledged_create_survives_sigkill(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let port = free_port();
        let mut command = items_api(dir.path());
        command
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", db.url.as_str())
            // Nobody reads its logs here; a full pipe would stall the service.
            .stdout(std::process::Stdio::null());
        let mut child = command.spawn().unwrap();
        wait_for_port(port, &mut child);
        (child, format!("http://127.0.0.1:{port}"))
    };
    let (mut child, base) = start();
    let client = reqwest::Client::new();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let client = client.clone();
            let base = base.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let body = json!({"name": format!("w{w}-{i}"), "price": i, "quantity": w});
                    match client
                        .post(format!("{base}/items"))
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 201 => match r.json::<Value>().await {
                            Ok(item) => acknowledged.push(item),
                            Err(_) => break,
                        },
                        _ => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    child.wait().unwrap();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert!(
        acknowledged.len() > 20,
        "only {} creates before the kill",
        acknowledged.len()
    );

    let (mut child, base) = start();
    for item in &acknowledged {
        let stored: Value = client
            .get(format!("{base}/items/{}", item["id"]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(&stored, item, "acknowledged item lost or changed");
    }
    eprintln!(
        "{} acknowledged creates all survived SIGKILL",
        acknowledged.len()
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_4xx_and_never_5xx() {
    let app = spawn_app(Backend::Sqlite).await;
    let item = app.create_item("target", 1.0).await;
    let path = format!("/items/{}", item["id"]);
    let post_raw = |body: Vec<u8>| {
        app.client
            .post(app.url("/items"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    // Oversized headers: one huge, and very many.
    let huge = app
        .client
        .get(app.url("/items"))
        .header("x-pad", "a".repeat(512 * 1024))
        .send()
        .await;
    assert!(
        huge.map_or(true, |r| r.status().is_client_error()),
        "a 512 KiB header"
    );
    assert_eq!(
        raw_status(
            app.port,
            format!(
                "GET /items HTTP/1.1\r\nHost: x\r\n{}\r\n",
                "X-A: b\r\n".repeat(200)
            )
            .as_bytes()
        ),
        431
    );
    // Deep-nested JSON: refused by the parser's recursion limit, not by a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_problem(post_raw(deep.into_bytes()).await.unwrap(), 400).await;
    let deep_object = format!(
        "{{\"name\":\"x\",\"price\":1,\"description\":{}1{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert_problem(post_raw(deep_object.into_bytes()).await.unwrap(), 400).await;
    // Invalid UTF-8, in the body and in a path parameter.
    assert_problem(
        post_raw(b"{\"name\":\"\xff\xfe\",\"price\":1}".to_vec())
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_problem(app.get("/items/%FF%FE").await, 400).await;
    // NUL bytes.
    let nul = app
        .post_item(&json!({"name": "a\u{0}b", "price": 1, "description": "c\u{0}d"}))
        .await;
    let problem = assert_problem(nul, 422).await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2);
    assert_problem(app.get("/items/1%00").await, 400).await;
    // Huge numbers.
    assert_problem(
        post_raw(br#"{"name":"n","price":1e400}"#.to_vec())
            .await
            .unwrap(),
        400,
    )
    .await;
    let big =
        post_raw(br#"{"name":"n","price":1,"quantity":123456789012345678901234567890}"#.to_vec());
    assert_problem(big.await.unwrap(), 422).await;
    assert_problem(
        app.post_item(&json!({"name": "n", "price": f64::MAX, "quantity": u64::MAX}))
            .await,
        422,
    )
    .await;
    // Negative and overflowing ids and paging.
    for id in ["-1", "0", "-9223372036854775808", "9223372036854775807"] {
        assert_problem(app.get(&format!("/items/{id}")).await, 404).await;
    }
    for id in ["9223372036854775808", "-9223372036854775809", "1e3", "0x10"] {
        assert_problem(app.get(&format!("/items/{id}")).await, 400).await;
    }
    assert_problem(app.get("/items?limit=-5").await, 422).await;
    assert_problem(app.get("/items?offset=-1").await, 422).await;
    assert_problem(app.get("/items?limit=99999999999999999999").await, 400).await;
    // The documented bound (10^15) holds; past it is a 422, at it an empty page.
    let problem = assert_problem(app.get("/items?offset=9223372036854775807").await, 422).await;
    assert_eq!(problem["errors"][0]["field"], "offset");
    let far: Value = app
        .get("/items?offset=1000000000000000")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(far["items"].as_array().unwrap().len(), 0);
    // Path traversal, plain and encoded.
    assert_eq!(
        raw_status(
            app.port,
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        404
    );
    assert_problem(app.get("/items/..%2F..%2Fetc%2Fpasswd").await, 400).await;
    assert_problem(app.get("/docs/../../../etc/passwd").await, 404).await;
    // Methods and bodies where none belong.
    let odd = app
        .client
        .request(Method::from_bytes(b"PROPFIND").unwrap(), app.url(&path))
        .send()
        .await
        .unwrap();
    assert_problem(odd, 405).await;
    assert_healthy(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_off_with_408() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.body_read_timeout = Duration::from_millis(800)
    })
    .await;
    let port = app.port;
    let slow = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let body = br#"{"name":"slow","price":1}"#;
        write!(
            stream,
            "POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        let started = Instant::now();
        for byte in body {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            if started.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    });
    // Others are served while the slow client trickles.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.get("/items").await.status(), 200);
    let (answer, took) = tokio::task::spawn_blocking(move || slow.join().unwrap())
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"));
    assert!(took < Duration::from_secs(3), "cut off after {took:?}");
    let page: Value = app.get("/items?count=true").await.json().await.unwrap();
    assert_eq!(page["total"], 0, "nothing half-read was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraping_under_load_does_not_stall_requests() {
    let app = spawn_app(Backend::Sqlite).await;
    let id = app.create_item("hot", 1.0).await["id"].clone();
    let scraping = {
        let client = app.client.clone();
        let url = app.url("/metrics");
        tokio::spawn(async move {
            let mut scrapes = 0;
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
                scrapes += 1;
            }
            scrapes
        })
    };
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url(&format!("/items/{id}"));
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                for _ in 0..300 {
                    let started = Instant::now();
                    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
                    slowest = slowest.max(started.elapsed());
                }
                slowest
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for worker in workers {
        slowest = slowest.max(worker.await.unwrap());
    }
    let scrapes = scraping.await.unwrap();
    eprintln!("1,200 requests beside {scrapes} scrapes; slowest request {slowest:?}");
    assert!(scrapes > 10);
    assert!(
        slowest < Duration::from_secs(1),
        "a request stalled for {slowest:?}"
    );
}

#[tokio::test]
async fn a_metrics_bearer_token_guards_the_scrape() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.metrics_bearer_token = Some("s3cret".into())
    })
    .await;
    let missing = app.get("/metrics").await;
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_problem(missing, 401).await;
    for wrong in [
        "Bearer nope",
        "Bearer s3cre",
        "Bearer s3cretX",
        "Basic s3cret",
        "s3cret",
    ] {
        let response = app
            .client
            .get(app.url("/metrics"))
            .header("authorization", wrong)
            .send()
            .await
            .unwrap();
        assert_problem(response, 401).await;
    }
    let right = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("target_info"));

    // On its own listener too; the API port does not serve it at all.
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.metrics_bearer_token = Some("s3cret".into());
        c.metrics_listen_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let url = format!("http://127.0.0.1:{}/metrics", app.metrics_port.unwrap());
    assert_problem(app.client.get(&url).send().await.unwrap(), 401).await;
    assert_eq!(
        app.client
            .get(&url)
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_problem(app.get("/metrics").await, 404).await;
}

/// Whatever a client puts in a request, each log event stays one line: JSON lines parse as
/// objects, and text lines escape control characters.
#[test]
fn user_text_cannot_forge_a_log_line() {
    for format in ["json", "text"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = items_api(dir.path());
        command
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_FORMAT", format)
            .env("RUST_LOG", "debug,sqlx=warn,hyper=warn,h2=warn");
        let mut child = command.spawn().unwrap();
        wait_for_port(port, &mut child);
        // A newline, then a line that would pass for an event in either format.
        let forged =
            "%0A%7B%22level%22:%22ERROR%22,%22message%22:%22forged%22%7D%0D%0AERROR%20forged";
        for path in [
            format!("/items/{forged}"),
            format!("/{forged}"),
            format!("/items?limit={forged}"),
        ] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: evil\" \\n agent\r\nConnection: close\r\n\r\n");
            assert!(matches!(
                raw_status(port, request.as_bytes()),
                400 | 404 | 422
            ));
        }
        crate::cli::sigterm(&child);
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        let access = stdout
            .lines()
            .filter(|l| l.contains("items_api::access"))
            .count();
        assert_eq!(
            access, 3,
            "one access line per request ({format}):\n{stdout}"
        );
        for line in stdout.lines() {
            assert!(
                !line.starts_with("ERROR forged")
                    && !line.starts_with("{\"level\":\"ERROR\",\"message\":\"forged"),
                "{line}"
            );
            if format == "json" {
                let value: Value =
                    serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
                assert!(value.is_object());
            }
        }
    }
}
