//! `GET /v1/runs?state=active|stalled&limit=N`: runs in progress across users and nodes.

use super::history::number;
use super::{ApiFailure, Operator};
use crate::AppState;
use axum::Json;
use axum::extract::{Query, State};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most runs one request lists.
pub const MAX_LIMIT: usize = 1000;

/// One run in progress.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunSummary {
    /// The run's owner.
    #[schema(value_type = herald_protocol::UserId)]
    pub user_id: String,
    /// The run.
    pub run_id: String,
    /// Its last event (other than `run_stalled`), RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub last_event_at: String,
    /// Seconds since then.
    pub silent_s: u64,
}

/// A page of runs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunList {
    /// What was asked for: `active` or `stalled`.
    pub state: String,
    /// How many runs are in that state (the list holds at most `limit` of them).
    pub total: usize,
    /// Active: most recently active first. Stalled: longest silent first.
    pub runs: Vec<RunSummary>,
}

/// Lists started, not ended runs of every user; `state=stalled` only those silent for at least
/// `run_stall_s` (the ones reported with `run_stalled`).
#[utoipa::path(
    get,
    path = "/v1/runs",
    tag = "operator",
    operation_id = "list_runs",
    security(("api_key" = []), ("admin_token" = [])),
    params(
        ("state" = Option<String>, Query, description = "`active` (default) or `stalled`."),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Most runs listed (default 100)."),
    ),
    responses(
        (status = 200, description = "The runs.", body = RunList,
            example = json!({"state": "stalled", "total": 1, "runs": [{"user_id": "user-42", "run_id": "run-1", "last_event_at": "2025-01-01T12:00:00.000Z", "silent_s": 185}]})),
        super::responses::RequestRefused,
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<RunList>, ApiFailure> {
    if let Some(unknown) = query.keys().find(|k| !matches!(k.as_str(), "state" | "limit")) {
        return Err(ApiFailure::bad_request(
            "invalid_request",
            format!("unknown parameter {unknown:?}; known: state, limit"),
        ));
    }
    let wanted = query.get("state").map_or("active", String::as_str);
    let silent_for = match wanted {
        "active" => Duration::ZERO,
        "stalled" => state.config.run_stall,
        other => {
            return Err(ApiFailure::bad_request(
                "invalid_request",
                format!("state={other:?} must be `active` or `stalled`"),
            ));
        }
    };
    let limit = number(&query, "limit", 100)?;
    if limit == 0 || limit > MAX_LIMIT as u64 {
        return Err(ApiFailure::bad_request("invalid_request", format!("limit must be 1..={MAX_LIMIT}")));
    }
    let (total, runs) = state.engine.active_runs(silent_for, limit as usize).await?;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let runs = runs
        .into_iter()
        .map(|r| RunSummary {
            user_id: r.user.to_string(),
            run_id: r.run_id,
            last_event_at: humantime::format_rfc3339_millis(
                UNIX_EPOCH + Duration::from_millis(r.last_event_ms),
            )
            .to_string(),
            silent_s: now_ms.saturating_sub(r.last_event_ms) / 1000,
        })
        .collect();
    Ok(Json(RunList { state: wanted.to_owned(), total, runs }))
}
