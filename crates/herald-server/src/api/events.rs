//! `POST /v1/events`: one event or a batch, appended all-or-nothing, receipts after the append.

use super::{ApiFailure, Body, Publisher};
use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use herald_protocol::PublishBody;
use serde_json::json;
use std::sync::Arc;
use tracing::debug;

/// Handles `POST /v1/events`.
pub async fn publish(
    State(state): State<Arc<AppState>>,
    _: Publisher,
    Body(body): Body,
) -> Result<Response, ApiFailure> {
    if state.is_draining() {
        return Err(ApiFailure::not_ready("server is draining: publish to another node"));
    }
    let parsed = PublishBody::parse(&body, state.config.max_batch)?;
    let single = matches!(parsed, PublishBody::Single(_));
    let events = parsed.into_events();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    let started = std::time::Instant::now();
    let receipts = state.engine.append(events).await?;
    for (kind, receipt) in kinds.iter().zip(&receipts) {
        if !receipt.duplicate {
            crate::metrics::published(*kind);
        }
    }
    debug!(events = receipts.len(), elapsed_us = started.elapsed().as_micros() as u64, "published");
    Ok(if single {
        Json(&receipts[0]).into_response()
    } else {
        Json(json!({ "results": receipts })).into_response()
    })
}
