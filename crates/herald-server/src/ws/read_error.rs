//! What to tell a client whose frames broke the WebSocket protocol (RFC 6455 §7.4.1).
//!
//! tungstenite reports a bad frame as a read error and stops reading, but the socket can still
//! write: the connection is failed with a close frame naming the fault, so the client sees 1007
//! or 1002 with a reason instead of a dropped TCP connection (1006).

use herald_protocol::CloseCode;
use tungstenite::error::{Error, ProtocolError};

/// The close code and reason for a read error of an axum socket, or `None` when the peer is
/// simply gone.
pub fn close_for(e: &axum::Error) -> Option<(u16, &'static str)> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<Error>()).and_then(close_for_tungstenite)
}

/// [`close_for`], for an error of tungstenite itself (the client stream's [`super::socket`]).
pub fn close_for_tungstenite(e: &Error) -> Option<(u16, &'static str)> {
    match e {
        Error::Capacity(_) => Some((CloseCode::MESSAGE_TOO_BIG, "message too big")),
        Error::Utf8(_) => Some((CloseCode::INVALID_PAYLOAD, "text frame is not valid UTF-8")),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Error::Protocol(
            ProtocolError::UnknownDataFrameType(_) | ProtocolError::UnknownControlFrameType(_),
        ) => Some((CloseCode::PROTOCOL_ERROR, "reserved opcode")),
        Error::Protocol(ProtocolError::NonZeroReservedBits) => {
            Some((CloseCode::PROTOCOL_ERROR, "reserved bits set without an extension"))
        }
        Error::Protocol(_) => Some((CloseCode::PROTOCOL_ERROR, "protocol error")),
        _ => None,
    }
}
