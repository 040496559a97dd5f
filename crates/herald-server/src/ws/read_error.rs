//! What to tell a client whose frames broke the WebSocket protocol (RFC 6455 §7.4.1).
//!
//! tungstenite reports a bad frame as a read error and stops reading, but the socket can still
//! write: the connection is failed with a close frame naming the fault, so the client sees 1007
//! or 1002 with a reason instead of a dropped TCP connection (1006).

use herald_protocol::CloseCode;
use tungstenite::error::{Error, ProtocolError};

/// The close code and reason for a read error, or `None` when the peer is simply gone.
pub fn close_for(e: &axum::Error) -> Option<(u16, &'static str)> {
    let source = std::error::Error::source(e).and_then(|s| s.downcast_ref::<Error>())?;
    match source {
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
