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
//! On a connection accepted over HTTP/1.1 there is a third writer: the socket's [`Tap`], through
//! which the user's log writes each new event while the connection's task sleeps (see
//! [`crate::log`]). It writes only while attached, and the task attaches it only when nothing is
//! queued here and tungstenite has nothing to send (`is_idle`); while attached, the task reads
//! but writes nothing (a read that makes tungstenite queue a pong returns that ping, and the
//! task detaches before it writes again).
//!
//! All paths write to one stream, so whole frames must go out in the order they were queued.
//! Three rules keep it so:
//! - bytes of a direct write that was interrupted (the caller stopped waiting) stay queued here
//!   and go out before anything tungstenite sends;
//! - tungstenite may queue a frame of its own while reading (the pong to a client's ping, the
//!   reply to its close), and a send through it may stop half done: after either, tungstenite
//!   is flushed before the next direct write;
//! - the rest of a frame the tap could write only in part is taken over by [`Socket::resume`]
//!   and goes out before anything else, tungstenite's pong included.

use crate::log::{LogEntry, Taken, Tap, TapWriter};
use crate::tcp::RawTcp;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use socket2::SockRef;
use std::io::IoSlice;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
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
    /// The tap and its writer, when the stream is a TCP connection of its own (not an HTTP/2
    /// stream).
    tap: Option<Arc<Tap<Outlet>>>,
    /// `queued` starts with the rest of a frame the tap wrote in part: it goes out first.
    rest_first: bool,
}

impl Socket {
    /// Wraps a stream that completed the handshake; `raw` is its TCP connection when the
    /// WebSocket has that connection to itself (HTTP/1.1), which gives the socket a tap.
    pub fn new(stream: WebSocketStream<TokioIo<Upgraded>>, raw: Option<RawTcp>) -> Self {
        Self {
            stream: Box::new(stream),
            queued: Vec::new(),
            written: 0,
            tungstenite_may_write: false,
            tap: raw.map(|RawTcp(tcp)| Tap::new(Outlet { tcp, rest: Mutex::new(Vec::new()) })),
            rest_first: false,
        }
    }

    /// A tap that writes event frames to this socket's stream, if it has one of its own. Attach
    /// it only while [`Socket::is_idle`], and call [`Socket::resume`] once it is detached.
    pub fn tap(&self) -> Option<Arc<Tap>> {
        self.tap.clone().map(|tap| tap as Arc<Tap>)
    }

    /// True when nothing is queued here and tungstenite has nothing to send: the tap may write.
    pub fn is_idle(&self) -> bool {
        self.queued.is_empty() && !self.tungstenite_may_write
    }

    /// Takes over what the detached tap could not write, to go out before anything else.
    pub fn resume(&mut self) {
        let Some(tap) = &self.tap else { return };
        let mut rest = tap.writer().rest.lock();
        if rest.is_empty() {
            return;
        }
        debug_assert!(self.queued.is_empty(), "the tap writes only while the socket is idle");
        let mut bytes = std::mem::take(&mut *rest);
        bytes.append(&mut self.queued);
        self.queued = bytes;
        self.rest_first = true;
    }

    /// Queues one text frame; nothing is written until [`Socket::flush`].
    pub fn queue_text(&mut self, text: &str) {
        push_text_frame(&mut self.queued, text);
    }

    /// Writes every queued frame, and tungstenite's own first — after the rest of a frame the
    /// tap wrote in part, which was on the wire before either. Cancel-safe: what is not written
    /// yet stays queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.rest_first {
            self.write_queued().await?;
            self.rest_first = false;
        }
        if self.tungstenite_may_write {
            self.stream.flush().await?;
            self.tungstenite_may_write = false;
        }
        self.write_queued().await?;
        Ok(())
    }

    /// Writes the queued bytes; cancel-safe.
    async fn write_queued(&mut self) -> Result<(), Error> {
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
    /// connection is closing) or the rest of a tap's frame waits: tungstenite may answer a ping
    /// as it reads, and its pong would land inside that frame. (The connection flushes before it
    /// reads again, so only a closing connection meets this.)
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if self.written > 0 || self.rest_first {
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

/// The tap's writer: event frames go straight to the TCP stream, from the appender's thread,
/// and never wait (see the module docs).
#[derive(Debug)]
struct Outlet {
    tcp: Arc<TcpStream>,
    /// The unwritten rest of a frame the stream took only part of.
    rest: Mutex<Vec<u8>>,
}

/// Frames per `sendmsg`: a batch longer than this goes in several (two slices per frame).
const FRAMES_PER_SEND: usize = 32;

impl TapWriter for Outlet {
    fn write_now(&self, entries: &[Arc<LogEntry>], now: Instant) -> Taken {
        let mut taken = Taken { whole: 0, in_part: false };
        for chunk in entries.chunks(FRAMES_PER_SEND) {
            let part = self.send(chunk);
            taken.whole += part.whole;
            taken.in_part = part.in_part;
            if part.whole < chunk.len() {
                break;
            }
        }
        let through = taken.whole + usize::from(taken.in_part);
        if through > 0 {
            crate::metrics::Delivery::new().written(entries[..through].iter().map(|e| e.appended_at), now);
        }
        taken
    }
}

impl Outlet {
    /// Sends up to [`FRAMES_PER_SEND`] frames with one `sendmsg`; keeps the rest of a frame the
    /// socket took in part.
    fn send(&self, entries: &[Arc<LogEntry>]) -> Taken {
        let mut headers = [[0u8; MAX_HEADER]; FRAMES_PER_SEND];
        let mut lens = [0usize; FRAMES_PER_SEND];
        for ((entry, header), len) in entries.iter().zip(&mut headers).zip(&mut lens) {
            *len = text_frame_header(entry.frame.as_str().len(), header).len();
        }
        let mut wire = [IoSlice::new(&[]); 2 * FRAMES_PER_SEND];
        for (i, entry) in entries.iter().enumerate() {
            wire[2 * i] = IoSlice::new(&headers[i][..lens[i]]);
            wire[2 * i + 1] = IoSlice::new(entry.frame.as_str().as_bytes());
        }
        let wire = &wire[..2 * entries.len()];
        // sendmsg(2) through socket2, not writev(2): a write through the file layer cost 7 % of
        // the server's CPU more at 1,000 connections. Not through tokio's `try_io` either (its
        // readiness state is one more cold cache line per write): a write refused here leaves
        // tokio's readiness stale at worst, and the connection's own write finds out and waits.
        let sent = SockRef::from(&*self.tcp).send_vectored(wire);
        // A full socket, or an error the connection's own write will meet and report: nothing.
        let mut left = sent.unwrap_or(0);
        let mut taken = Taken { whole: 0, in_part: false };
        for (i, entry) in entries.iter().enumerate() {
            let (header, text) = (&headers[i][..lens[i]], entry.frame.as_str().as_bytes());
            if left >= header.len() + text.len() {
                left -= header.len() + text.len();
                taken.whole += 1;
                continue;
            }
            if left > 0 {
                let mut rest = self.rest.lock();
                if left < header.len() {
                    rest.extend_from_slice(&header[left..]);
                    rest.extend_from_slice(text);
                } else {
                    rest.extend_from_slice(&text[left - header.len()..]);
                }
                taken.in_part = true;
            }
            break;
        }
        taken
    }
}

/// The longest frame header: 2 bytes and a 64-bit length.
const MAX_HEADER: usize = 10;

/// The header of a final, unmasked text frame of `len` bytes (RFC 6455 §5.2), in `buf`.
fn text_frame_header(len: usize, buf: &mut [u8; MAX_HEADER]) -> &[u8] {
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
fn push_text_frame(out: &mut Vec<u8>, text: &str) {
    let mut header = [0; MAX_HEADER];
    out.reserve(text.len() + MAX_HEADER);
    out.extend_from_slice(text_frame_header(text.len(), &mut header));
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
