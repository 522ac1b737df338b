//! Opt-in fault injection (`FAULT_ERROR_RATIO`, `FAULT_DELAY`) on the `/items` operations, so
//! that demos and the live alert checks can make real errors and latency.
//! Applied per operation (poem-openapi `transform`), inside the router, so an injected 500 is
//! still recorded under its route.

use std::time::Duration;

use poem::{Endpoint, EndpointExt, IntoResponse, Request};

use super::errors::ApiError;

/// The configured faults, put in the request data by the app when any is on.
#[derive(Debug, Clone, Copy)]
pub struct FaultInjection {
    pub error_ratio: f64,
    pub delay: Duration,
}

/// The poem-openapi `transform` of every `/items` operation.
pub fn inject(ep: impl Endpoint + 'static) -> impl Endpoint {
    ep.around(|ep, req: Request| async move {
        if let Some(faults) = req.data::<FaultInjection>().copied() {
            if !faults.delay.is_zero() {
                tokio::time::sleep(faults.delay).await;
            }
            if faults.error_ratio > 0.0 && rand::random::<f64>() < faults.error_ratio {
                return Err(ApiError::InjectedFault.into());
            }
        }
        ep.call(req).await.map(IntoResponse::into_response)
    })
}
