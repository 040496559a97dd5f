//! The accept loop: hyper with a handshake timeout and the peer address of every request.
//!
//! `axum::serve` sets no timer, so a client that opens a TCP connection and never finishes its
//! request head (slowloris) holds the connection forever. Here every HTTP/1 connection must send
//! a complete request head within `handshake_timeout` (also between keep-alive requests), and the
//! peer address goes into each request as [`ConnectInfo`] for the per-IP limit. Graceful shutdown
//! works as with `axum::serve`: stop accepting, let in-flight requests finish, return.
//!
//! A TCP connection that has not sent its first request yet holds a per-IP slot (up to
//! `max_connections_per_ip` such connections per address, see [`crate::limits`]), so one address
//! cannot pile up idle connections until the process runs out of file descriptors; over the
//! limit, the connection is closed at once. The slot is freed when the first request arrives
//! (a WebSocket upgrade then takes a slot of the open-connection count).
//!
//! Each request also carries a second handle to its connection's stream ([`crate::tcp`]), for a
//! WebSocket that writes event frames without its task.

use crate::limits::{IpSlot, Limited};
use crate::tcp::SharedTcp;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;
use tracing::{debug, warn};

/// Serves `app` on `listener` until `shutdown` resolves, then waits for in-flight requests.
/// `admit` gives each new TCP connection its per-IP slot (held until its first request), or
/// refuses it.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    handshake_timeout: Duration,
    admit: impl Fn(SocketAddr) -> Result<IpSlot, Limited>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(handshake_timeout);
    builder.http2().timer(TokioTimer::new()).enable_connect_protocol();
    // Tells connections to finish; closed (all receivers dropped) once every connection ended.
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let slot = match admit(peer) {
            Ok(slot) => Arc::new(Mutex::new(Some(slot))),
            Err(e) => {
                debug!(%peer, "connection refused before its first request: {e}");
                continue; // dropping the stream closes it
            }
        };
        let _ = stream.set_nodelay(true);
        let (stream, raw) = SharedTcp::new(stream);
        let service = app.clone().map_request(move |mut request: axum::http::Request<Incoming>| {
            slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(raw.clone());
            request
        });
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        debug!(%peer, "connection ended: {e}");
                    }
                    return;
                }
                _ = stop.changed() => connection.as_mut().graceful_shutdown(),
            }
            if let Err(e) = connection.await {
                debug!(%peer, "connection ended during shutdown: {e}");
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    stop_tx.closed().await;
    Ok(())
}
