//! Opt-in fault injection (`FAULT_ERROR_RATIO`, `FAULT_DELAY`) on `/items*`, so that demos and the
//! live alert checks can make real errors and latency without breaking anything.

use std::time::Duration;

use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use super::errors::ApiError;

#[derive(Debug, Clone, Copy)]
pub struct FaultInjection {
    pub error_ratio: f64,
    pub delay: Duration,
}

impl<E: Endpoint> Middleware<E> for FaultInjection {
    type Output = FaultEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        FaultEndpoint { inner, faults: *self }
    }
}

pub struct FaultEndpoint<E> {
    inner: E,
    faults: FaultInjection,
}

impl<E: Endpoint> Endpoint for FaultEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if req.uri().path().starts_with("/items") {
            if !self.faults.delay.is_zero() {
                tokio::time::sleep(self.faults.delay).await;
            }
            if self.faults.error_ratio > 0.0 && rand::random::<f64>() < self.faults.error_ratio {
                return Err(ApiError::InjectedFault.into());
            }
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}
