//! `POST /v1/events`: one event or a batch, appended all-or-nothing, receipts after the append.

use super::{Accepting, ApiFailure, Body, Publisher};
use crate::AppState;
use crate::engine::AppendError;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use herald_protocol::{EventInput, PublishBody, Receipt, Receipts};
use serde::Serialize;
use std::sync::Arc;
use tracing::debug;

/// What `POST /v1/events` answers: a receipt, or (for a batch) the receipts in order.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Published {
    /// The receipt of a single event.
    One(Receipt),
    /// The receipts of a batch.
    Batch(Receipts),
}

/// Publishes one agent event, or a batch of them all-or-nothing.
///
/// The answer is sent once the events are in the user's log. The same `id` for the same user
/// within retention returns the first receipt with `"duplicate": true` and is not delivered twice.
/// Run events are checked against the run rules (docs/protocol.md): a run's first event is
/// `agent_started`, nothing follows a terminal event.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "publish",
    operation_id = "publish",
    security(("api_key" = [])),
    request_body(
        content = PublishBody,
        content_type = "application/json",
        examples(
            ("agent_started" = (summary = "A run starts", value = json!({"user_id": "user-42", "event": "agent_started", "run_id": "run-1", "thread_id": "thread-7", "data": {"model": "gpt-4o"}}))),
            ("agent_thinking" = (summary = "Reasoning", value = json!({"user_id": "user-42", "event": "agent_thinking", "run_id": "run-1", "data": {"text": "Looking up the forecast"}}))),
            ("tool_executing" = (summary = "A tool call begins", value = json!({"user_id": "user-42", "event": "tool_executing", "run_id": "run-1", "data": {"tool_name": "search", "tool_call_id": "call-1", "parameters": {"q": "weather Paris"}}}))),
            ("tool_completed" = (summary = "The tool call ends", value = json!({"user_id": "user-42", "event": "tool_completed", "run_id": "run-1", "data": {"tool_name": "search", "tool_call_id": "call-1", "result": {"temp_c": 18}}}))),
            ("agent_text" = (summary = "Streamed answer text", value = json!({"user_id": "user-42", "event": "agent_text", "run_id": "run-1", "data": {"delta": "It is 18 °C in Paris."}}))),
            ("agent_completed" = (summary = "The run finishes", value = json!({"user_id": "user-42", "event": "agent_completed", "run_id": "run-1", "id": "run-1-done"}))),
            ("agent_error" = (summary = "The run fails", value = json!({"user_id": "user-42", "event": "agent_error", "run_id": "run-2", "data": {"message": "model timed out"}}))),
            ("batch" = (summary = "A whole run in one batch", value = json!({"events": [
                {"user_id": "user-42", "event": "agent_started", "run_id": "run-3"},
                {"user_id": "user-42", "event": "agent_text", "run_id": "run-3", "data": {"delta": "Hello"}},
                {"user_id": "user-42", "event": "agent_completed", "run_id": "run-3"}
            ]}))),
        )
    ),
    responses(
        (status = 200, description = "Appended: the receipt (or, for a batch, `{\"results\":[…]}`).", body = Published,
            example = json!({"id": "0192f1c2-7b1e-7c3a-9d2e-5b8f0a1c2d3e", "seq": 1, "epoch": "0192f1c2-7b1e-7c3a", "connections": 2, "duplicate": false})),
        super::responses::AppendRefused,
    )
)]
pub async fn publish(
    State(state): State<Arc<AppState>>,
    _: Publisher,
    _: Accepting,
    Body(body): Body,
) -> Result<Response, ApiFailure> {
    let parsed = PublishBody::parse(&body, state.config.max_batch)?;
    let single = matches!(parsed, PublishBody::Single(_));
    let receipts = append(&state, parsed).await?;
    let_deliveries_run().await;
    let published = if single {
        Published::One(receipts.into_iter().next().expect("one receipt per event"))
    } else {
        Published::Batch(Receipts { results: receipts })
    };
    Ok(Json(published).into_response())
}

/// Lets the sockets an append just woke write their frames before the receipt goes out.
///
/// An append wakes the connections of its users, and they queue on the runtime behind the
/// publisher's request. Answering first lets a publisher send its next request while the last
/// one's frames still wait, so under load publishers outrun delivery and every frame waits
/// longer. Yielding once puts the receipt behind those writes, the way a server that writes
/// its frames inside the request would. (Measured at 1,000 connections, publishers as fast as
/// they are answered: p99 publish → receive 10 → 6 ms, throughput within the noise;
/// docs/benchmarks.md.)
/// Nothing waits for a slow socket: its frames stay in its log.
pub async fn let_deliveries_run() {
    tokio::task::yield_now().await;
}

/// Appends a parsed body all-or-nothing and counts what was new: the one append path of both
/// transports (`POST /v1/events` and the publisher socket), so they refuse and count alike.
pub async fn append(state: &AppState, body: PublishBody) -> Result<Vec<Receipt>, ApiFailure> {
    let started = std::time::Instant::now();
    let receipts = append_counted(state, body.into_events()).await?;
    debug!(events = receipts.len(), elapsed_us = started.elapsed().as_micros() as u64, "published");
    Ok(receipts)
}

/// Appends events all-or-nothing and counts the new ones by kind (a retried id is not counted
/// twice): every publish path appends through here, the AG-UI bridge included, which maps the
/// engine's refusals to its own indexes.
pub async fn append_counted(state: &AppState, events: Vec<EventInput>) -> Result<Vec<Receipt>, AppendError> {
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    let receipts = state.engine.append(events).await?;
    crate::metrics::published(kinds.iter().zip(&receipts).filter(|(_, r)| !r.duplicate).map(|(k, _)| *k));
    Ok(receipts)
}
