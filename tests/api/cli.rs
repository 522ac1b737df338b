//! The `items-api` binary itself: defaults, bad configuration, signals.

use std::{
    io::Read,
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_items-api");

/// The binary with an empty environment (only PATH), in `dir`.
pub fn items_api(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn run_to_exit(mut command: Command) -> (i32, String) {
    let output = command.output().expect("binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().unwrap_or(-1), stderr)
}

pub fn wait_for_port(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("exited early with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sigterm(child: &Child) {
    // SAFETY: kill(2) with a pid we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

#[test]
fn bad_configuration_exits_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 7] = [
        ("DATABASE_URL", "mysql://h/db", "unsupported scheme `mysql`"),
        ("DATABASE_URL", "::not a url::", "not a URL"),
        ("LISTEN_ADDR", "localhost:port", "LISTEN_ADDR"),
        ("LOG_FORMAT", "xml", "xml"),
        ("BODY_LIMIT", "lots", "not a size"),
        ("FAULT_ERROR_RATIO", "2", "between 0 and 1"),
        ("FAULT_DELAY", "soon", "not a duration"),
    ];
    for (var, value, expected) in cases {
        let mut command = items_api(dir.path());
        command.env(var, value);
        let (code, stderr) = run_to_exit(command);
        assert_eq!(code, 2, "{var}={value}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{var}={value} printed: {stderr}"
        );
        assert!(stderr.starts_with("items-api: "), "{stderr}");
        assert!(stderr.contains(expected), "{var}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_port_in_use_or_an_unreachable_database_exits_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut command = items_api(dir.path());
    command.env("LISTEN_ADDR", &addr);
    let (code, stderr) = run_to_exit(command);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );

    // A closed port: nothing listens on port 1.
    let mut command = items_api(dir.path());
    command
        .env("DATABASE_URL", "postgres://user:secret@127.0.0.1:1/db")
        .env("DB_ACQUIRE_TIMEOUT", "1s")
        .env("LISTEN_ADDR", "127.0.0.1:0");
    let (code, stderr) = run_to_exit(command);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("items-api: cannot open the database"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "the password leaked: {stderr}");
}

#[test]
fn with_no_environment_it_serves_items_on_port_8000_and_creates_items_db() {
    let dir = tempfile::tempdir().unwrap();
    // The default port must be free, or this would talk to whatever else holds it.
    drop(
        std::net::TcpListener::bind("0.0.0.0:8000")
            .expect("port 8000 is busy: stop what holds it to run this test"),
    );
    let mut child = items_api(dir.path()).spawn().unwrap();
    wait_for_port(8000, &mut child);
    let body = ureq_get("127.0.0.1:8000", "/items?count=true");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains(r#""total":0"#), "{body}");
    assert!(dir.path().join("items.db").exists());
    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = items_api(dir.path());
    command
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("FAULT_DELAY", "1s");
    let mut child = command.spawn().unwrap();
    wait_for_port(port, &mut child);
    let request = std::thread::spawn(move || ureq_get(&format!("127.0.0.1:{port}"), "/items"));
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    let answer = request.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "in-flight request was cut: {answer}"
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = items_api(dir.path());
    command.env("LISTEN_ADDR", format!("127.0.0.1:{port}"));
    // Compose and Kubernetes pass `VAR=` for "not given"; each of these has no default or a
    // default that must win, and none may stop the start.
    for var in [
        "FAULT_ERROR_RATIO",
        "FAULT_PANIC_RATIO",
        "FAULT_DELAY",
        "METRICS_LISTEN_ADDR",
        "METRICS_BEARER_TOKEN",
        "BODY_LIMIT",
        "DB_MAX_CONNECTIONS",
        "LOG_FORMAT",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_METRIC_EXPORT_INTERVAL",
    ] {
        command.env(var, "");
    }
    let mut child = command.spawn().unwrap();
    wait_for_port(port, &mut child);
    let answer = ureq_get(&format!("127.0.0.1:{port}"), "/items");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Defaults held: no fault injection, /metrics on the API port without a token.
    let scrape = ureq_get(&format!("127.0.0.1:{port}"), "/metrics");
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    sigterm(&child);
    assert!(child.wait().unwrap().success());
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bare HTTP/1.1 GET, so this test needs no async runtime.
pub fn ureq_get(addr: &str, path: &str) -> String {
    use std::io::Write;
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn standard_otel_variables_name_the_resource() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = items_api(dir.path());
    command
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("OTEL_SERVICE_NAME", "checkout")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=production,service.name=ignored",
        );
    let mut child = command.spawn().unwrap();
    wait_for_port(port, &mut child);
    let scrape = ureq_get(&format!("127.0.0.1:{port}"), "/metrics");
    sigterm(&child);
    child.wait().unwrap();
    let info = scrape
        .lines()
        .find(|l| l.starts_with("target_info{"))
        .expect("target_info");
    assert!(info.contains(r#"service_name="checkout""#), "{info}");
    assert!(
        info.contains(r#"deployment_environment_name="production""#),
        "{info}"
    );
    assert!(info.contains(r#"service_version=""#), "{info}");
}
