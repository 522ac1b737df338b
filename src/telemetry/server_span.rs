//! The SERVER span of one request, made with the OpenTelemetry tracer directly (docs/DESIGN.md
//! §6). Going through `tracing` spans and tracing-opentelemetry cost more than the rest of the
//! request (a span builder per span, a context switch on every poll, attribute conversion), and
//! put spans under the log filter: `RUST_LOG=warn` switched tracing off. Here only the sampler
//! decides, and every attribute is a static key with, where possible, a static value.

use opentelemetry::{
    global,
    trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _},
    Context, Key, KeyValue, Value,
};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::trace::SdkTracer;
use opentelemetry_semantic_conventions::attribute::{
    CLIENT_ADDRESS, ERROR_TYPE, HTTP_REQUEST_METHOD, HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, NETWORK_PROTOCOL_VERSION, SERVER_ADDRESS, SERVER_PORT,
    URL_PATH, URL_SCHEME, USER_AGENT_ORIGINAL,
};
use poem::{
    http::{header, HeaderName, HeaderValue, StatusCode},
    Request,
};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// The attributes a SERVER span can carry; its attribute list is allocated once at this size.
const MAX_ATTRIBUTES: usize = 12;

/// What the middleware knows about a request before the router has run.
pub struct RequestFacts {
    pub method: &'static str,
    pub scheme: &'static str,
    pub protocol: &'static str,
}

/// The span of one request and the context its children and log lines see.
pub struct ServerSpan {
    cx: Context,
}

impl ServerSpan {
    /// Starts the span, a child of the caller's when a valid propagated context came in (an
    /// invalid `traceparent` is ignored and a new trace starts). Its name is the method until
    /// `finish` knows the route.
    pub fn start(tracer: &SdkTracer, req: &Request, facts: &RequestFacts) -> Self {
        let headers = req.headers();
        // Only the W3C headers can carry a parent or baggage (`OTEL_PROPAGATORS` offers no
        // others); most requests have neither, and skip the propagators.
        let parent = if headers.contains_key(&TRACEPARENT) || headers.contains_key(&BAGGAGE) {
            global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
        } else {
            Context::current()
        };
        let mut span = tracer
            .span_builder(facts.method)
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        if span.is_recording() {
            span.set_attributes(request_attributes(req, facts));
        }
        Self {
            cx: parent.with_span(span),
        }
    }

    /// The context to run the request in: DB spans become its children, log lines carry its ids.
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// `traceresponse` (W3C Trace Context Level 2): `00-<trace id>-<span id>-<flags>`.
    pub fn traceresponse(&self) -> Option<HeaderValue> {
        let span = self.cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        // 00-<32 hex>-<16 hex>-<2 hex>, written without the formatting machinery.
        let mut value = [0u8; 55];
        value[..3].copy_from_slice(b"00-");
        hex_into(&mut value[3..35], &sc.trace_id().to_bytes());
        value[35] = b'-';
        hex_into(&mut value[36..52], &sc.span_id().to_bytes());
        value[52] = b'-';
        hex_into(&mut value[53..55], &[sc.trace_flags().to_u8()]);
        HeaderValue::from_bytes(&value).ok()
    }

    /// semconv: the name becomes `{method} {route}` when a route matched (it stays the method
    /// otherwise); status is Error for 5xx only, a 4xx being the client's error. Ended here, so
    /// the span covers the same interval as `http.server.request.duration`.
    pub fn finish(self, name: Option<&'static str>, route: &'static str, status: StatusCode) {
        let span = self.cx.span();
        if !span.is_recording() {
            return;
        }
        let code = i64::from(status.as_u16());
        if let Some(name) = name {
            span.update_name(name);
            span.set_attribute(KeyValue::new(Key::from_static_str(HTTP_ROUTE), route));
        }
        span.set_attribute(KeyValue::new(
            Key::from_static_str(HTTP_RESPONSE_STATUS_CODE),
            code,
        ));
        if status.is_server_error() {
            span.set_attribute(KeyValue::new(
                Key::from_static_str(ERROR_TYPE),
                super::http_metrics::error_type(status),
            ));
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// Lower-case hex of `bytes` into `out` (twice as long).
pub(super) fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

/// The request's semconv attributes, in one allocation of `MAX_ATTRIBUTES`.
fn request_attributes(req: &Request, facts: &RequestFacts) -> Vec<KeyValue> {
    let kv = |key: &'static str, value: Value| KeyValue::new(Key::from_static_str(key), value);
    let mut attributes = Vec::with_capacity(MAX_ATTRIBUTES);
    attributes.push(kv(HTTP_REQUEST_METHOD, facts.method.into()));
    if facts.method == "_OTHER" {
        attributes.push(kv(
            HTTP_REQUEST_METHOD_ORIGINAL,
            req.method().as_str().to_owned().into(),
        ));
    }
    attributes.push(kv(URL_PATH, req.uri().path().to_owned().into()));
    attributes.push(kv(URL_SCHEME, facts.scheme.into()));
    attributes.push(kv(NETWORK_PROTOCOL_VERSION, facts.protocol.into()));
    let headers = req.headers();
    let local = req.local_addr().as_socket_addr().copied();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let (address, port) = match host.map(split_host) {
        Some((name, Some(port))) => (Some(name.to_owned()), Some(port)),
        Some((name, None)) => (Some(name.to_owned()), local.map(|l| l.port())),
        None => (local.map(|l| l.ip().to_string()), local.map(|l| l.port())),
    };
    if let Some(address) = address {
        attributes.push(kv(SERVER_ADDRESS, address.into()));
    }
    if let Some(port) = port {
        attributes.push(kv(SERVER_PORT, i64::from(port).into()));
    }
    if let Some(remote) = req.remote_addr().as_socket_addr() {
        attributes.push(kv(CLIENT_ADDRESS, remote.ip().to_string().into()));
    }
    if let Some(agent) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(kv(USER_AGENT_ORIGINAL, agent.to_owned().into()));
    }
    attributes
}

/// `host:port` → (host, port); a bare host (or an IPv6 literal in brackets) keeps its port
/// unknown.
fn split_host(host: &str) -> (&str, Option<u16>) {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && !port.ends_with(']') => match port.parse() {
            Ok(port) => (name, Some(port)),
            Err(_) => (host, None),
        },
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::split_host;

    #[test]
    fn ids_are_lower_case_hex() {
        let mut out = [0u8; 6];
        super::hex_into(&mut out, &[0x00, 0xab, 0x9f]);
        assert_eq!(&out, b"00ab9f");
    }

    #[test]
    fn host_headers_split_into_address_and_port() {
        assert_eq!(split_host("api.example:8080"), ("api.example", Some(8080)));
        assert_eq!(split_host("api.example"), ("api.example", None));
        assert_eq!(split_host("[::1]:8000"), ("[::1]", Some(8000)));
        assert_eq!(split_host("[::1]"), ("[::1]", None));
        assert_eq!(split_host("host:notaport"), ("host:notaport", None));
    }
}
