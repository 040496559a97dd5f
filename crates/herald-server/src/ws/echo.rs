//! An unauthenticated echo socket for the Autobahn conformance suite (docs/conformance.md).
//!
//! Herald's own routes never include it: the example `autobahn_echo` serves it alone, through the
//! same accept loop ([`crate::serve`]), the same axum/tungstenite stack, the same frame and message
//! limits and the same protocol-fault closes ([`super::read_error`]) as `/ws`, so the Autobahn
//! fuzzing client exercises Herald's WebSocket layer without the JSON protocol on top (the suite
//! needs echo). Text and binary messages are echoed as they come.

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::routing::get;

/// Serves [`router`] alone on `listener` through Herald's own accept loop, until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, max_message_bytes: usize) -> std::io::Result<()> {
    let admit = |_| Ok(crate::limits::IpSlot::default());
    let handshake_timeout = std::time::Duration::from_secs(10);
    crate::serve::serve(listener, router(max_message_bytes), handshake_timeout, admit, std::future::pending())
        .await
}

/// `GET /__echo`, refusing messages over `max_message_bytes` like `/ws` does.
pub fn router(max_message_bytes: usize) -> Router {
    Router::new().route(
        "/__echo",
        get(move |upgrade: WebSocketUpgrade| async move {
            upgrade.max_message_size(max_message_bytes).max_frame_size(max_message_bytes).on_upgrade(echo)
        }),
    )
}

async fn echo(mut socket: WebSocket) {
    while let Some(read) = socket.recv().await {
        let message = match read {
            Ok(message) => message,
            Err(e) => {
                // Same as /ws: a protocol fault fails the connection with its close code.
                if let Some((code, reason)) = super::read_error::close_for(&e) {
                    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                }
                break;
            }
        };
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
