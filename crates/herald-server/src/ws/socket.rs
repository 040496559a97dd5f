//! An open client WebSocket: tungstenite reads the client's frames and sends pings and the close;
//! every text frame the server sends is written to the stream directly.
//!
//! A server's frames are not masked (RFC 6455 §5.1), so a text frame is its text behind a 2 to
//! 10 byte header. Writing it takes one copy into the connection's buffer and one write for the
//! whole batch. Through tungstenite each frame would cross a message, a frame and a buffer layer
//! and the compatibility wrapper that registers the task's waker at every step; at 1,000
//! connections writing them here took about a tenth off the server's user time per frame
//! (docs/benchmarks.md).
//!
//! Both paths write to one stream, so whole frames must go out in the order they were queued.
//! Two rules keep it so:
//! - bytes of a direct write that was interrupted (the caller stopped waiting) stay queued here
//!   and go out before anything tungstenite sends;
//! - tungstenite may queue a frame of its own while reading (the pong to a client's ping, the
//!   reply to its close), and a send through it may stop half done: after either, tungstenite
//!   is flushed before the next direct write.

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::task::{Context, Poll};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tungstenite::{Error, Message};

/// A queue that grew past this (a burst, a replay) is given back once written, so an idle
/// connection does not keep a burst's buffer; a few frames of the usual size fit.
const KEEP_CAPACITY: usize = 4 * 1024;

/// See the module docs.
#[derive(Debug)]
pub struct Socket {
    /// Boxed: the socket travels by value through the connection's layers of async functions,
    /// each of which keeps a slot of its size for the connection's life.
    stream: Box<WebSocketStream<TokioIo<Upgraded>>>,
    /// Wire bytes of text frames not yet written; the first `written` of them went out.
    queued: Vec<u8>,
    written: usize,
    /// Set by a read or an unfinished send: tungstenite may hold bytes to send (see the module
    /// docs).
    tungstenite_may_write: bool,
}

impl Socket {
    /// Wraps a stream that completed the handshake.
    pub fn new(stream: WebSocketStream<TokioIo<Upgraded>>) -> Self {
        Self { stream: Box::new(stream), queued: Vec::new(), written: 0, tungstenite_may_write: false }
    }

    /// Queues one text frame; nothing is written until [`Socket::flush`].
    pub fn queue_text(&mut self, text: &str) {
        push_text_frame(&mut self.queued, text);
    }

    /// Writes every queued frame, and tungstenite's own first. Cancel-safe: what is not written
    /// yet stays queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.tungstenite_may_write {
            self.stream.flush().await?;
            self.tungstenite_may_write = false;
        }
        while self.written < self.queued.len() {
            let n = self.stream.get_mut().write(&self.queued[self.written..]).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            self.written += n;
        }
        self.queued.clear();
        self.written = 0;
        if self.queued.capacity() > KEEP_CAPACITY {
            self.queued = Vec::new();
        }
        Ok(())
    }

    /// Queues one text frame and writes it.
    pub async fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.queue_text(text);
        self.flush().await
    }

    /// Sends `message` through tungstenite (a ping, the close; binary), after the queued frames.
    pub async fn send_message(&mut self, message: Message) -> Result<(), Error> {
        self.flush().await?;
        // Until the send completes, tungstenite may hold part of the frame.
        self.tungstenite_may_write = true;
        self.stream.send(message).await?;
        self.tungstenite_may_write = false;
        Ok(())
    }

    /// The client's next message: `None` once the stream ended.
    ///
    /// Also `None` while a direct write is half done (its caller gave up waiting, so the
    /// connection is closing): tungstenite may answer a ping as it reads, and its pong would land
    /// inside that frame.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if self.written > 0 {
            return Poll::Ready(None);
        }
        let polled = self.stream.poll_next_unpin(cx);
        if polled.is_ready() {
            self.tungstenite_may_write = true;
        }
        polled
    }

    /// [`Socket::poll_next`] as a future.
    pub async fn next(&mut self) -> Option<Result<Message, Error>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// Appends the wire bytes of a final, unmasked text frame carrying `text` (RFC 6455 §5.2).
fn push_text_frame(out: &mut Vec<u8>, text: &str) {
    const FIN_TEXT: u8 = 0x80 | 0x1;
    let len = text.len();
    out.reserve(len + 10);
    out.push(FIN_TEXT);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::FrameHeader;

    /// Each length class of the header parses back, with tungstenite's own parser, to a final
    /// unmasked text frame of that length followed by the text.
    #[test]
    fn text_frames_parse_back_with_tungstenite() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let mut wire = Vec::new();
            push_text_frame(&mut wire, &text);
            let mut cursor = std::io::Cursor::new(&wire[..]);
            let (header, payload_len) = FrameHeader::parse(&mut cursor).unwrap().expect("a whole header");
            assert!(header.is_final && header.mask.is_none(), "{len}: {header:?}");
            assert_eq!(
                header.opcode,
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Text
                )
            );
            assert_eq!(payload_len, text.len() as u64, "{len}");
            assert_eq!(&wire[cursor.position() as usize..], text.as_bytes(), "{len}");
        }
    }
}
