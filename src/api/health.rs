//! `/health/live` and `/health/ready`, for orchestrators and load balancers.

use poem_openapi::{payload::Json, ApiResponse, Object, OpenApi, Tags};

use super::{
    answers::{Failure, LiveErrors, ReadyErrors},
    errors::ApiError,
};
use crate::store::ItemStore;

#[derive(Tags)]
enum ApiTags {
    /// Probes for orchestrators.
    Health,
}

pub struct HealthApi {
    pub store: ItemStore,
}

#[derive(Object)]
struct Status {
    status: String,
}

#[derive(ApiResponse)]
#[oai(header(
    name = "traceresponse",
    ty = "Option<String>",
    description = "`00-<trace id>-<span id>-<flags>` of the request's server span, when it is traced."
))]
enum Healthy {
    /// `{"status": "ok"}`.
    #[oai(status = 200)]
    Ok(Json<Status>),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// The process is up and serving: 200 even when the database is down, so that an
    /// orchestrator does not restart a healthy process for a database outage.
    #[oai(path = "/health/live", method = "get", operation_id = "live")]
    async fn live(&self) -> Result<Healthy, Failure<LiveErrors>> {
        Ok(Healthy::Ok(Json(Status {
            status: "ok".into(),
        })))
    }

    /// The service can do its work: 200 when the database answers, else 503.
    #[oai(path = "/health/ready", method = "get", operation_id = "ready")]
    async fn ready(&self) -> Result<Healthy, Failure<ReadyErrors>> {
        match self.store.ping().await {
            Ok(()) => Ok(Healthy::Ok(Json(Status {
                status: "ok".into(),
            }))),
            Err(err) => {
                tracing::warn!(error = %err, "readiness check failed");
                Err(ApiError::Unavailable.into())
            }
        }
    }
}
