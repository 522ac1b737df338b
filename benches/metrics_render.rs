//! How `/metrics` rendering grows with the number of series: the real HTTP middleware and the
//! real exposition, fed synthetic routes so the series count can be set to the service's own and
//! to 10x and 100x that (the service itself cannot grow past its own, by design).
//!
//! `cargo bench --bench metrics_render` (`just bench` runs it): prints a table and writes
//! `reports/metrics_render.json`.

use std::time::{Duration, Instant};

use items_api::{
    config::Config,
    telemetry::{http::HttpTelemetry, metrics::Metrics, resource},
};
use poem::{
    http::{Method, StatusCode},
    Endpoint, EndpointExt, PathPattern, Request, Response,
};

/// HTTP duration series after the realistic CRUD mix (method × route × status), as measured on
/// a live scrape: the baseline the multiples apply to.
const TYPICAL_HTTP_SERIES: usize = 7;
const RENDERS: usize = 50;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let config = Config::for_tests("sqlite://unused.db".parse().expect("url"));
    let mut rows = Vec::new();
    for multiple in [1usize, 10, 100] {
        let routes = TYPICAL_HTTP_SERIES * multiple;
        let metrics = Metrics::new(resource::build(), &config.otel).expect("metrics");
        let templates: Vec<(String, String)> = (0..routes)
            .map(|n| (format!("/r{n}/:param0"), format!("/r{n}/{{id}}")))
            .collect();
        let telemetry = HttpTelemetry::new(metrics.meter(), None, templates, Vec::new());
        // An endpoint that answers as the router would for each synthetic route.
        let app = poem::endpoint::make(|req: Request| async move {
            let mut response = Response::builder().status(StatusCode::OK).body("{}");
            response.set_data(PathPattern(
                req.uri().path().replace("/x", "/:param0").into(),
            ));
            response
        })
        .with(telemetry);
        for n in 0..routes {
            let req = Request::builder()
                .method(Method::GET)
                .uri_str(format!("/r{n}/x"))
                .finish();
            app.call(req).await.expect("call");
        }
        let endpoint = metrics.endpoint();
        let text = endpoint.render().expect("render");
        let samples = text.iter().filter(|&&b| b == b'\n').count()
            - text
                .split(|&b| b == b'\n')
                .filter(|l| l.starts_with(b"#"))
                .count();
        let mut times: Vec<Duration> = (0..RENDERS)
            .map(|_| {
                let start = Instant::now();
                let body = endpoint.render().expect("render");
                let took = start.elapsed();
                assert!(!body.is_empty());
                took
            })
            .collect();
        times.sort_unstable();
        let median = times[RENDERS / 2];
        println!(
            "{multiple:>4}x  {routes:>4} HTTP duration series  {samples:>6} samples  {:>8} bytes  median render {:.3} ms",
            text.len(),
            median.as_secs_f64() * 1000.0
        );
        rows.push(serde_json::json!({
            "multiple": multiple,
            "http_duration_series": routes,
            "samples": samples,
            "bytes": text.len(),
            "median_render_ms": median.as_secs_f64() * 1000.0,
        }));
    }
    let reports = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reports");
    let _ = std::fs::create_dir_all(&reports);
    let out = reports.join("metrics_render.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&rows).expect("json")).expect("write");
    println!("wrote {}", out.display());
}
