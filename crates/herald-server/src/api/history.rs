//! `GET /v1/users/{user_id}/events?after=N&limit=M[&epoch=E]`: a user's retained events; with
//! `snapshot=true[&run_id=R]`, the compacted state of the active runs instead (what a socket
//! with no cursor starts from).

use super::{ApiFailure, Publisher};
use crate::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use herald_protocol::UserId;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

/// Most events one history request returns.
pub const MAX_LIMIT: usize = 1000;

/// A page of a user's retained events.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HistoryPage<'a> {
    /// The log's epoch; seqs compare only within one epoch.
    pub epoch: String,
    /// The log's latest seq.
    pub seq: u64,
    /// True when events after `after` are no longer retained (or `epoch` is not the log's):
    /// `events` then starts at the oldest retained one.
    pub reset: bool,
    /// The events, oldest first, as clients receive them (`{"type":"event",…}` frames).
    #[schema(value_type = Vec<herald_protocol::frame::EventFrame>)]
    pub events: Vec<&'a RawValue>,
}

/// Lists a user's retained events after `after`, oldest first.
///
/// `reset: true` says events after `after` are no longer retained (or `epoch` is not the log's),
/// and `events` then starts at the oldest retained one.
///
/// With `snapshot=true`: the snapshot of the user's active runs (or of `run_id` only) — whole
/// runs however long, merged text frames marked `"snapshot": true` — and `seq` is the head it was
/// taken at; `after`, `limit` and `epoch` do not apply then.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/events",
    tag = "publish",
    operation_id = "history",
    security(("api_key" = [])),
    params(
        ("user_id" = herald_protocol::UserId, Path, description = "The user whose log is read."),
        ("after" = Option<u64>, Query, description = "Return events with a seq above this (default 0)."),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Most events returned (default 100)."),
        ("epoch" = Option<String>, Query, description = "The epoch `after` belongs to; another epoch gives `reset: true`."),
        ("snapshot" = Option<bool>, Query, description = "`true`: return the compacted state of the active runs (every run whole, merged `agent_text`/`agent_thinking` frames marked `\"snapshot\": true`) instead of retained events. Not combined with `after`, `limit` or `epoch`."),
        ("run_id" = Option<String>, Query, description = "With `snapshot=true`: that run only (no events when it is not active)."),
    ),
    responses(
        (status = 200, description = "The page of events.", body = HistoryPage,
            example = json!({"epoch": "0192f1c2-7b1e-7c3a", "seq": 1, "reset": false, "events": [{"type": "event", "seq": 1, "id": "e1", "user_id": "user-42", "thread_id": null, "run_id": "run-1", "event": "agent_started", "data": {}, "ts": "2025-01-01T12:00:00.000Z"}]})),
        super::responses::RequestRefused,
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    _: Publisher,
    Path(user_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiFailure> {
    let user =
        UserId::parse(&user_id).map_err(|e| ApiFailure::bad_request("invalid_request", e.to_string()))?;
    if flag(&query, "snapshot")? {
        return snapshot(&state, &user, &query).await;
    }
    if query.contains_key("run_id") {
        return Err(ApiFailure::bad_request("invalid_request", "run_id is only for snapshot=true"));
    }
    let after = number(&query, "after", 0)?;
    let limit = number(&query, "limit", 100)?;
    if limit == 0 || limit > MAX_LIMIT as u64 {
        return Err(ApiFailure::bad_request("invalid_request", format!("limit must be 1..={MAX_LIMIT}")));
    }
    let history =
        state.engine.history(&user, after, query.get("epoch").map(String::as_str), limit as usize).await?;
    let events: Vec<&RawValue> = history
        .events
        .iter()
        .map(|e| serde_json::from_str::<&RawValue>(e.frame.as_str()).expect("frames are JSON"))
        .collect();
    Ok(Json(HistoryPage { epoch: history.epoch.clone(), seq: history.seq, reset: history.reset, events })
        .into_response())
}

/// The snapshot of the active runs, as a page: the frames a socket with no cursor starts from.
async fn snapshot(
    state: &AppState,
    user: &UserId,
    query: &HashMap<String, String>,
) -> Result<Response, ApiFailure> {
    if let Some(key) = ["after", "limit", "epoch"].into_iter().find(|k| query.contains_key(*k)) {
        return Err(ApiFailure::bad_request(
            "invalid_request",
            format!("{key} does not apply to snapshot=true (the snapshot is every active run, whole)"),
        ));
    }
    let log = state.engine.open_log(user).await?;
    let (seq, frames) = log.snapshot(query.get("run_id").map(String::as_str));
    let events: Vec<&RawValue> = frames
        .iter()
        .map(|f| serde_json::from_str::<&RawValue>(&f.frame).expect("frames are JSON"))
        .collect();
    Ok(Json(HistoryPage { epoch: log.epoch().to_owned(), seq, reset: false, events }).into_response())
}

fn flag(query: &HashMap<String, String>, key: &str) -> Result<bool, ApiFailure> {
    match query.get(key).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => {
            Err(ApiFailure::bad_request("invalid_request", format!("{key}={v:?} must be true or false")))
        }
    }
}

/// The query parameter `key` as a non-negative integer (`default` when absent), else 400.
pub(crate) fn number(query: &HashMap<String, String>, key: &str, default: u64) -> Result<u64, ApiFailure> {
    match query.get(key) {
        None => Ok(default),
        // Digits only: `parse` would also take a leading `+`, which is not an integer in the spec.
        Some(v) => v.parse().ok().filter(|_| v.bytes().all(|b| b.is_ascii_digit())).ok_or_else(|| {
            ApiFailure::bad_request("invalid_request", format!("{key}={v:?} must be a non-negative integer"))
        }),
    }
}
