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

use crate::frame::{Frame, push_text_frame};
use crate::log::Tap;
use crate::tcp::{Outlet, RawTcp};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
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
            tap: raw.map(|RawTcp(tap)| tap),
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
        let mut bytes = tap.writer().take_rest();
        if bytes.is_empty() {
            return;
        }
        debug_assert!(self.queued.is_empty(), "the tap writes only while the socket is idle");
        bytes.append(&mut self.queued);
        self.queued = bytes;
        self.rest_first = true;
    }

    /// Queues one text frame; nothing is written until [`Socket::flush`].
    pub fn queue_text(&mut self, text: &str) {
        push_text_frame(&mut self.queued, text);
    }

    /// Queues an event's frame, header and all as it was built at its append.
    pub fn queue_frame(&mut self, frame: &Frame) {
        self.queued.extend_from_slice(frame.wire());
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
