//! `GET /__echo`: an unauthenticated echo socket for the Autobahn conformance suite.
//!
//! Compiled only with the `autobahn` cargo feature (never in a normal build): it lets the
//! Autobahn fuzzing client exercise Herald's WebSocket layer — the same axum/tungstenite stack and
//! the same frame and message limits as `/ws` — without the protocol on top. Text and binary
//! messages are echoed as they come.

use crate::AppState;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use std::sync::Arc;

/// Handles `GET /__echo`.
pub async fn upgrade(State(state): State<Arc<AppState>>, upgrade: WebSocketUpgrade) -> Response {
    let max = state.config.max_message_bytes;
    upgrade.max_message_size(max).max_frame_size(max).on_upgrade(echo)
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Close(_) => {
                // Same as /ws: flushing sends the close reply tungstenite queued (clean close).
                let _ = futures_util::SinkExt::flush(&mut socket).await;
                break;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}
