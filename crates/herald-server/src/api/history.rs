//! `GET /v1/users/{user_id}/events?after=N&limit=M[&epoch=E]`: a user's retained events.

use super::{ApiFailure, Publisher};
use crate::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use herald_protocol::UserId;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Most events one history request returns.
pub const MAX_LIMIT: usize = 1000;

/// Handles the history request; `reset: true` says events after `after` are no longer retained
/// (or `epoch` is not the log's), and `events` then starts at the oldest retained one.
pub async fn list(
    State(state): State<Arc<AppState>>,
    _: Publisher,
    Path(user_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiFailure> {
    let user =
        UserId::parse(&user_id).map_err(|e| ApiFailure::bad_request("invalid_request", e.to_string()))?;
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
    Ok(Json(json!({
        "epoch": history.epoch,
        "seq": history.seq,
        "reset": history.reset,
        "events": events,
    })))
}

fn number(query: &HashMap<String, String>, key: &str, default: u64) -> Result<u64, ApiFailure> {
    match query.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ApiFailure::bad_request("invalid_request", format!("{key}={v:?} must be a non-negative integer"))
        }),
    }
}
