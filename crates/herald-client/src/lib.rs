//! A Rust client for Herald: open a socket (with resume), read frames, publish events.
//!
//! One piece of client code speaks the protocol for the integration tests and `herald check`, so
//! a protocol change is made in one place. It is deliberately small: it does not reconnect by
//! itself — callers that test resume want to control exactly when that happens.

use futures_util::{SinkExt, StreamExt};
use herald_protocol::frame::EventFrame;
use herald_protocol::{Receipt, Recovery, ServerFrame};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod publish_socket;

pub use publish_socket::PublishSocket;

pub use herald_protocol;

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the handshake with an HTTP status (401, 403, …) and body.
    #[error("handshake refused with {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Response body (the JSON error).
        body: String,
    },
    /// The server closed the socket with a close frame.
    #[error("closed by server with {code}: {reason}")]
    Closed {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The socket ended without a close frame.
    #[error("connection ended without a close frame")]
    Ended,
    /// A frame that is not valid protocol JSON.
    #[error("unexpected frame: {0}")]
    Protocol(String),
    /// WebSocket transport error.
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    /// HTTP transport error.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// No frame in time.
    #[error("timed out waiting for a frame")]
    Timeout,
    /// The publisher socket refused a frame (nothing of it was appended).
    #[error("{code}: {message}")]
    Rejected {
        /// The HTTP API's error code (`invalid_event`, `run_state`, …).
        code: String,
        /// The server's explanation.
        message: String,
    },
}

/// How a socket authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `Authorization: Bearer <jwt>`.
    Header,
    /// `Sec-WebSocket-Protocol: herald.v1, bearer.<jwt>` (what browsers do).
    Subprotocol,
}

/// Signs an HS256 client token for `sub`, valid for `ttl`.
pub fn sign_token(secret: &str, sub: &str, ttl: Duration) -> String {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let claims = serde_json::json!({ "sub": sub, "exp": (now + ttl).as_secs(), "iat": now.as_secs() });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// Derives `ws://host:port/ws` from `http://host:port` (and `https` → `wss`).
pub fn ws_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let rest = base.strip_prefix("https://").map(|r| format!("wss://{r}"));
    let rest = rest.or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")));
    format!("{}/ws", rest.unwrap_or_else(|| base.to_owned()))
}

/// What the server said when the socket opened, and the frames before `synced`.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The connection id.
    pub connection_id: String,
    /// The log's epoch.
    pub epoch: String,
    /// The log's head at open.
    pub seq: u64,
    /// How the cursor was honoured.
    pub recovery: Recovery,
    /// Replayed or snapshot events, before `synced`.
    pub backlog: Vec<EventFrame>,
}

/// One open Herald socket.
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The last seq received (the resume cursor).
    pub last_seq: u64,
}

impl Connection {
    /// Connects to `base` (`http://host:port`) as the holder of `token`, optionally resuming.
    pub async fn connect(
        base: &str,
        token: &str,
        cursor: Option<(u64, &str)>,
        mode: AuthMode,
    ) -> Result<Connection, ClientError> {
        let mut url = ws_url(base);
        if let Some((after, epoch)) = cursor {
            url.push_str(&format!("?after={after}&epoch={epoch}"));
        }
        let mut request = url.into_client_request()?;
        let headers = request.headers_mut();
        match mode {
            AuthMode::Header => {
                headers.insert(
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {token}")).expect("ascii"),
                );
            }
            AuthMode::Subprotocol => {
                let value = format!("herald.v1, bearer.{token}");
                headers.insert("sec-websocket-protocol", HeaderValue::from_str(&value).expect("ascii"));
            }
        }
        // Nagle off: client frames (acks, cancels, pings) are small and wanted now.
        match tokio_tungstenite::connect_async_with_config(request, None, true).await {
            Ok((ws, _)) => Ok(Connection { ws, last_seq: cursor.map_or(0, |c| c.0) }),
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(ClientError::Refused { status, body })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Wraps a socket the caller opened itself (custom headers, raw handshakes in tests).
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Connection {
        Connection { ws, last_seq: 0 }
    }

    /// Connects and reads through `welcome` … `synced`.
    pub async fn open(
        base: &str,
        token: &str,
        cursor: Option<(u64, &str)>,
        timeout: Duration,
    ) -> Result<(Connection, Opened), ClientError> {
        let mut conn = Self::connect(base, token, cursor, AuthMode::Header).await?;
        let opened = conn.read_opening(timeout).await?;
        Ok((conn, opened))
    }

    /// Reads `welcome`, the backlog and `synced`.
    pub async fn read_opening(&mut self, timeout: Duration) -> Result<Opened, ClientError> {
        let (connection_id, epoch, seq, recovery) = match self.next_frame(timeout).await? {
            ServerFrame::Welcome { connection_id, epoch, seq, recovery, .. } => {
                (connection_id, epoch, seq, recovery)
            }
            other => return Err(ClientError::Protocol(format!("expected welcome, got {other:?}"))),
        };
        let mut backlog = Vec::new();
        loop {
            match self.next_frame(timeout).await? {
                ServerFrame::Event(e) => backlog.push(e),
                ServerFrame::Synced { seq } => {
                    self.last_seq = seq;
                    break;
                }
                other => {
                    return Err(ClientError::Protocol(format!("expected event or synced, got {other:?}")));
                }
            }
        }
        Ok(Opened { connection_id, epoch, seq, recovery, backlog })
    }

    /// The next protocol frame, skipping WebSocket pings and pongs.
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<ServerFrame, ClientError> {
        let text = next_text(&mut self.ws, timeout).await?;
        let frame: ServerFrame = serde_json::from_str(text.as_str())
            .map_err(|e| ClientError::Protocol(format!("{e}: {}", text.as_str())))?;
        if let ServerFrame::Event(e) = &frame {
            self.last_seq = e.seq;
        }
        Ok(frame)
    }

    /// The next event frame; any other frame is an error.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<EventFrame, ClientError> {
        match self.next_frame(timeout).await? {
            ServerFrame::Event(e) => Ok(e),
            other => Err(ClientError::Protocol(format!("expected event, got {other:?}"))),
        }
    }

    /// Reads `n` events.
    pub async fn events(&mut self, n: usize, timeout: Duration) -> Result<Vec<EventFrame>, ClientError> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_event(timeout).await?);
        }
        Ok(out)
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        Ok(self.ws.send(Message::text(text.into())).await?)
    }

    /// Sends any WebSocket message (binary, oversized, …) to test the server's limits.
    pub async fn send_raw(&mut self, message: Message) -> Result<(), ClientError> {
        Ok(self.ws.send(message).await?)
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(Some(CloseFrame { code: 1000.into(), reason: "bye".into() })).await;
    }

    /// Drops the TCP connection without a close frame (a network failure, as the server sees it).
    pub fn abort(self) {
        drop(self);
    }
}

/// How long a publish waits for its answer.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The next text message of a socket, skipping pings and pongs; a close frame is
/// [`ClientError::Closed`], a binary frame a protocol error.
pub(crate) async fn next_text<S>(
    stream: &mut S,
    timeout: Duration,
) -> Result<tungstenite::Utf8Bytes, ClientError>
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(timeout, stream.next()).await.map_err(|_| ClientError::Timeout)?;
        match message {
            None => return Err(ClientError::Ended),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) =
                    frame.map(|f| (f.code.into(), f.reason.to_string())).unwrap_or((1005, String::new()));
                return Err(ClientError::Closed { code, reason });
            }
            Some(Ok(Message::Binary(_))) => return Err(ClientError::Protocol("binary frame".into())),
            Some(Ok(_)) => continue,
        }
    }
}

/// Publishes over the HTTP API with an API key.
#[derive(Clone, Debug)]
pub struct Publisher {
    base: String,
    api_key: String,
    http: reqwest::Client,
}

impl Publisher {
    /// A publisher for the server at `base` (`http://host:port`).
    pub fn new(base: &str, api_key: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// POSTs a raw JSON body to `/v1/events`; returns status and body.
    pub async fn post(&self, body: &Value) -> Result<(u16, Value), ClientError> {
        let response = self
            .http
            .post(format!("{}/v1/events", self.base))
            .bearer_auth(&self.api_key)
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Publishes one event and returns its receipt, or the server's error as `Refused`.
    pub async fn publish(
        &self,
        user: &str,
        event: &str,
        run_id: Option<&str>,
        data: Value,
    ) -> Result<Receipt, ClientError> {
        let body = serde_json::json!({ "user_id": user, "event": event, "run_id": run_id, "data": data });
        let (status, body) = self.post(&body).await?;
        if status != 200 {
            return Err(ClientError::Refused { status, body: body.to_string() });
        }
        serde_json::from_value(body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Publishes the five events of a complete run (started, thinking, tool executing/completed,
    /// completed) as one batch; returns the receipts.
    pub async fn publish_run(&self, user: &str, run_id: &str) -> Result<Vec<Receipt>, ClientError> {
        let events = golden_run(user, run_id);
        let (status, body) = self.post(&serde_json::json!({ "events": events })).await?;
        if status != 200 {
            return Err(ClientError::Refused { status, body: body.to_string() });
        }
        serde_json::from_value(body["results"].clone()).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

/// The five events of a golden-path run, as publish bodies.
pub fn golden_run(user: &str, run_id: &str) -> Vec<Value> {
    use serde_json::json;
    vec![
        json!({"user_id": user, "run_id": run_id, "event": "agent_started", "data": {}}),
        json!({"user_id": user, "run_id": run_id, "event": "agent_thinking", "data": {"text": "Let me look that up."}}),
        json!({"user_id": user, "run_id": run_id, "event": "tool_executing", "data": {"tool_name": "search", "tool_call_id": "c1", "parameters": {"q": "herald"}}}),
        json!({"user_id": user, "run_id": run_id, "event": "tool_completed", "data": {"tool_name": "search", "tool_call_id": "c1", "result": "ok"}}),
        json!({"user_id": user, "run_id": run_id, "event": "agent_completed", "data": {"text": "Done."}}),
    ]
}

/// The event names of [`golden_run`], in order.
pub const GOLDEN_EVENTS: [&str; 5] =
    ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"];
