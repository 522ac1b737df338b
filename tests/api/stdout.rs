//! Stdout can stall, the service cannot: with its stdout going into a pipe nobody reads, every
//! request is still answered, and every access line is either written or counted as dropped on
//! `/metrics` (`log_stdout_dropped_total`).

use std::{
    io::{BufRead, BufReader},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::cli::{free_port, items_api, sigterm, wait_for_port};
use crate::prom_text::{parse, value};

const REQUESTS: usize = 5000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_nobody_reads_never_stalls_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = items_api(dir.path());
    command
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    let mut child = command.spawn().unwrap();
    wait_for_port(port, &mut child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // Nobody reads the pipe: it fills after a few hundred lines.
    for n in 0..REQUESTS {
        let response = client
            .get(format!("{base}/items?limit=1"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {n} was not answered: {e}"));
        assert_eq!(response.status(), 200, "request {n}");
    }
    let scrape = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped = value(&parse(&scrape), "log_stdout_dropped_total", &[]) as usize;
    assert!(dropped > 0, "the pipe was full, so lines were dropped");

    // Now read: every access line not dropped arrives, and no more.
    let pipe = child.stdout.take().unwrap();
    let access = Arc::new(AtomicUsize::new(0));
    let seen = access.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if line.contains("\"target\":\"items_api::access\"") {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while access.load(Ordering::Relaxed) + dropped < REQUESTS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    assert_eq!(
        access.load(Ordering::Relaxed) + dropped,
        REQUESTS,
        "every access line was written or counted as dropped"
    );
}
