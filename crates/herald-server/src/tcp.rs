//! An accepted TCP connection that more than one owner can write to.
//!
//! hyper owns a connection's stream while it serves HTTP and, after a WebSocket upgrade, hands
//! it on behind a type that cannot be unwrapped. A WebSocket connection that has caught up lets
//! the appender of its user's log write each new frame straight to the socket
//! ([`crate::log::Tap`]), which needs the stream from outside hyper: so the accept loop gives
//! hyper a [`SharedTcp`] and puts a second handle to the same stream, [`RawTcp`], into every
//! request. Who may write when is the WebSocket connection's business (`ws::socket`); this module
//! only shares the stream.

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
pub struct SharedTcp(Arc<TcpStream>);

/// The same stream as the request's connection, in its extensions. Absent on connections not
/// accepted by [`crate::serve::serve`].
#[derive(Debug, Clone)]
pub struct RawTcp(pub Arc<TcpStream>);

impl SharedTcp {
    /// Shares `stream`: hyper's handle and the handle for the requests.
    pub fn new(stream: TcpStream) -> (Self, RawTcp) {
        let stream = Arc::new(stream);
        (Self(stream.clone()), RawTcp(stream))
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // Safe code cannot read into uninitialized memory: zero it first, at most
            // `MAX_READ` of it (hyper's buffer grows for large bodies; zeroing it all at every
            // read would cost more than the read).
            let len = buf.remaining().min(MAX_READ);
            match self.0.try_read(buf.initialize_unfilled_to(len)) {
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
            ready!(self.0.poll_write_ready(cx))?;
            match write(&self.0) {
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
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
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
        assert_eq!(raw.0.try_write(b"two,").unwrap(), 4);
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
