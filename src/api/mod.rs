//! The HTTP surface: the OpenAPI service (items, health), its docs, and the error shape.

pub mod errors;
pub mod fault;
pub mod health;
pub mod items;
pub mod metrics_auth;
pub mod model;
pub mod payload;
pub mod problem;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApi, OpenApiService};

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
    let spec = service.spec_endpoint();
    Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/", service)
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

/// Wraps the routes with what every answer needs: errors as problem+json.
pub fn with_problem_errors(route: impl Endpoint + 'static) -> impl Endpoint + 'static {
    route.catch_all_error(errors::into_problem)
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
