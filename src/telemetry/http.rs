//! The one HTTP middleware (docs/DESIGN.md §2): it owns the SERVER span, the HTTP metrics and the access
//! log, so that the span and `http.server.request.duration` describe the same interval.
//! Labels come only from fixed sets: the method (or `_OTHER`), the OpenAPI route template (or
//! `unmatched`), the status code. No path, id, query, header or body ever becomes a label.

use std::{collections::HashMap, sync::Arc, time::Instant};

use opentelemetry::{
    global,
    metrics::{Histogram, Meter, UpDownCounter},
    trace::TraceContextExt,
    KeyValue,
};
use opentelemetry_http::HeaderExtractor;
use poem::{
    http::{header, HeaderValue, Method, StatusCode, Version},
    Endpoint, IntoResponse, Middleware, PathPattern, Request, Response,
};
use tracing::{field::Empty, Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `http.route` of every request that matched no route: one series, whatever was asked.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Seconds. Below the semconv 14 bounds (5 ms … 10 s) three finer ones, because a Rust handler
/// answers in well under 5 ms and quantiles need buckets there; and 0.2, 0.3, 2 and 3, the
/// briefs' latency targets and alert thresholds (with 0.5 and 1 of semconv), so no alert
/// quantile or SLO share is interpolated across its threshold. 0.25 is the latency SLO.
const DURATION_BOUNDS: [f64; 21] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0,
    2.0, 2.5, 3.0, 5.0, 7.5, 10.0,
];

/// Bytes: 0 up to 16 MiB, by powers of four.
const SIZE_BOUNDS: [f64; 12] = [
    0.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// Instruments and lookup tables shared by every request.
struct Instruments {
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
    request_size: Histogram<u64>,
    response_size: Histogram<u64>,
    /// poem's pattern (`/items/:param0`) → OpenAPI template (`/items/{id}`) and span names.
    routes: HashMap<String, KnownRoute>,
    /// Path prefixes that are served but neither measured nor traced.
    excluded: Vec<String>,
}

/// A route of the API, with every string a request on it needs made once at start-up (a handful,
/// leaked so that labels and span names borrow them for free).
#[derive(Clone, Copy)]
struct KnownRoute {
    template: &'static str,
    /// `{METHOD} {template}`, by the index of the method in `METHODS`.
    span_names: [&'static str; METHODS.len()],
}

impl KnownRoute {
    fn new(template: String) -> Self {
        let template: &'static str = Box::leak(template.into_boxed_str());
        Self {
            template,
            span_names: METHODS
                .map(|method| &*Box::leak(format!("{method} {template}").into_boxed_str())),
        }
    }
}

/// The middleware. Build it once per app; cloning is cheap.
#[derive(Clone)]
pub struct HttpTelemetry(Arc<Instruments>);

impl HttpTelemetry {
    pub fn new(meter: &Meter, routes: Vec<(String, String)>, excluded: Vec<String>) -> Self {
        let routes = routes
            .into_iter()
            .map(|(pattern, template)| (pattern, KnownRoute::new(template)))
            .collect();
        Self(Arc::new(Instruments {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests")
                .with_boundaries(DURATION_BOUNDS.to_vec())
                .build(),
            active: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_unit("{request}")
                .with_description("HTTP server requests in flight")
                .build(),
            request_size: meter
                .u64_histogram("http.server.request.body.size")
                .with_unit("By")
                .with_description("Size of HTTP server request bodies")
                .with_boundaries(SIZE_BOUNDS.to_vec())
                .build(),
            response_size: meter
                .u64_histogram("http.server.response.body.size")
                .with_unit("By")
                .with_description("Size of HTTP server response bodies")
                .with_boundaries(SIZE_BOUNDS.to_vec())
                .build(),
            routes,
            excluded: excluded.into_iter().filter(|p| !p.is_empty()).collect(),
        }))
    }
}

impl<E: Endpoint> Middleware<E> for HttpTelemetry {
    type Output = HttpTelemetryEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        HttpTelemetryEndpoint {
            inner,
            telemetry: self.clone(),
        }
    }
}

pub struct HttpTelemetryEndpoint<E> {
    inner: E,
    telemetry: HttpTelemetry,
}

/// Decrements `http.server.active_requests` even when the client goes away mid-request and the
/// future is dropped.
struct ActiveGuard<'a> {
    active: &'a UpDownCounter<i64>,
    attributes: [KeyValue; 2],
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.active.add(-1, &self.attributes);
    }
}

impl<E: Endpoint> Endpoint for HttpTelemetryEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let instruments = &*self.telemetry.0;
        let path = req.uri().path();
        if instruments
            .excluded
            .iter()
            .any(|prefix| path.starts_with(prefix.as_str()))
        {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }

        let method_idx = method_index(req.method());
        let method = METHODS[method_idx];
        let scheme = "http";
        let protocol = protocol_label(req.version());
        let request_size = content_length(req.headers());
        let active_attributes = [
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.scheme", scheme),
        ];
        instruments.active.add(1, &active_attributes);
        let _active = ActiveGuard {
            active: &instruments.active,
            attributes: active_attributes,
        };

        let span = server_span(&req, method);
        let start = Instant::now();
        let mut response = match self.inner.call(req).instrument(span.clone()).await {
            Ok(response) => response.into_response(),
            Err(err) => err.into_response(),
        };
        let elapsed = start.elapsed().as_secs_f64();

        let status = response.status();
        let known = response
            .data::<PathPattern>()
            .and_then(|pattern| instruments.routes.get(&*pattern.0).copied());
        let route = known.map_or(UNMATCHED_ROUTE, |r| r.template);
        let response_size = response_body_size(&mut response);
        finish_span(
            &span,
            known.map(|r| r.span_names[method_idx]),
            route,
            status,
        );
        let ids = trace_ids(&span);
        if let Some((trace_id, span_id, flags)) = &ids {
            if let Ok(value) =
                HeaderValue::from_str(&format!("00-{trace_id}-{span_id}-{flags:02x}"))
            {
                response.headers_mut().insert("traceresponse", value);
            }
        }
        let (trace_id, span_id) = ids.map(|(t, s, _)| (t, s)).unzip();
        span.in_scope(|| {
            tracing::info!(
                target: "items_api::access",
                method,
                route,
                status = status.as_u16(),
                duration_ms = elapsed * 1000.0,
                trace_id,
                span_id,
                "{method} {route} {}",
                status.as_u16()
            );
        });
        // Ended here, not when the last clone of `span` drops, so the span covers the same
        // interval as the histogram.
        if !span.is_disabled() {
            span.context().span().end();
        }

        let base = [
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", route),
            KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
        ];
        let [m, r, s] = base.clone();
        let scheme_kv = KeyValue::new("url.scheme", scheme);
        let protocol_kv = KeyValue::new("network.protocol.version", protocol);
        if status.is_server_error() {
            instruments.duration.record(
                elapsed,
                &[
                    m,
                    r,
                    s,
                    scheme_kv,
                    protocol_kv,
                    KeyValue::new("error.type", error_type(status)),
                ],
            );
        } else {
            instruments
                .duration
                .record(elapsed, &[m, r, s, scheme_kv, protocol_kv]);
        }
        if let Some(size) = request_size {
            instruments.request_size.record(size, &base);
        }
        if let Some(size) = response_size {
            instruments.response_size.record(size, &base);
        }
        Ok(response)
    }
}

/// The SERVER span of one request, a child of the caller's span when a valid W3C
/// `traceparent` came in (an invalid one is ignored and a new trace starts). Its name and route
/// are filled in once the router has matched.
fn server_span(req: &Request, method: &'static str) -> Span {
    let span = tracing::info_span!(
        target: "items_api::http",
        "HTTP request",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.request.method_original = Empty,
        http.route = Empty,
        url.path = req.uri().path(),
        url.scheme = "http",
        network.protocol.version = protocol_label(req.version()),
        server.address = Empty,
        server.port = Empty,
        client.address = Empty,
        user_agent.original = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
    );
    // Nothing below is worth its allocations when no layer records spans.
    if span.is_disabled() {
        return span;
    }
    let headers = req.headers();
    let local = req.local_addr().as_socket_addr().copied();
    match headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
        Some(host) => match host.rsplit_once(':') {
            Some((name, port)) => {
                span.record("server.address", name);
                if let Ok(port) = port.parse::<u16>() {
                    span.record("server.port", i64::from(port));
                }
            }
            None => {
                span.record("server.address", host);
                if let Some(local) = local {
                    span.record("server.port", i64::from(local.port()));
                }
            }
        },
        None => {
            if let Some(local) = local {
                span.record("server.address", local.ip().to_string());
                span.record("server.port", i64::from(local.port()));
            }
        }
    }
    if let Some(remote) = req.remote_addr().as_socket_addr() {
        span.record("client.address", remote.ip().to_string());
    }
    if let Some(agent) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        span.record("user_agent.original", agent);
    }
    if method == "_OTHER" {
        span.record("http.request.method_original", req.method().as_str());
    }
    let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// semconv: the name is `{method} {route}`, or just the method (given at creation) when nothing
/// matched; status is Error for 5xx only (a 4xx is the client's error, not the server's).
fn finish_span(span: &Span, name: Option<&'static str>, route: &'static str, status: StatusCode) {
    if span.is_disabled() {
        return;
    }
    if let Some(name) = name {
        // The OTel span was started when the request entered it (its context had to be
        // active for the DB spans), and tracing-opentelemetry only applies `otel.name` before
        // that, so the name is updated on the OTel span itself.
        span.context().span().update_name(name);
        span.record("http.route", route);
    }
    // i64: tracing-opentelemetry keeps i64 as an int attribute (unsigned becomes a string).
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", error_type(status));
    }
}

/// The trace id, span id and flags of a span, for the `traceresponse` header
/// (`00-<trace id>-<span id>-<flags>`, W3C Trace Context Level 2) and the access log.
fn trace_ids(span: &Span) -> Option<(String, String, u8)> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
            span_context.trace_flags().to_u8(),
        )
    })
}

/// The methods of RFC 9110 (and PATCH) as themselves; anything else as `_OTHER`, so that a client
/// cannot mint label values.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT", "_OTHER",
];

/// The index of a method in `METHODS`.
fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::CONNECT => 8,
        _ => 9,
    }
}

fn protocol_label(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "_OTHER",
    }
}

/// semconv: for an HTTP error without a better name, `error.type` is the status code.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "_OTHER",
    }
}

fn content_length(headers: &poem::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The exact size of a response body when it is known up front (every JSON answer); streamed
/// bodies have none and are not recorded.
fn response_body_size(response: &mut Response) -> Option<u64> {
    if let Some(length) = content_length(response.headers()) {
        return Some(length);
    }
    let body: http_body_util::combinators::BoxBody<_, _> = response.take_body().into();
    let size = http_body::Body::size_hint(&body).exact();
    response.set_body(poem::Body::from(body));
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(METHODS[method_index(&Method::GET)], "GET");
        assert_eq!(METHODS[method_index(&Method::PATCH)], "PATCH");
        assert_eq!(
            METHODS[method_index(&Method::from_bytes(b"BREW").unwrap())],
            "_OTHER"
        );
    }

    #[test]
    fn span_names_are_made_once_per_method_and_route() {
        let route = KnownRoute::new("/items/{id}".into());
        assert_eq!(
            route.span_names[method_index(&Method::DELETE)],
            "DELETE /items/{id}"
        );
        assert_eq!(route.span_names[9], "_OTHER /items/{id}");
    }

    #[test]
    fn five_hundreds_name_their_status() {
        assert_eq!(error_type(StatusCode::SERVICE_UNAVAILABLE), "503");
        assert_eq!(error_type(StatusCode::from_u16(599).unwrap()), "_OTHER");
    }
}
