//! An unauthenticated echo socket for the Autobahn conformance suite (docs/conformance.md).
//!
//! Herald's own routes never include it: the example `autobahn_echo` serves it alone, through the
//! same accept loop ([`crate::serve`]), the same handshake and socket ([`super::socket`]), the same frame and message
//! limits and the same protocol-fault closes ([`super::read_error`]) as `/ws`, so the Autobahn
//! fuzzing client exercises Herald's WebSocket layer without the JSON protocol on top (the suite
//! needs echo). Text and binary messages are echoed as they come.

use super::handshake::Handshake;
use super::socket::Socket;
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tungstenite::Message;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};

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
        get(move |handshake: Option<Handshake>| async move {
            let Some(handshake) = handshake else {
                return (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade").into_response();
            };
            let config = WebSocketConfig::default()
                .max_message_size(Some(max_message_bytes))
                .max_frame_size(Some(max_message_bytes));
            handshake.accept(None, config, echo)
        }),
    )
}

/// Echoes text through the socket's direct path (as `/ws` writes events) and binary through
/// tungstenite.
async fn echo(mut socket: Socket) {
    while let Some(read) = socket.next().await {
        let message = match read {
            Ok(message) => message,
            Err(e) => {
                // Same as /ws: a protocol fault fails the connection with its close code.
                if let Some((code, reason)) = super::read_error::close_for_tungstenite(&e) {
                    let frame = CloseFrame { code: code.into(), reason: reason.into() };
                    let _ = socket.send_message(Message::Close(Some(frame))).await;
                }
                break;
            }
        };
        let sent = match message {
            Message::Text(text) => socket.send_text(text.as_str()).await,
            Message::Binary(_) => socket.send_message(message).await,
            Message::Close(_) => {
                // Same as /ws: flushing sends the close reply tungstenite queued (clean close).
                let _ = socket.flush().await;
                break;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if sent.is_err() {
            break;
        }
    }
}
