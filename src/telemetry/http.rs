//! The one HTTP middleware (docs/DESIGN.md §2): it owns the SERVER span, the HTTP metrics and the access
//! log, so that the span and `http.server.request.duration` describe the same interval.
//! Labels come only from fixed sets: the method (or `_OTHER`), the OpenAPI route template (or
//! `unmatched`), the status code. No path, id, query, header or body ever becomes a label.

use std::{collections::HashMap, sync::Arc, time::Instant};

use opentelemetry::{
    context::FutureExt as _,
    metrics::{Histogram, Meter, UpDownCounter},
    KeyValue,
};
use opentelemetry_sdk::trace::SdkTracer;
use opentelemetry_semantic_conventions::{
    attribute::{
        ERROR_TYPE, HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE,
        NETWORK_PROTOCOL_VERSION, URL_SCHEME,
    },
    metric::{
        HTTP_SERVER_ACTIVE_REQUESTS, HTTP_SERVER_REQUEST_BODY_SIZE, HTTP_SERVER_REQUEST_DURATION,
        HTTP_SERVER_RESPONSE_BODY_SIZE,
    },
};
use poem::{
    http::{header, Method, StatusCode, Version},
    Endpoint, IntoResponse, Middleware, PathPattern, Request, Response,
};

use super::server_span::{RequestFacts, ServerSpan};

/// The `http.route` of every request that matched no route: one series, whatever was asked.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Seconds. Below the semconv 14 bounds (5 ms … 10 s) three finer ones, because a Rust handler
/// answers in well under 5 ms and quantiles need buckets there.
const DURATION_BOUNDS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    7.5, 10.0,
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
    /// None when spans are off (`OTEL_TRACES_EXPORTER=none`, `OTEL_SDK_DISABLED`, or no
    /// process-wide tracer installed, as in in-process tests).
    tracer: Option<SdkTracer>,
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
    pub fn new(
        meter: &Meter,
        tracer: Option<SdkTracer>,
        routes: Vec<(String, String)>,
        excluded: Vec<String>,
    ) -> Self {
        let routes = routes
            .into_iter()
            .map(|(pattern, template)| (pattern, KnownRoute::new(template)))
            .collect();
        Self(Arc::new(Instruments {
            duration: meter
                .f64_histogram(HTTP_SERVER_REQUEST_DURATION)
                .with_unit("s")
                .with_description("Duration of HTTP server requests")
                .with_boundaries(DURATION_BOUNDS.to_vec())
                .build(),
            active: meter
                .i64_up_down_counter(HTTP_SERVER_ACTIVE_REQUESTS)
                .with_unit("{request}")
                .with_description("HTTP server requests in flight")
                .build(),
            request_size: meter
                .u64_histogram(HTTP_SERVER_REQUEST_BODY_SIZE)
                .with_unit("By")
                .with_description("Size of HTTP server request bodies")
                .with_boundaries(SIZE_BOUNDS.to_vec())
                .build(),
            response_size: meter
                .u64_histogram(HTTP_SERVER_RESPONSE_BODY_SIZE)
                .with_unit("By")
                .with_description("Size of HTTP server response bodies")
                .with_boundaries(SIZE_BOUNDS.to_vec())
                .build(),
            routes,
            excluded: excluded.into_iter().filter(|p| !p.is_empty()).collect(),
            tracer,
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
        let facts = RequestFacts {
            method: METHODS[method_idx],
            scheme: "http",
            protocol: protocol_label(req.version()),
        };
        let request_size = content_length(req.headers());
        let active_attributes = [
            KeyValue::new(HTTP_REQUEST_METHOD, facts.method),
            KeyValue::new(URL_SCHEME, facts.scheme),
        ];
        instruments.active.add(1, &active_attributes);
        let _active = ActiveGuard {
            active: &instruments.active,
            attributes: active_attributes,
        };

        let span = instruments
            .tracer
            .as_ref()
            .map(|tracer| ServerSpan::start(tracer, &req, &facts));
        let start = Instant::now();
        let outcome = match &span {
            Some(span) => {
                self.inner
                    .call(req)
                    .with_context(span.context().clone())
                    .await
            }
            None => self.inner.call(req).await,
        };
        let mut response = match outcome {
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
        if let Some(value) = span.as_ref().and_then(ServerSpan::traceresponse) {
            response.headers_mut().insert("traceresponse", value);
        }
        access_log(span.as_ref(), facts.method, route, status, elapsed);
        if let Some(span) = span {
            span.finish(known.map(|r| r.span_names[method_idx]), route, status);
        }

        let base = [
            KeyValue::new(HTTP_REQUEST_METHOD, facts.method),
            KeyValue::new(HTTP_ROUTE, route),
            KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status.as_u16())),
        ];
        let [m, r, s] = base.clone();
        let scheme_kv = KeyValue::new(URL_SCHEME, facts.scheme);
        let protocol_kv = KeyValue::new(NETWORK_PROTOCOL_VERSION, facts.protocol);
        if status.is_server_error() {
            instruments.duration.record(
                elapsed,
                &[
                    m,
                    r,
                    s,
                    scheme_kv,
                    protocol_kv,
                    KeyValue::new(ERROR_TYPE, error_type(status)),
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

/// The one access event of a request, emitted inside the request's trace context so that stdout
/// and the OTLP log record both carry its trace and span ids.
fn access_log(
    span: Option<&ServerSpan>,
    method: &'static str,
    route: &'static str,
    status: StatusCode,
    elapsed: f64,
) {
    let _entered = span.map(|span| span.context().clone().attach());
    tracing::info!(
        target: "items_api::access",
        method,
        route,
        status = status.as_u16(),
        duration_ms = elapsed * 1000.0,
        "{method} {route} {}",
        status.as_u16()
    );
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
pub(super) fn error_type(status: StatusCode) -> &'static str {
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
