//! An event's frame as it goes on a WebSocket: the frame header, then the JSON text.
//!
//! A server's frames are not masked (RFC 6455 §5.1), so the bytes of an event's frame, header
//! included, are the same for every connection it goes to. They are built once, when the event
//! is appended, and kept with it: a caught-up connection's write (the log's tap) is then one
//! `send` of one buffer, and a woken connection copies them as they are. The transports that
//! carry the text alone (SSE, the HTTP history, AG-UI) read it after the header.

use bytes::Bytes;

/// The longest frame header: 2 bytes and a 64-bit length.
const MAX_HEADER: usize = 10;

/// An event frame's text with its WebSocket header in front (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    wire: Bytes,
    /// Where the text starts: the header's length (2, 4 or 10).
    text_at: u8,
}

impl Frame {
    /// The frame carrying `text`, copied once behind its header.
    pub fn new(text: &str) -> Self {
        Self::from_parts(&[text])
    }

    /// The frame carrying the concatenation of `parts`, copied once behind its header.
    pub fn from_parts(parts: &[&str]) -> Self {
        let len = parts.iter().map(|p| p.len()).sum();
        let mut header = [0; MAX_HEADER];
        let header = text_frame_header(len, &mut header);
        let mut wire = Vec::with_capacity(header.len() + len);
        wire.extend_from_slice(header);
        for part in parts {
            wire.extend_from_slice(part.as_bytes());
        }
        Self { wire: wire.into(), text_at: header.len() as u8 }
    }

    /// The wire bytes: a final, unmasked text frame (header and text).
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The text (the JSON of the event frame).
    pub fn as_str(&self) -> &str {
        // Checked again here, not kept as proof: a frame is read as text only off the hot path
        // (history, snapshots, SSE), and `new` took a `str`.
        std::str::from_utf8(self.text()).expect("a frame is built from a str")
    }

    /// The text's bytes.
    pub fn text(&self) -> &[u8] {
        &self.wire[usize::from(self.text_at)..]
    }

    /// The text's length in bytes: what retention limits count.
    pub fn len(&self) -> usize {
        self.wire.len() - usize::from(self.text_at)
    }

    /// True for an empty text (never an event frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<&str> for Frame {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Self::new(&text)
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Frame").field(&String::from_utf8_lossy(self.text())).finish()
    }
}

/// The header of a final, unmasked text frame of `len` bytes (RFC 6455 §5.2), in `buf`.
pub(crate) fn text_frame_header(len: usize, buf: &mut [u8; MAX_HEADER]) -> &[u8] {
    const FIN_TEXT: u8 = 0x80 | 0x1;
    buf[0] = FIN_TEXT;
    if len < 126 {
        buf[1] = len as u8;
        &buf[..2]
    } else if let Ok(len) = u16::try_from(len) {
        buf[1] = 126;
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        &buf[..4]
    } else {
        buf[1] = 127;
        buf[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        &buf[..10]
    }
}

/// Appends the wire bytes of a final, unmasked text frame carrying `text`.
pub(crate) fn push_text_frame(out: &mut Vec<u8>, text: &str) {
    let mut header = [0; MAX_HEADER];
    out.reserve(text.len() + MAX_HEADER);
    out.extend_from_slice(text_frame_header(text.len(), &mut header));
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::FrameHeader;
    use tungstenite::protocol::frame::coding::{Data, OpCode};

    /// Each length class of the header parses back, with tungstenite's own parser, to a final
    /// unmasked text frame of that length followed by the text; a `Frame` holds the same bytes.
    #[test]
    fn text_frames_parse_back_with_tungstenite() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let mut wire = Vec::new();
            push_text_frame(&mut wire, &text);
            let mut cursor = std::io::Cursor::new(&wire[..]);
            let (header, payload_len) = FrameHeader::parse(&mut cursor).unwrap().expect("a whole header");
            assert!(header.is_final && header.mask.is_none(), "{len}: {header:?}");
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
            assert_eq!(payload_len, text.len() as u64, "{len}");
            assert_eq!(&wire[cursor.position() as usize..], text.as_bytes(), "{len}");

            let frame = Frame::new(&text);
            assert_eq!(frame.wire(), &wire[..], "{len}");
            assert_eq!((frame.as_str(), frame.len()), (text.as_str(), text.len()), "{len}");
        }
    }
}
