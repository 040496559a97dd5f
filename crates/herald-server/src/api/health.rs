//! Health endpoints for load balancers and orchestrators.

use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use std::sync::Arc;

/// `GET /health/live`: the process answers.
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /health/ready`: 200 while the engine works and the server is not draining, else 503.
pub async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<serde_json::Value>) {
    if state.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": "not_ready", "message": "server is draining"}})),
        );
    }
    if !state.engine.is_ready().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"error": {"code": "not_ready", "message": format!("{} engine unreachable", state.engine.name())}}),
            ),
        );
    }
    (StatusCode::OK, Json(json!({"status": "ready", "engine": state.engine.name()})))
}
