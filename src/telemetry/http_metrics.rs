//! The HTTP instruments (docs/DESIGN.md §6) and the fixed label vocabulary they take: the method
//! (or `_OTHER`), the route template (or `unmatched`), the status code, the protocol version.
//!
//! Each label set is bound to its SDK series once, on first use (the SDK's bound instruments), so
//! a request's measurements skip the SDK's per-call attribute hashing and sorting: the label sets
//! are a small, fixed grid, so the handles are kept in arrays indexed by it. Status codes and
//! protocol versions outside the grid are measured the ordinary way.

use std::sync::OnceLock;

use opentelemetry::{
    metrics::{BoundHistogram, BoundUpDownCounter, Histogram, Meter, UpDownCounter},
    KeyValue,
};
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
use poem::http::{Method, StatusCode, Version};

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

/// Bytes: 0 up to 64 MiB, by powers of four.
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

/// The methods of RFC 9110 (and PATCH) as themselves; anything else as `_OTHER`, so that a client
/// cannot mint label values.
pub const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT", "_OTHER",
];

/// The index of a method in `METHODS`.
pub fn method_index(method: &Method) -> usize {
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

pub fn protocol_label(version: Version) -> &'static str {
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
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "_OTHER",
    }
}

/// The status codes with bound series: every code the API answers, and a few a proxy or client
/// commonly provokes.
const STATUSES: [u16; 20] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 500, 501, 502, 503,
    504,
];

fn status_slot(status: StatusCode) -> Option<usize> {
    STATUSES.iter().position(|&s| s == status.as_u16())
}

/// The protocol versions with bound series.
const PROTOCOLS: [&str; 3] = ["1.1", "1.0", "2"];

fn protocol_slot(protocol: &'static str) -> Option<usize> {
    PROTOCOLS.iter().position(|&p| p == protocol)
}

/// What one finished request is measured by.
pub struct RequestLabels {
    pub method: usize,
    /// The index of the route template; `routes` (one past the last) is `unmatched`.
    pub route: usize,
    pub route_name: &'static str,
    pub status: StatusCode,
    pub scheme: &'static str,
    pub protocol: &'static str,
}

pub struct HttpInstruments {
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
    request_size: Histogram<u64>,
    response_size: Histogram<u64>,
    /// Route templates, plus one for `unmatched`.
    routes: usize,
    bound_active: [OnceLock<BoundUpDownCounter<i64>>; METHODS.len()],
    /// route × method × status × protocol.
    bound_duration: Box<[OnceLock<BoundHistogram<f64>>]>,
    /// route × method × status.
    bound_request_size: Box<[OnceLock<BoundHistogram<u64>>]>,
    bound_response_size: Box<[OnceLock<BoundHistogram<u64>>]>,
}

fn slots<T>(n: usize) -> Box<[OnceLock<T>]> {
    (0..n).map(|_| OnceLock::new()).collect()
}

impl HttpInstruments {
    /// `routes` is the number of route templates (`unmatched` comes on top).
    pub fn new(meter: &Meter, routes: usize) -> Self {
        let routes = routes + 1;
        let per_route = METHODS.len() * STATUSES.len();
        Self {
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
            bound_active: std::array::from_fn(|_| OnceLock::new()),
            bound_duration: slots(routes * per_route * PROTOCOLS.len()),
            bound_request_size: slots(routes * per_route),
            bound_response_size: slots(routes * per_route),
        }
    }

    /// `http.server.active_requests` for a method (the scheme is always `http` here).
    pub fn active(&self, method: usize) -> &BoundUpDownCounter<i64> {
        self.bound_active[method].get_or_init(|| {
            self.active.bind(&[
                KeyValue::new(HTTP_REQUEST_METHOD, METHODS[method]),
                KeyValue::new(URL_SCHEME, "http"),
            ])
        })
    }

    /// The duration and body sizes of one finished request.
    pub fn record(
        &self,
        labels: &RequestLabels,
        elapsed: f64,
        request_size: Option<u64>,
        response_size: Option<u64>,
    ) {
        let base = || {
            [
                KeyValue::new(HTTP_REQUEST_METHOD, METHODS[labels.method]),
                KeyValue::new(HTTP_ROUTE, labels.route_name),
                KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(labels.status.as_u16())),
            ]
        };
        let duration_attributes = || {
            let mut attributes = base().to_vec();
            attributes.push(KeyValue::new(URL_SCHEME, labels.scheme));
            attributes.push(KeyValue::new(NETWORK_PROTOCOL_VERSION, labels.protocol));
            if labels.status.is_server_error() {
                attributes.push(KeyValue::new(ERROR_TYPE, error_type(labels.status)));
            }
            attributes
        };
        let cell = status_slot(labels.status)
            .filter(|_| labels.route < self.routes)
            .map(|status| (labels.route * METHODS.len() + labels.method) * STATUSES.len() + status);
        match (cell, protocol_slot(labels.protocol)) {
            (Some(cell), Some(protocol)) if labels.scheme == "http" => {
                self.bound_duration[cell * PROTOCOLS.len() + protocol]
                    .get_or_init(|| self.duration.bind(&duration_attributes()))
                    .record(elapsed);
            }
            _ => self.duration.record(elapsed, &duration_attributes()),
        }
        let sizes = [
            (request_size, &self.request_size, &self.bound_request_size),
            (
                response_size,
                &self.response_size,
                &self.bound_response_size,
            ),
        ];
        for (size, histogram, bound) in sizes {
            let Some(size) = size else { continue };
            match cell {
                Some(cell) => bound[cell]
                    .get_or_init(|| histogram.bind(&base()))
                    .record(size),
                None => histogram.record(size, &base()),
            }
        }
    }
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
    fn five_hundreds_name_their_status() {
        assert_eq!(error_type(StatusCode::SERVICE_UNAVAILABLE), "503");
        assert_eq!(error_type(StatusCode::from_u16(599).unwrap()), "_OTHER");
    }

    #[test]
    fn grid_slots_cover_the_api_and_nothing_else() {
        assert_eq!(status_slot(StatusCode::OK), Some(0));
        assert_eq!(status_slot(StatusCode::from_u16(418).unwrap()), None);
        assert_eq!(protocol_slot("1.1"), Some(0));
        assert_eq!(protocol_slot("3"), None);
    }
}
