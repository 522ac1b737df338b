//! The one HTTP middleware (docs/DESIGN.md §2): it owns the SERVER span, the HTTP metrics and the
//! access log, so that the span and `http.server.request.duration` describe the same interval.
//! Labels come only from fixed sets (`http_metrics`): the method (or `_OTHER`), the OpenAPI
//! route template (or `unmatched`), the status code. No path, id, query, header or body ever
//! becomes a label.

use std::{collections::HashMap, sync::Arc, time::Instant};

use opentelemetry::{context::FutureExt as _, metrics::BoundUpDownCounter, metrics::Meter};
use opentelemetry_sdk::trace::SdkTracer;
use poem::{
    http::{header, StatusCode},
    Endpoint, IntoResponse, Middleware, PathPattern, Request, Response,
};

pub use super::http_metrics::UNMATCHED_ROUTE;
use super::{
    http_metrics::{method_index, protocol_label, HttpInstruments, RequestLabels, METHODS},
    server_span::{RequestFacts, ServerSpan},
};

/// Instruments and lookup tables shared by every request.
struct Instruments {
    metrics: HttpInstruments,
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
    /// Its place in the metric series grid.
    index: usize,
    template: &'static str,
    /// `{METHOD} {template}`, by the index of the method in `METHODS`.
    span_names: [&'static str; METHODS.len()],
}

impl KnownRoute {
    fn new(index: usize, template: String) -> Self {
        let template: &'static str = Box::leak(template.into_boxed_str());
        Self {
            index,
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
        let metrics = HttpInstruments::new(meter, routes.len());
        let routes = routes
            .into_iter()
            .enumerate()
            .map(|(index, (pattern, template))| (pattern, KnownRoute::new(index, template)))
            .collect();
        Self(Arc::new(Instruments {
            metrics,
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
struct ActiveGuard<'a>(&'a BoundUpDownCounter<i64>);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.add(-1);
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
        let active = instruments.metrics.active(method_idx);
        active.add(1);
        let _active = ActiveGuard(active);

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

        instruments.metrics.record(
            &RequestLabels {
                method: method_idx,
                route: known.map_or(instruments.routes.len(), |r| r.index),
                route_name: route,
                status,
                scheme: facts.scheme,
                protocol: facts.protocol,
            },
            elapsed,
            request_size,
            response_size,
        );
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
    fn span_names_are_made_once_per_method_and_route() {
        let route = KnownRoute::new(0, "/items/{id}".into());
        assert_eq!(
            route.span_names[method_index(&poem::http::Method::DELETE)],
            "DELETE /items/{id}"
        );
        assert_eq!(route.span_names[9], "_OTHER /items/{id}");
    }
}
