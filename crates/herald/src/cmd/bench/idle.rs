//! The idle run: N authenticated idle sockets spread over several 127.0.0.x source addresses;
//! the server's RSS delta per connection.

use super::events::random_hex;
use super::socket::{CONNECT_CONCURRENCY, open_socket};
use super::stats::{process_rss_bytes, raise_fd_limit};
use futures_util::StreamExt;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

/// Idle sockets per 127.0.0.x source address (below Herald's default per-IP limit of 1024 and far
/// below the ~28k ephemeral ports of one address).
const IDLE_PER_SOURCE: usize = 1000;

/// What the idle run does.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// `http://host:port` of the server.
    pub url: String,
    /// HS256 secret to sign the users' tokens with.
    pub jwt_secret: String,
    /// Sockets to open.
    pub connections: usize,
    /// Sockets per user (users = connections / this, rounded up).
    pub conns_per_user: usize,
    /// How long to keep them open after the last one synced (the RSS is read at the end).
    pub hold: Duration,
    /// The server's pid, for its RSS.
    pub server_pid: Option<u32>,
}

/// The result of [`run_idle`].
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Sockets asked for.
    pub idle_connections: usize,
    /// Sockets open and synced.
    pub opened: usize,
    /// Sockets that could not be opened or were dropped while held.
    pub errors: u64,
    /// 127.0.0.x source addresses used.
    pub source_addresses: usize,
    /// Seconds to open them all.
    pub open_s: f64,
    /// Server RSS before the first socket.
    pub server_rss_before_bytes: Option<u64>,
    /// Server RSS with every socket open.
    pub server_rss_after_bytes: Option<u64>,
    /// (after − before) / opened.
    pub server_rss_per_connection_bytes: Option<f64>,
    /// The bench's soft open-files limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_fd_limit: Option<u64>,
    /// The first few errors.
    pub error_samples: Vec<String>,
}

/// Opens `connections` idle authenticated sockets and measures the server's RSS per socket.
pub async fn run_idle(config: &IdleConfig) -> Result<IdleReport, String> {
    let client_fd_limit = raise_fd_limit(config.connections as u64 + 1024);
    if let Some(limit) = client_fd_limit
        && limit < config.connections as u64 + 256
    {
        return Err(format!(
            "the open-files limit is {limit} and cannot be raised (hard limit); at most {} idle \
             connections here: raise it (ulimit -Hn, systemd LimitNOFILE, or run as root)",
            limit.saturating_sub(256)
        ));
    }
    let loopback = config.url.contains("://127.") || config.url.contains("://localhost");
    let sources = if loopback && config.connections > IDLE_PER_SOURCE {
        config.connections.div_ceil(IDLE_PER_SOURCE).min(254)
    } else {
        1
    };
    let tag = format!("idle-{}", random_hex(8));
    let per_user = config.conns_per_user.max(1);
    let users = config.connections.div_ceil(per_user);
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..users)
            .map(|u| {
                herald_client::sign_token(
                    &config.jwt_secret,
                    &format!("{tag}-u{u}"),
                    Duration::from_secs(3600),
                )
            })
            .collect(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = config.server_pid.and_then(process_rss_bytes);
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let errors = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (release_tx, release_rx) = watch::channel(false);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<bool>(1024);
    let started = Instant::now();
    let mut holders = tokio::task::JoinSet::new();
    for i in 0..config.connections {
        let source = (sources > 1).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % sources) as u8)));
        let (base, tokens, permits, errors, samples, opened_tx) = (
            config.url.clone(),
            tokens.clone(),
            permits.clone(),
            errors.clone(),
            samples.clone(),
            opened_tx.clone(),
        );
        let mut release = release_rx.clone();
        holders.spawn(async move {
            let permit = permits.acquire_owned().await.expect("open semaphore");
            let opened = open_socket(&base, &tokens[i / per_user], "", source, Duration::from_secs(60)).await;
            drop(permit);
            let mut ws = match opened {
                Ok((ws, _, _)) => {
                    let _ = opened_tx.send(true).await;
                    ws
                }
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut s = samples.lock().expect("samples");
                        if s.len() < 5 {
                            s.push(e);
                        }
                    }
                    let _ = opened_tx.send(false).await;
                    return;
                }
            };
            drop(opened_tx);
            // Hold the socket, answering the server's pings, until released.
            loop {
                tokio::select! {
                    _ = release.changed() => break,
                    m = ws.next() => match m {
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        _ => {}
                    },
                }
            }
        });
    }
    drop(opened_tx);
    let mut opened = 0usize;
    while let Some(ok) = opened_rx.recv().await {
        opened += usize::from(ok);
    }
    let open_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(config.hold).await;
    let rss_after = config.server_pid.and_then(process_rss_bytes);
    let _ = release_tx.send(true);
    while holders.join_next().await.is_some() {}
    let per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) if opened > 0 => Some((a as f64 - b as f64) / opened as f64),
        _ => None,
    };
    let error_samples = samples.lock().expect("samples").clone();
    Ok(IdleReport {
        idle_connections: config.connections,
        opened,
        errors: errors.load(Ordering::Relaxed),
        source_addresses: sources,
        open_s,
        server_rss_before_bytes: rss_before,
        server_rss_after_bytes: rss_after,
        server_rss_per_connection_bytes: per_connection,
        client_fd_limit,
        error_samples,
    })
}
