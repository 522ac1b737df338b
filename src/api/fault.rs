//! Opt-in fault injection (`FAULT_ERROR_RATIO`, `FAULT_PANIC_RATIO`, `FAULT_DELAY`) on the
//! `/items` operations, so that demos and the live alert checks can make real errors, panics and
//! latency. Applied per operation (poem-openapi `transform`), inside the router, so an injected
//! 500 is still recorded under its route.

use std::time::Duration;

use poem::{middleware::CatchPanic, Endpoint, EndpointExt, IntoResponse, Request};

use super::errors::{answer_panic, ApiError};

/// The configured faults, put in the request data by the app when any is on.
#[derive(Debug, Clone, Copy)]
pub struct FaultInjection {
    pub error_ratio: f64,
    pub panic_ratio: f64,
    pub delay: Duration,
}

impl FaultInjection {
    pub fn any(&self) -> bool {
        self.error_ratio > 0.0 || self.panic_ratio > 0.0 || !self.delay.is_zero()
    }
}

/// The poem-openapi `transform` of every `/items` operation. A panic in the handler is caught
/// here, inside the router, so its 500 keeps the operation's route in metrics and spans (the
/// app's outer guard catches the rest, without a route).
pub fn inject(ep: impl Endpoint + 'static) -> impl Endpoint {
    ep.around(|ep, req: Request| async move {
        if let Some(faults) = req.data::<FaultInjection>().copied() {
            if !faults.delay.is_zero() {
                tokio::time::sleep(faults.delay).await;
            }
            if faults.error_ratio > 0.0 && rand::random::<f64>() < faults.error_ratio {
                return Err(ApiError::InjectedFault.into());
            }
            if faults.panic_ratio > 0.0 && rand::random::<f64>() < faults.panic_ratio {
                panic!("injected panic (FAULT_PANIC_RATIO)");
            }
        }
        ep.call(req).await.map(IntoResponse::into_response)
    })
    .with(CatchPanic::new().with_handler(answer_panic))
}
