//! WebSocket frames of protocol v1 (docs/protocol.md) and the close codes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a new connection starts reading, as announced in `welcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recovery {
    /// No cursor was given: active runs, then live.
    None,
    /// Every event after the client's cursor follows; nothing is missing.
    Replayed,
    /// The cursor could not be honoured (too old, from the future, other epoch): reload state.
    Reset,
}

/// A frame the server sends. Clients parse every text frame into this.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every connection.
    Welcome {
        /// Protocol version, always 1.
        v: u32,
        /// Server-made id of this connection (appears in logs and upstream requests).
        connection_id: String,
        /// The authenticated user.
        user_id: String,
        /// The log's epoch; resume only within the same epoch.
        epoch: String,
        /// Latest seq of the user's log when the connection opened.
        seq: u64,
        /// Interval of server pings.
        heartbeat_ms: u64,
        /// How the connection's cursor was honoured.
        recovery: Recovery,
    },
    /// One event of the user's log.
    Event(EventFrame),
    /// Replay or snapshot done; live events follow.
    Synced {
        /// The seq the connection is now at.
        seq: u64,
    },
    /// Answer to a client `ping`.
    Pong,
    /// The backend's answer to a client `message` or `cancel` (upstream).
    Ack {
        /// The client's `ref`.
        #[serde(rename = "ref")]
        reference: Option<String>,
        /// HTTP status of the backend.
        status: u16,
        /// The backend's JSON body.
        body: Value,
    },
    /// Answer to a client `refresh`: the connection now lives until the new token's `exp`.
    Refreshed {
        /// The new token's expiry, unix seconds: the 4001 close moves to this time.
        exp: u64,
    },
    /// A client frame was refused; the connection stays open.
    Error {
        /// Machine-readable code, e.g. `invalid_json`.
        code: String,
        /// What went wrong and what to do.
        message: String,
        /// The client's `ref`, when the refused frame had one.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
}

/// An event as delivered to clients (`{"type":"event", …}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventFrame {
    /// Position in the user's log; +1 per accepted event.
    pub seq: u64,
    /// Idempotency key given by the publisher, or generated.
    pub id: String,
    /// Owner of the event.
    pub user_id: String,
    /// Conversation thread, if any.
    pub thread_id: Option<String>,
    /// The run the event belongs to (`null` for stand-alone custom events).
    pub run_id: Option<String>,
    /// The event name, e.g. `agent_started`.
    pub event: String,
    /// The event's data object.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Value,
    /// RFC 3339 UTC timestamp with milliseconds, set by Herald on append.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub ts: String,
    /// A frame of the active-run snapshot (sent before `synced` when the cursor was not
    /// replayed): it stands for events of one run, so a resume cursor is never taken from it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
    /// On a snapshot frame that merges several events (text deltas): the seq of the first; `seq`
    /// is the last's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// On a run's `agent_started` snapshot frame: the run lost earlier output (its budget, or a
    /// node's memory cap), so a UI can say that what it shows is not the whole answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl ServerFrame {
    /// Serializes the frame to its JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }

    /// An `error` frame without a ref.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        ServerFrame::Error { code: code.to_owned(), message: message.into(), reference: None }
    }
}

/// A frame a client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Application-level ping; answered with `pong`.
    Ping,
    /// Ask the backend to stop a run. Closing a socket never cancels a run.
    Cancel {
        /// The run to cancel.
        run_id: String,
        /// Client correlation id, echoed in the ack.
        #[serde(rename = "ref", default)]
        reference: Option<String>,
    },
    /// A message for the backend (upstream), e.g. the user's chat input.
    Message {
        /// Client correlation id, echoed in the ack.
        #[serde(rename = "ref", default)]
        reference: Option<String>,
        /// Conversation thread.
        #[serde(default)]
        thread_id: Option<String>,
        /// Free-form payload.
        #[serde(default)]
        data: Value,
    },
    /// A fresh token for the same user, so the socket outlives the token it opened with
    /// (answered with `refreshed`, or an `error` frame that leaves the old expiry in place).
    Refresh {
        /// The new JWT; its `sub` must be the connection's user.
        token: String,
    },
}

/// Why a client text frame was refused; becomes an `error` frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientFrameError {
    /// Not JSON at all.
    #[error("frame is not valid JSON: {0}")]
    InvalidJson(String),
    /// JSON, but the `type` is missing or unknown.
    #[error("unknown frame type {0:?}; known types: ping, cancel, message, refresh")]
    UnknownType(String),
    /// A known type with missing or malformed fields.
    #[error("invalid {kind} frame: {reason}")]
    Invalid {
        /// The frame type.
        kind: String,
        /// serde's description of the problem.
        reason: String,
    },
}

impl ClientFrameError {
    /// The `code` of the error frame.
    pub fn code(&self) -> &'static str {
        match self {
            ClientFrameError::InvalidJson(_) => "invalid_json",
            ClientFrameError::UnknownType(_) => "unknown_type",
            ClientFrameError::Invalid { .. } => "invalid_frame",
        }
    }
}

impl ClientFrame {
    /// Parses a client text frame, telling apart bad JSON, unknown types and bad fields.
    pub fn parse(text: &str) -> Result<Self, ClientFrameError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ClientFrameError::InvalidJson(e.to_string()))?;
        let kind = match value.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(other) => return Err(ClientFrameError::UnknownType(other.to_string())),
            None => return Err(ClientFrameError::UnknownType(String::new())),
        };
        if !matches!(kind.as_str(), "ping" | "cancel" | "message" | "refresh") {
            return Err(ClientFrameError::UnknownType(kind));
        }
        serde_json::from_value(value).map_err(|e| ClientFrameError::Invalid { kind, reason: e.to_string() })
    }
}

/// WebSocket close codes Herald uses, with what a client should do about each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseCode;

impl CloseCode {
    /// Server drains or shuts down: reconnect (to another node) and resume.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame broke RFC 6455 (reserved opcode or bits, bad fragmentation): fix the client.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Binary frame received: the protocol is JSON text only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The user's log lost its history (e.g. Redis was flushed): reconnect and resume; the
    /// resume will answer `reset`.
    pub const LOG_RESET: u16 = 1012;
    /// The client kept sending over `max_client_msgs_per_s` after `rate_limited` error frames:
    /// slow down before reconnecting.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// Text frame over `max_message_bytes`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// No pong for two heartbeat intervals: the peer is gone. Reconnect and resume.
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    /// The token's `exp` passed: reconnect with a fresh token and resume.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// An operator disconnected the user (`POST /v1/users/{user_id}/disconnect`: logout, ban).
    /// Do not reconnect on your own: the old token may be revoked; the app decides what next.
    pub const DISCONNECTED: u16 = 4003;
    /// The connection fell more than `max_pending_bytes` behind: resume from the last seq.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Over the per-user connection limit: close another tab first.
    pub const TOO_MANY_CONNECTIONS: u16 = 4029;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welcome_has_the_documented_shape() {
        let f = ServerFrame::Welcome {
            v: 1,
            connection_id: "c".into(),
            user_id: "u".into(),
            epoch: "e".into(),
            seq: 3,
            heartbeat_ms: 25000,
            recovery: Recovery::None,
        };
        assert_eq!(
            f.to_json(),
            r#"{"type":"welcome","v":1,"connection_id":"c","user_id":"u","epoch":"e","seq":3,"heartbeat_ms":25000,"recovery":"none"}"#
        );
    }

    #[test]
    fn client_frames_parse_or_say_why_not() {
        assert_eq!(ClientFrame::parse(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping));
        assert_eq!(ClientFrame::parse("nope").unwrap_err().code(), "invalid_json");
        assert_eq!(ClientFrame::parse(r#"{"type":"dance"}"#).unwrap_err().code(), "unknown_type");
        assert_eq!(ClientFrame::parse(r#"[1]"#).unwrap_err().code(), "unknown_type");
        let e = ClientFrame::parse(r#"{"type":"cancel"}"#).unwrap_err();
        assert_eq!(e.code(), "invalid_frame");
        assert!(e.to_string().contains("run_id"), "{e}");
        assert_eq!(
            ClientFrame::parse(r#"{"type":"refresh","token":"t"}"#),
            Ok(ClientFrame::Refresh { token: "t".into() })
        );
        assert_eq!(ClientFrame::parse(r#"{"type":"refresh"}"#).unwrap_err().code(), "invalid_frame");
        assert_eq!(
            ClientFrame::parse(r#"{"type":"refresh","token":7}"#).unwrap_err().code(),
            "invalid_frame"
        );
        assert_eq!(ServerFrame::Refreshed { exp: 9 }.to_json(), r#"{"type":"refreshed","exp":9}"#);
        assert_eq!(
            ClientFrame::parse(r#"{"type":"cancel","run_id":"r","ref":"x"}"#),
            Ok(ClientFrame::Cancel { run_id: "r".into(), reference: Some("x".into()) })
        );
    }
}
