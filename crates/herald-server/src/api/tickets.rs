//! `POST /v1/tickets`: a single-use ticket for `/ws?ticket=`, for browsers that cannot set headers.

use super::{ApiFailure, Body, Publisher};
use crate::AppState;
use crate::auth::ticket::{DEFAULT_TTL, MAX_TTL, new_ticket, ticket_hash};
use axum::Json;
use axum::extract::State;
use herald_protocol::UserId;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketRequest {
    user_id: String,
    ttl_s: Option<u64>,
}

/// Handles `POST /v1/tickets` `{"user_id","ttl_s"}` → `{"ticket","expires_at"}`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    _: Publisher,
    Body(body): Body,
) -> Result<Json<Value>, ApiFailure> {
    let request: TicketRequest = serde_json::from_slice(&body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() { "invalid_json" } else { "invalid_request" };
        ApiFailure::bad_request(code, format!("ticket request: {e}"))
    })?;
    let user = UserId::parse(&request.user_id)
        .map_err(|e| ApiFailure::bad_request("invalid_request", e.to_string()))?;
    let ttl = match request.ttl_s {
        None => DEFAULT_TTL,
        Some(s) if s == 0 || s > MAX_TTL.as_secs() => {
            return Err(ApiFailure::bad_request(
                "invalid_request",
                format!("ttl_s must be 1..={} seconds", MAX_TTL.as_secs()),
            ));
        }
        Some(s) => Duration::from_secs(s),
    };
    let ticket = new_ticket();
    state.engine.put_ticket(&ticket_hash(&ticket), &user, ttl).await?;
    let expires_at = humantime::format_rfc3339_seconds(SystemTime::now() + ttl).to_string();
    Ok(Json(json!({ "ticket": ticket, "expires_at": expires_at })))
}
