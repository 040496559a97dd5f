//! Acting on one user across nodes: `POST /v1/users/{user_id}/disconnect` (logout, ban) and
//! `GET /v1/users/{user_id}/presence`.

use super::{ApiFailure, Body, Operator};
use crate::AppState;
use crate::engine::{Control, NodePresence};
use axum::Json;
use axum::extract::{Path, State};
use herald_protocol::UserId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest disconnect reason: it travels in the WebSocket close frame, which holds 123 bytes.
pub const MAX_REASON_BYTES: usize = 123;

/// What to do to the user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    /// Why (sent as the close frame's reason, and logged): at most 123 bytes.
    #[schema(max_length = 123, example = "logged out")]
    pub reason: String,
    /// Unix seconds: from now on, refuse this user's tokens issued (`iat`) before this time,
    /// until they would have expired anyway (`revocation_ttl_s`). Tokens without `iat` (or
    /// `nbf`) are refused while the revocation lasts. At most `revocation_ttl_s` in the future.
    #[schema(minimum = 0, example = 1767225600)]
    pub revoke_before: Option<u64>,
}

/// What the disconnect did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Disconnected {
    /// The user.
    #[schema(value_type = UserId)]
    pub user_id: String,
    /// Connections that were open (on every node) and are now being closed with 4003.
    pub disconnected: usize,
    /// The revocation now in effect, unix seconds (`null`: none).
    pub revoke_before: Option<u64>,
}

/// A user's connections on one node.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeConnections {
    /// The node's id (as in `GET /v1/info`).
    pub node: String,
    /// Open connections of the user there.
    pub connections: usize,
    /// When the oldest of them opened (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub since: String,
}

/// Where a user is connected.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Presence {
    /// The user.
    #[schema(value_type = UserId)]
    pub user_id: String,
    /// Open connections on every node.
    pub connections: usize,
    /// Per node, those that hold at least one; oldest connection first.
    pub nodes: Vec<NodeConnections>,
}

fn user(raw: &str) -> Result<UserId, ApiFailure> {
    UserId::parse(raw).map_err(|e| ApiFailure::bad_request("invalid_request", e.to_string()))
}

/// Closes every socket of the user on every node with close code 4003; with `revoke_before`,
/// also refuses the user's tokens issued before that time from now on.
#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/disconnect",
    tag = "operator",
    operation_id = "disconnect_user",
    security(("api_key" = []), ("admin_token" = [])),
    params(("user_id" = herald_protocol::UserId, Path, description = "The user to disconnect.")),
    request_body(content = DisconnectRequest, example = json!({"reason": "logged out", "revoke_before": 1767225600})),
    responses(
        (status = 200, description = "The user's sockets are closing.", body = Disconnected,
            example = json!({"user_id": "user-42", "disconnected": 2, "revoke_before": 1767225600})),
        super::responses::RequestRefused,
    )
)]
pub async fn disconnect(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Path(user_id): Path<String>,
    Body(body): Body,
) -> Result<Json<Disconnected>, ApiFailure> {
    let user = user(&user_id)?;
    let request: DisconnectRequest = serde_json::from_slice(&body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() { "invalid_json" } else { "invalid_request" };
        ApiFailure::bad_request(code, format!("disconnect request: {e}"))
    })?;
    if request.reason.len() > MAX_REASON_BYTES {
        return Err(ApiFailure::bad_request(
            "invalid_request",
            format!(
                "reason is {} bytes; the limit is {MAX_REASON_BYTES} (a close frame's reason)",
                request.reason.len()
            ),
        ));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let ttl = state.config.revocation_ttl.as_secs();
    if let Some(before) = request.revoke_before {
        if before > now + ttl {
            return Err(ApiFailure::bad_request(
                "invalid_request",
                format!("revoke_before is more than revocation_ttl_s ({ttl} s) in the future"),
            ));
        }
        // Tokens issued before `before` live at most `ttl` (the operator's promise): keep the
        // revocation until the last of them has expired.
        let keep = Duration::from_secs((before + ttl).saturating_sub(now));
        if !keep.is_zero() {
            state.engine.revoke(&user, before, keep).await?;
        }
    }
    let elsewhere: usize = remote_presence(&state, &user).await?.iter().map(|p| p.connections).sum();
    let here = crate::node::disconnect_here(&state, &user, &request.reason);
    let order =
        Control::Disconnect { user: user.to_string(), reason: request.reason, origin: state.node.id.clone() };
    state.engine.broadcast(&order).await?;
    let revoke_before = state.engine.revoked_before(&user).await?;
    Ok(Json(Disconnected { user_id: user.to_string(), disconnected: here + elsewhere, revoke_before }))
}

/// The user's open connections: how many, on which nodes, since when.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/presence",
    tag = "operator",
    operation_id = "user_presence",
    security(("api_key" = []), ("admin_token" = [])),
    params(("user_id" = herald_protocol::UserId, Path, description = "The user.")),
    responses(
        (status = 200, description = "The user's connections.", body = Presence,
            example = json!({"user_id": "user-42", "connections": 2, "nodes": [{"node": "3f9a1c2b7d4e", "connections": 2, "since": "2025-01-01T12:00:00.000Z"}]})),
        super::responses::RequestRefused,
    )
)]
pub async fn presence(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Path(user_id): Path<String>,
) -> Result<Json<Presence>, ApiFailure> {
    let user = user(&user_id)?;
    let mut all = remote_presence(&state, &user).await?;
    all.extend(crate::node::local_presence(&state, &user));
    all.sort_by_key(|p| p.since_ms);
    let nodes: Vec<NodeConnections> = all
        .into_iter()
        .map(|p| NodeConnections {
            node: p.node,
            connections: p.connections,
            since: humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(p.since_ms))
                .to_string(),
        })
        .collect();
    let connections = nodes.iter().map(|n| n.connections).sum();
    Ok(Json(Presence { user_id: user.to_string(), connections, nodes }))
}

/// The user's connections on the other live nodes, as they recorded them.
async fn remote_presence(state: &AppState, user: &UserId) -> Result<Vec<NodePresence>, ApiFailure> {
    let recorded = state.engine.presence(user).await?;
    if recorded.is_empty() {
        return Ok(recorded);
    }
    let live = crate::node::all_reports(state).await?;
    Ok(recorded
        .into_iter()
        .filter(|p| p.node != state.node.id && live.iter().any(|r| r.id == p.node))
        .collect())
}
