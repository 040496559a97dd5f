//! `GET /ws`: authenticate before the upgrade, then hand the socket to [`connection`].
//!
//! Everything that can refuse a client happens here, before the upgrade, so a refused client
//! gets an HTTP status and a JSON body (401, 403, 400, 503) rather than a socket that closes.

pub mod connection;
pub mod echo;
pub mod handshake;
pub mod publish;
pub mod read_error;
pub mod refresh;
pub mod socket;

use crate::AppState;
use crate::api::{Accepting, ApiFailure};
use crate::limits::PeerAddr;
use crate::registry::UserContext;
use crate::stream::Cursor;
use axum::extract::OptionalFromRequestParts;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;
use connection::Params;
use handshake::Handshake;
use herald_protocol::SUBPROTOCOL;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use tungstenite::protocol::WebSocketConfig;

/// Receive buffer per connection. Clients send little (pings, small messages), and tungstenite
/// zero-fills its read buffer, so a small one keeps idle connections cheap.
const READ_BUFFER_BYTES: usize = 1024;

/// tungstenite's buffer for the control frames it writes (pings, pongs, the close): event frames
/// are queued by [`socket::Socket`] instead.
const WRITE_BUFFER_BYTES: usize = 1024;

#[derive(Debug, Deserialize)]
struct WsQuery {
    after: Option<String>,
    epoch: Option<String>,
}

/// `GET /ws`: the WebSocket endpoint (protocol v1, docs/protocol.md).
///
/// Authenticate with `Authorization: Bearer <JWT>`, the subprotocols `herald.v1, bearer.<JWT>`,
/// or a single-use `?ticket=` from `POST /v1/tickets`. Resume with `?after=<seq>&epoch=<epoch>`.
/// A plain GET without the upgrade headers is answered 400 `not_websocket` once the credential
/// checks pass.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "stream",
    operation_id = "websocket",
    params(
        ("after" = Option<u64>, Query, description = "Resume after this seq (the last one the client applied)."),
        ("epoch" = Option<String>, Query, description = "The epoch `after` belongs to (from `welcome`); only with `after`."),
    ),
    security(("jwt" = []), ("ticket" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: frames follow (docs/protocol.md)."),
        crate::api::responses::StreamRefused,
    )
)]
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    PeerAddr(peer): PeerAddr,
    _: Accepting,
    handshake: Option<Handshake>,
) -> Result<Response, ApiFailure> {
    // Held for the connection's life (moved into the upgrade task); freed on any refusal below.
    let ip_slot = state
        .limits
        .connect_ip(peer.map(|p| p.ip()))
        .inspect_err(|_| crate::metrics::connection_attempt("limited"))?;
    state.auth.origin(&headers).inspect_err(|_| crate::metrics::connection_attempt("forbidden"))?;
    let identity = authenticate(&state, &headers, &query)
        .await
        .inspect_err(|_| crate::metrics::connection_attempt("unauthorized"))?;
    let cursor = parse_cursor(&query)?;
    let Some(handshake) = handshake else {
        return Err(ApiFailure::bad_request(
            "not_websocket",
            "GET /ws expects a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
        ));
    };
    let manager = state.registry.manager(&UserContext::from_user(identity.user.clone()));
    let params = Params {
        heartbeat: state.config.heartbeat,
        max_pending_bytes: state.config.max_pending_bytes as u64,
        expires_at: identity.expires_at,
        max_client_msgs_per_s: state.config.max_client_msgs_per_s,
    };
    let max = state.config.max_message_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES);
    let tracker = state.tracker.clone();
    let shutdown = state.shutdown.clone();
    let upstream = state.upstream.clone();
    let refresher = refresh::Refresher::new(state.clone());
    Ok(handshake.accept(Some(SUBPROTOCOL), config, move |socket| {
        tracker.track_future(async move {
            let _ip_slot = ip_slot;
            connection::serve(socket, manager, cursor, params, upstream, shutdown, refresher).await
        })
    }))
}

/// A `?ticket=` (taken from the engine, once) or else a JWT from the headers: how every client
/// stream (`/ws`, the AG-UI SSE stream) learns who is reading.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<crate::auth::Identity, ApiFailure> {
    let Some(ticket) = query.get("ticket") else {
        let identity = state.auth.socket(headers).await?;
        not_revoked(state, &identity).await?;
        return Ok(identity);
    };
    let hash = crate::auth::ticket::ticket_hash(ticket);
    match state.engine.take_ticket(&hash).await? {
        Some(user) => Ok(crate::auth::Identity { user, expires_at: None, issued_at: None }),
        None => {
            Err(crate::auth::AuthError::Invalid("ticket is unknown, expired or already used".into()).into())
        }
    }
}

/// Refuses a token the user's revocation covers. (Tickets are minted by the backend with an API
/// key, so they are not checked: do not mint tickets for a user you banned.)
pub(crate) async fn not_revoked(
    state: &AppState,
    identity: &crate::auth::Identity,
) -> Result<(), ApiFailure> {
    let revoked_before = state.engine.revoked_before(&identity.user).await?;
    crate::auth::check_revocation(revoked_before, identity.issued_at)?;
    Ok(())
}

fn parse_cursor(query: &HashMap<String, String>) -> Result<Option<Cursor>, ApiFailure> {
    let q = WsQuery { after: query.get("after").cloned(), epoch: query.get("epoch").cloned() };
    match (q.after, q.epoch) {
        (None, None) => Ok(None),
        (Some(after), epoch) => {
            let after = after.parse::<u64>().map_err(|_| {
                ApiFailure::bad_request(
                    "invalid_cursor",
                    format!("after={after:?} must be a non-negative integer seq"),
                )
            })?;
            Ok(Some(Cursor { after, epoch: Some(epoch.unwrap_or_default()) }))
        }
        (None, Some(_)) => Err(ApiFailure::bad_request(
            "invalid_cursor",
            "epoch was given without after: resume with ?after=<seq>&epoch=<epoch>",
        )),
    }
}

/// A WebSocket upgrade if the request is one; `None` lets the handler answer plain GETs clearly.
pub struct MaybeUpgrade(Option<WebSocketUpgrade>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUpgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(MaybeUpgrade(WebSocketUpgrade::from_request_parts(parts, state).await.ok()))
    }
}

/// `Option<Handshake>`: `None` lets the handler answer plain GETs clearly.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Handshake {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(Handshake::from_parts(parts))
    }
}
