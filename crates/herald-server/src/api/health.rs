//! What load balancers, orchestrators and Prometheus ask: liveness, readiness, metrics.

use super::{Accepting, ApiFailure};
use crate::AppState;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::sync::Arc;

/// `{"status":"ok"}`: the process answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Live {
    /// Always `ok`.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
}

/// `{"status":"ready","engine"}`: the server takes traffic.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// Always `ready`.
    #[schema(value_type = String, example = "ready")]
    pub status: &'static str,
    /// The engine in use: `memory` or `redis`.
    #[schema(value_type = String, example = "redis")]
    pub engine: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    operation_id = "live",
    responses((status = 200, description = "Alive.", body = Live))
)]
pub async fn live() -> Json<Live> {
    Json(Live { status: "ok" })
}

/// Readiness: 200 while the engine works and the server is not draining, else 503 `not_ready`.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    operation_id = "ready",
    responses(
        (status = 200, description = "Ready for traffic.", body = Ready),
        (status = 503, response = super::responses::NotReady),
    )
)]
pub async fn ready(State(state): State<Arc<AppState>>, _: Accepting) -> Result<Json<Ready>, ApiFailure> {
    if !state.engine.is_ready().await {
        return Err(ApiFailure::not_ready(format!("{} engine unreachable", state.engine.name())));
    }
    Ok(Json(Ready { status: "ready", engine: state.engine.name() }))
}

/// `GET /metrics`: Prometheus metrics (text exposition format, names prefixed `herald_`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format.", body = String, content_type = "text/plain"))
)]
pub async fn metrics() -> String {
    crate::metrics::record_deliveries();
    crate::metrics::install().render()
}
