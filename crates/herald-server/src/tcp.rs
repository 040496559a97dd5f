//! An accepted TCP connection that more than one owner can write to.
//!
//! hyper owns a connection's stream while it serves HTTP and, after a WebSocket upgrade, hands
//! it on behind a type that cannot be unwrapped. A WebSocket connection that has caught up lets
//! the appender of its user's log write each new frame straight to the socket
//! ([`crate::log::Tap`]), which needs the stream from outside hyper: so the accept loop gives
//! hyper a [`SharedTcp`] and puts a second handle to the same stream, [`RawTcp`], into every
//! request. Who may write when is the WebSocket connection's business (`ws::socket`); this module
//! shares the stream and writes the tap's frames.
//!
//! The stream lives inside the tap ([`Outlet`] is the tap's writer, kept inline): with thousands
//! of connections each append finds its user's taps cold in the cache, and a stream behind one
//! more pointer was one more miss per frame (4 % of the server's user time at 1,000 connections).
//! Every accepted connection carries a tap, used or not; it is a few words.

use crate::log::{LogEntry, Taken, Tap, TapWriter};
use parking_lot::Mutex;
use socket2::SockRef;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Most bytes one read takes (see `poll_read`).
const MAX_READ: usize = 64 * 1024;

/// The stream hyper serves: reads and writes go to the shared [`TcpStream`].
#[derive(Debug)]
pub struct SharedTcp(Arc<Tap<Outlet>>);

/// The same stream as the request's connection, in its extensions, as the tap a WebSocket on
/// it uses. Absent on connections not accepted by [`crate::serve::serve`].
#[derive(Debug, Clone)]
pub struct RawTcp(pub Arc<Tap<Outlet>>);

impl SharedTcp {
    /// Shares `stream`: hyper's handle and the handle for the requests.
    pub fn new(stream: TcpStream) -> (Self, RawTcp) {
        let tap = Tap::new(Outlet { stream, rest: Mutex::new(Vec::new()) });
        (Self(tap.clone()), RawTcp(tap))
    }

    fn stream(&self) -> &TcpStream {
        &self.0.writer().stream
    }
}

/// The tap's writer: event frames go straight to the TCP stream, from the appender's thread,
/// and never wait (see `ws::socket` for when it may write).
#[derive(Debug)]
pub struct Outlet {
    stream: TcpStream,
    /// The unwritten rest of a frame the stream took only part of.
    rest: Mutex<Vec<u8>>,
}

impl Outlet {
    /// The stream.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Takes the rest of the frame the stream took only part of (empty when none): it must go
    /// out before anything else is written.
    pub fn take_rest(&self) -> Vec<u8> {
        std::mem::take(&mut *self.rest.lock())
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream().poll_read_ready(cx))?;
            // Safe code cannot read into uninitialized memory: zero it first, at most
            // `MAX_READ` of it (hyper's buffer grows for large bodies; zeroing it all at every
            // read would cost more than the read).
            let len = buf.remaining().min(MAX_READ);
            match self.stream().try_read(buf.initialize_unfilled_to(len)) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl SharedTcp {
    /// Waits until the stream is writable and runs `write`, again while it would block.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream().poll_write_ready(cx))?;
            match write(self.stream()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |tcp| tcp.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |tcp| tcp.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The other handle may still hold the stream: end the sending side now, as an owned
        // stream's shutdown would, rather than at the last drop.
        Poll::Ready(SockRef::from(self.stream()).shutdown(std::net::Shutdown::Write))
    }
}

/// Frames per `sendmsg`: a batch longer than this goes in several.
const FRAMES_PER_SEND: usize = 32;

impl TapWriter for Outlet {
    fn write_now(&self, entries: &[Arc<LogEntry>]) -> Taken {
        let mut taken = Taken { whole: 0, in_part: false };
        for chunk in entries.chunks(FRAMES_PER_SEND) {
            let part = self.send(chunk);
            taken.whole += part.whole;
            taken.in_part = part.in_part;
            if part.whole < chunk.len() {
                break;
            }
        }
        taken
    }
}

impl Outlet {
    /// Sends up to [`FRAMES_PER_SEND`] frames with one `send` (one frame: the usual case with
    /// many users) or one `sendmsg`; keeps the rest of a frame the socket took in part.
    fn send(&self, entries: &[Arc<LogEntry>]) -> Taken {
        // Through `socket2`, not a write through the file layer (`writev` cost 7 % of the
        // server's CPU more at 1,000 connections), nor tokio's `try_io` (its readiness state is
        // one more cold cache line per write): a write refused here leaves tokio's readiness
        // stale at worst, and the connection's own write finds out and waits.
        let socket = SockRef::from(&self.stream);
        let sent = if let [entry] = entries {
            socket.send(entry.frame.wire())
        } else {
            let mut wire = [IoSlice::new(&[]); FRAMES_PER_SEND];
            for (slot, entry) in wire.iter_mut().zip(entries) {
                *slot = IoSlice::new(entry.frame.wire());
            }
            socket.send_vectored(&wire[..entries.len()])
        };
        // A full socket, or an error the connection's own write will meet and report: nothing.
        let mut left = sent.unwrap_or(0);
        let mut taken = Taken { whole: 0, in_part: false };
        for entry in entries {
            let wire = entry.frame.wire();
            if left >= wire.len() {
                left -= wire.len();
                taken.whole += 1;
                continue;
            }
            if left > 0 {
                self.rest.lock().extend_from_slice(&wire[left..]);
                taken.in_part = true;
            }
            break;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bytes written through either handle arrive in order, reads see what the peer sent, and a
    /// shutdown through the shared handle ends the peer's read although the other handle lives.
    #[tokio::test]
    async fn both_handles_write_to_one_stream_and_shutdown_ends_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let (mut shared, raw) = SharedTcp::new(accepted);

        shared.write_all(b"one,").await.unwrap();
        assert_eq!(raw.0.writer().stream().try_write(b"two,").unwrap(), 4);
        shared.write_all(b"three").await.unwrap();
        peer.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        shared.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        shared.shutdown().await.unwrap();
        let mut all = Vec::new();
        peer.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"one,two,three");
        drop(raw);
    }
}
