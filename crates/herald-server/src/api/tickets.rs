//! `POST /v1/tickets`: a single-use ticket for `/ws?ticket=`, for browsers that cannot set headers.

use super::{ApiFailure, Body, Operator};
use crate::AppState;
use crate::auth::ticket::{DEFAULT_TTL, MAX_TTL, new_ticket, ticket_hash};
use axum::Json;
use axum::extract::State;
use herald_protocol::UserId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A ticket request.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    /// The user the ticket lets connect.
    #[schema(value_type = UserId)]
    pub user_id: String,
    /// Lifetime in seconds: 1 to 300, default 60.
    #[schema(minimum = 1, maximum = 300)]
    pub ttl_s: Option<u64>,
}

/// A single-use ticket for `GET /ws?ticket=` or `GET /v1/agui/stream?ticket=`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ticket {
    /// The ticket; valid once, until `expires_at`.
    pub ticket: String,
    /// When the ticket expires (RFC 3339, UTC, whole seconds).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// Creates a single-use ticket with which a browser that cannot set headers opens a stream as
/// `user_id`. The admin token may create tickets too (the admin page watches a user's stream so).
#[utoipa::path(
    post,
    path = "/v1/tickets",
    tag = "publish",
    operation_id = "create_ticket",
    security(("api_key" = []), ("admin_token" = [])),
    request_body(content = TicketRequest, example = json!({"user_id": "user-42", "ttl_s": 60})),
    responses(
        (status = 200, description = "The ticket.", body = Ticket,
            example = json!({"ticket": "tk_3q2…", "expires_at": "2025-01-01T12:01:00Z"})),
        super::responses::RequestRefused,
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Body(body): Body,
) -> Result<Json<Ticket>, ApiFailure> {
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
    Ok(Json(Ticket { ticket, expires_at }))
}
