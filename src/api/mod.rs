//! The HTTP surface: the OpenAPI service (items, health), its docs, and the error shape.

pub mod answers;
pub mod errors;
pub mod fault;
pub mod health;
pub mod items;
pub mod metrics_auth;
pub mod model;
pub mod payload;
pub mod problem;
pub mod schema;

use std::{collections::HashMap, sync::Arc};

use poem::{
    endpoint::make_sync, http::StatusCode, middleware::CatchPanic, Endpoint, EndpointExt,
    IntoResponse, PathPattern, Request, Route,
};
use poem_openapi::{OpenApi, OpenApiService};
use serde_json::Value;

use crate::store::ItemStore;
use crate::telemetry::business::BusinessMetrics;

pub type Apis = (items::ItemsApi, health::HealthApi);

/// Everything the handlers need.
pub struct AppState {
    pub store: ItemStore,
    pub business: BusinessMetrics,
}

fn apis(state: AppState) -> Apis {
    (
        items::ItemsApi {
            store: state.store.clone(),
            business: state.business,
        },
        health::HealthApi { store: state.store },
    )
}

/// The routes of the service, before middleware: the API, `/docs` and `/openapi.json`.
pub fn routes(state: AppState) -> Route {
    let service = OpenApiService::new(apis(state), "items-api", env!("CARGO_PKG_VERSION"))
        .description("Items CRUD API, observable by construction.");
    let docs = service.swagger_ui();
    let spec = document(&service.spec());
    Route::new()
        .at(
            "/openapi.json",
            make_sync(move |_| spec.clone().with_content_type("application/json")),
        )
        .nest("/docs", docs)
        .nest("/", service)
}

/// Body schemas that refuse unknown fields (422 naming them).
const CLOSED_SCHEMAS: [&str; 2] = ["ItemInput", "ItemPatch"];

/// The served OpenAPI document: poem-openapi's, plus `additionalProperties: false` on the
/// closed schemas, which its registry has no way to say.
fn document(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(spec) else {
        return spec.to_owned();
    };
    for name in CLOSED_SCHEMAS {
        if let Some(schema) = doc
            .pointer_mut(&format!("/components/schemas/{name}"))
            .and_then(Value::as_object_mut)
        {
            schema.insert("additionalProperties".into(), Value::Bool(false));
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_owned())
}

/// The methods of each route, by poem pattern, for the `Allow` header of a 405 (RFC 9110).
fn allowed_methods() -> HashMap<String, String> {
    Apis::meta()
        .into_iter()
        .flat_map(|api| api.paths.into_iter())
        .map(|path| {
            let methods: Vec<&str> = path
                .operations
                .iter()
                .map(|op| op.method.as_str())
                .collect();
            (poem_pattern(&path.path), methods.join(", "))
        })
        .fold(HashMap::new(), |mut map, (pattern, methods)| {
            map.entry(pattern)
                .and_modify(|m: &mut String| {
                    m.push_str(", ");
                    m.push_str(&methods);
                })
                .or_insert(methods);
            map
        })
}

/// The OpenAPI path templates (`/items/{id}`) of every operation, keyed by the pattern poem
/// matches them with (`/items/:param0`). `http.route` is taken from here.
pub fn route_templates() -> Vec<(String, String)> {
    Apis::meta()
        .into_iter()
        .flat_map(|api| api.paths.into_iter())
        .map(|path| (poem_pattern(&path.path), path.path))
        .collect()
}

/// `/items/{id}` → `/items/:param0`, as poem-openapi registers it.
fn poem_pattern(template: &str) -> String {
    let mut n = 0;
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                n += 1;
                format!(":param{}", n - 1)
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Wraps the routes with what every answer needs: errors as problem+json, and the `Allow`
/// header on a 405.
pub fn with_problem_errors(route: impl Endpoint + 'static) -> impl Endpoint + 'static {
    let allowed = Arc::new(allowed_methods());
    route
        .catch_all_error(errors::into_problem)
        .around(move |ep, req: Request| {
            let allowed = allowed.clone();
            async move {
                let mut response = ep.call(req).await?;
                if response.status() == StatusCode::METHOD_NOT_ALLOWED {
                    let methods = response
                        .data::<PathPattern>()
                        .and_then(|pattern| allowed.get(&*pattern.0))
                        .and_then(|methods| methods.parse().ok());
                    if let Some(methods) = methods {
                        response
                            .headers_mut()
                            .insert(poem::http::header::ALLOW, methods);
                    }
                }
                Ok(response)
            }
        })
}

/// The last guard against a panic anywhere below it: a 500 problem+json instead of a dropped
/// connection. It sits inside the telemetry middleware, which thus counts and traces the 500.
pub fn with_panic_guard(ep: impl Endpoint + 'static) -> impl Endpoint + 'static {
    ep.with(CatchPanic::new().with_handler(errors::answer_panic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_map_to_poem_patterns() {
        assert_eq!(poem_pattern("/items/{id}"), "/items/:param0");
        assert_eq!(poem_pattern("/items"), "/items");
        let templates = route_templates();
        assert!(templates.contains(&("/items/:param0".into(), "/items/{id}".into())));
        assert!(templates.contains(&("/health/ready".into(), "/health/ready".into())));
    }
}
