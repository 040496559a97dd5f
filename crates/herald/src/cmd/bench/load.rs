//! The load run: `users × conns_per_user` sockets, `publishers` tasks posting runs of
//! `agent_text` events (batches of `batch`), at a fixed rate (open loop; when a publisher is more
//! than 2 ms behind schedule the timestamp in the payload is the *scheduled* send time, so a slow
//! server cannot hide its queueing) or as fast as the server answers. Every frame is counted per
//! connection; gaps, duplicates and reordering are reported. Latency is publish→receive from a
//! microsecond timestamp in the payload.

use super::events::{PublisherState, random_hex};
use super::socket::{BenchFrame, CONNECT_CONCURRENCY, Ws, open_socket};
use super::stats::{process_cpu_s, process_cpu_split_s, process_rss_bytes};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

/// How late a timer may fire before the delay counts as the server's (see the publishers).
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// What the load run does.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `http://host:port` of the server.
    pub url: String,
    /// API key for `POST /v1/events`.
    pub api_key: String,
    /// HS256 secret to sign the users' tokens with.
    pub jwt_secret: String,
    /// Distinct users.
    pub users: usize,
    /// Sockets per user.
    pub conns_per_user: usize,
    /// Total events per second over all publishers; `None` publishes as fast as the server answers.
    pub rate: Option<f64>,
    /// How long to publish.
    pub duration: Duration,
    /// Approximate size of each event's `data` object, in bytes.
    pub payload_bytes: usize,
    /// Events per publish request (1 posts a single event object).
    pub batch: usize,
    /// Concurrent publisher tasks, each with its own HTTP connection and its own users.
    pub publishers: usize,
    /// How long to wait after publishing for the last frames.
    pub drain_timeout: Duration,
    /// The server's pid, for its CPU time and RSS.
    pub server_pid: Option<u32>,
}

/// Live counters, for a progress display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events accepted by the server.
    pub published: AtomicU64,
    /// Event frames received, over all sockets.
    pub delivered: AtomicU64,
    /// Failed requests, refused or dropped sockets.
    pub errors: AtomicU64,
    /// Sockets open and synced.
    pub connected: AtomicU64,
}

/// Publish→receive latency percentiles, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// The result of [`run_load`]; serializes to the JSON document of `herald bench --json`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Events accepted per second of publishing.
    pub published_per_s: f64,
    /// Event frames received per second, from the first publish to the last frame.
    pub delivered_per_s: f64,
    /// Event frames received.
    pub delivered: u64,
    /// Publish→receive latency.
    pub latency_ms: LatencyMs,
    /// Frames that never arrived (sum over sockets).
    pub lost: u64,
    /// Frames that arrived out of order or twice.
    pub reordered: u64,
    /// Failed requests and refused or dropped sockets.
    pub errors: u64,
    /// CPU time (user + system) of the bench process during the run.
    pub client_cpu_s: f64,
    /// CPU time of the server during the run (with `--spawn` or `--server-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// The user-space part of `server_cpu_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_user_s: Option<f64>,
    /// The kernel part of `server_cpu_s` (syscalls, and on loopback the receiver's TCP work).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_sys_s: Option<f64>,
    /// The server's RSS at the end of the run (with `--spawn` or `--server-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_bytes: Option<u64>,
    /// Events accepted by the server.
    #[serde(skip)]
    pub published: u64,
    /// Sockets that were open for the run.
    #[serde(skip)]
    pub connections: usize,
    /// Seconds from the first publish to the last frame (or the drain timeout).
    #[serde(skip)]
    pub elapsed_s: f64,
    /// The first few error messages.
    #[serde(skip)]
    pub error_samples: Vec<String>,
}

impl LoadReport {
    /// True when every event reached every socket of its user exactly once, in order.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.reordered == 0 && self.errors == 0
    }
}

/// Significant digits of the latency histograms (1 % resolution). Every socket has its own: with
/// 3 digits each took ~130 KiB, written full of zeros when created, so 5,000 sockets cost the
/// client 0.7 GB and seconds of CPU inside the measured window, starving its publishers.
const LATENCY_DIGITS: u8 = 2;

/// Per-socket delivery accounting.
struct Tally {
    /// Highest seq seen.
    max_seq: u64,
    /// Seqs skipped over and not (yet) seen.
    missing: BTreeSet<u64>,
    received: u64,
    reordered: u64,
    hist: Histogram<u64>,
}

impl Tally {
    fn new(start: u64) -> Tally {
        let hist = Histogram::new_with_bounds(1, 60_000_000, LATENCY_DIGITS).expect("valid bounds");
        Tally { max_seq: start, missing: BTreeSet::new(), received: 0, reordered: 0, hist }
    }

    fn record(&mut self, seq: u64) {
        self.received += 1;
        if seq == self.max_seq + 1 {
            self.max_seq = seq;
        } else if seq > self.max_seq {
            // A gap: remember what is missing (bounded; a gap this large is loss anyway).
            for s in (self.max_seq + 1..seq).take(1_000_000) {
                self.missing.insert(s);
            }
            self.max_seq = seq;
        } else {
            // Late (was missing) or a duplicate: either way not in order.
            self.missing.remove(&seq);
            self.reordered += 1;
        }
    }

    fn lost(&self, target: u64) -> u64 {
        self.missing.len() as u64 + target.saturating_sub(self.max_seq)
    }
}

struct SocketResult {
    user: usize,
    tally: Tally,
    error: Option<String>,
}

/// Microseconds since `origin`.
fn micros_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Reads frames until the user's target seq is reached after publishing ended, or the drain
/// deadline passes.
async fn read_socket(
    mut ws: Ws,
    start_seq: u64,
    user: usize,
    shared: Arc<Shared>,
    mut finish: watch::Receiver<Option<Instant>>,
) -> SocketResult {
    let mut tally = Tally::new(start_seq);
    let mut error = None;
    let mut deadline: Option<Instant> = None;
    loop {
        if let Some(d) = deadline {
            let target = shared.targets[user].load(Ordering::Acquire);
            if tally.max_seq >= target && tally.missing.is_empty() {
                break;
            }
            if Instant::now() >= d {
                break;
            }
        }
        let next = tokio::select! {
            m = ws.next() => m,
            changed = finish.changed(), if deadline.is_none() => {
                if changed.is_ok() {
                    deadline = *finish.borrow_and_update();
                } else {
                    deadline = Some(Instant::now());
                }
                continue;
            }
            _ = sleep_until_opt(deadline) => continue,
        };
        let text = match next {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                error = Some(format!("closed by server: {f:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                error = Some(format!("socket error: {e}"));
                break;
            }
            None => {
                error = Some("socket ended".into());
                break;
            }
        };
        let now = micros_since(shared.origin);
        match serde_json::from_str::<BenchFrame>(text.as_str()) {
            Ok(frame) if frame.kind == "event" => {
                let Some(seq) = frame.seq else {
                    error = Some("event frame without seq".into());
                    break;
                };
                tally.record(seq);
                if let Some(t) = frame.data.and_then(|d| d.t) {
                    tally.hist.saturating_record(now.saturating_sub(t).max(1));
                }
                shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
                shared.last_frame_us.fetch_max(now, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                error = Some(format!("bad frame {e}"));
                break;
            }
        }
    }
    if error.is_some() {
        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    drop(ws);
    SocketResult { user, tally, error }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

struct Shared {
    origin: Instant,
    /// Per user: the seq its sockets must reach (u64::MAX until publishing ended).
    targets: Vec<AtomicU64>,
    counters: Arc<Counters>,
    last_frame_us: AtomicU64,
}

/// Opens every socket, publishes for `duration`, waits for the last frames, and reports.
pub async fn run_load(config: &LoadConfig, counters: Arc<Counters>) -> Result<LoadReport, String> {
    let tag = format!("bench-{}", random_hex(8));
    let users: Vec<String> = (0..config.users).map(|i| format!("{tag}-u{i}")).collect();
    let ttl = config.duration + config.drain_timeout + Duration::from_secs(3600);
    let tokens: Vec<String> =
        users.iter().map(|u| herald_client::sign_token(&config.jwt_secret, u, ttl)).collect();
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        targets: (0..config.users).map(|_| AtomicU64::new(u64::MAX)).collect(),
        counters: counters.clone(),
        last_frame_us: AtomicU64::new(0),
    });
    let tokens = Arc::new(tokens);

    // Open every socket before publishing; remember where each user's log starts.
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut opening = tokio::task::JoinSet::new();
    for user in 0..config.users {
        for _ in 0..config.conns_per_user {
            let (base, tokens, permits, counters) =
                (config.url.clone(), tokens.clone(), permits.clone(), counters.clone());
            opening.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("open semaphore");
                let opened = open_socket(&base, &tokens[user], "", None, Duration::from_secs(30)).await;
                if opened.is_ok() {
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                }
                (user, opened)
            });
        }
    }
    let mut sockets = Vec::new();
    let mut start_seq = vec![0u64; config.users];
    while let Some(joined) = opening.join_next().await {
        let (user, opened) = joined.map_err(|e| e.to_string())?;
        let (ws, seq, _) = opened.map_err(|e| format!("opening a socket for {}: {e}", users[user]))?;
        start_seq[user] = start_seq[user].max(seq);
        sockets.push((user, ws, seq));
    }
    let connections = sockets.len();
    let (finish_tx, finish_rx) = watch::channel(None);
    let mut readers = tokio::task::JoinSet::new();
    for (user, ws, seq) in sockets {
        readers.spawn(read_socket(ws, seq, user, shared.clone(), finish_rx.clone()));
    }

    // Publish.
    let publishers = config.publishers.min(config.users).max(1);
    let accepted: Arc<Vec<AtomicU64>> = Arc::new((0..config.users).map(|_| AtomicU64::new(0)).collect());
    let error_samples = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_client_0 = process_cpu_s(None);
    let cpu_server_0 = config.server_pid.and_then(|p| process_cpu_split_s(Some(p)));
    let publish_start = Instant::now();
    let publish_end = publish_start + config.duration;
    let mut publishing = tokio::task::JoinSet::new();
    for p in 0..publishers {
        let mine: Vec<(usize, String)> =
            (0..config.users).filter(|u| u % publishers == p).map(|u| (u, users[u].clone())).collect();
        let mut state = PublisherState { position: vec![(0, 0); mine.len()], users: mine, next: 0 };
        let (cfg, shared, accepted, errors, stop) =
            (config.clone(), shared.clone(), accepted.clone(), error_samples.clone(), stop.clone());
        let tag = format!("{tag}-p{p}");
        publishing.spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .build()
                .expect("http client");
            let endpoint = format!("{}/v1/events", cfg.url.trim_end_matches('/'));
            let auth = format!("Bearer {}", cfg.api_key);
            // Open loop: request k of this publisher is due at start + k × interval.
            let interval =
                cfg.rate.map(|r| Duration::from_secs_f64(cfg.batch as f64 * publishers as f64 / r));
            let mut k: u32 = 0;
            let mut body = String::new();
            let mut batch_users = Vec::with_capacity(cfg.batch);
            loop {
                let due = match interval {
                    Some(iv) => {
                        let due = publish_start + iv * k;
                        k += 1;
                        if due >= publish_end {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        // tokio's timer wakes up to ~1 ms late; that slack is the client's, not
                        // the server's. Behind schedule by more, the wait is charged (open loop).
                        let now = Instant::now();
                        if now.duration_since(due) < TIMER_SLACK { now } else { due }
                    }
                    None => {
                        let now = Instant::now();
                        if now >= publish_end || stop.load(Ordering::Relaxed) {
                            break;
                        }
                        now
                    }
                };
                let t = u64::try_from(due.saturating_duration_since(shared.origin).as_micros()).unwrap_or(0);
                batch_users.clear();
                if cfg.batch > 1 {
                    body.push_str(r#"{"events":["#);
                }
                for i in 0..cfg.batch {
                    if i > 0 {
                        body.push(',');
                    }
                    batch_users.push(state.next_event(&mut body, &tag, t, cfg.payload_bytes));
                }
                if cfg.batch > 1 {
                    body.push_str("]}");
                }
                let sent = http
                    .post(&endpoint)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(std::mem::replace(
                        &mut body,
                        String::with_capacity(cfg.batch * (cfg.payload_bytes + 128)),
                    ))
                    .send()
                    .await;
                let failure = match sent {
                    Ok(response) => {
                        let status = response.status();
                        let text = response.bytes().await.unwrap_or_default();
                        if status.is_success() {
                            None
                        } else {
                            Some(format!("POST /v1/events: {status}: {}", String::from_utf8_lossy(&text)))
                        }
                    }
                    Err(e) => Some(format!("POST /v1/events: {e}")),
                };
                match failure {
                    None => {
                        for &u in &batch_users {
                            accepted[u].fetch_add(1, Ordering::Relaxed);
                        }
                        shared.counters.published.fetch_add(batch_users.len() as u64, Ordering::Relaxed);
                    }
                    Some(message) => {
                        // The run state of these users is now unknown to us: stop, and report.
                        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                        let mut samples = errors.lock().expect("samples");
                        if samples.len() < 5 {
                            samples.push(message);
                        }
                        return;
                    }
                }
            }
        });
    }
    while let Some(joined) = publishing.join_next().await {
        joined.map_err(|e| e.to_string())?;
    }
    let publish_elapsed = publish_start.elapsed();
    for (u, n) in accepted.iter().enumerate() {
        shared.targets[u].store(start_seq[u] + n.load(Ordering::Relaxed), Ordering::Release);
    }
    let _ = finish_tx.send(Some(Instant::now() + config.drain_timeout));

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, LATENCY_DIGITS).expect("valid bounds");
    let (mut delivered, mut lost, mut reordered) = (0u64, 0u64, 0u64);
    let mut samples = error_samples.lock().expect("samples").clone();
    while let Some(joined) = readers.join_next().await {
        let SocketResult { user, tally, error } = joined.map_err(|e| e.to_string())?;
        delivered += tally.received;
        reordered += tally.reordered;
        lost += tally.lost(shared.targets[user].load(Ordering::Acquire));
        hist.add(&tally.hist).map_err(|e| e.to_string())?;
        if let Some(e) = error
            && samples.len() < 5
        {
            samples.push(e);
        }
    }
    let last_frame = Duration::from_micros(shared.last_frame_us.load(Ordering::Relaxed));
    let elapsed = last_frame.saturating_sub(publish_start.duration_since(shared.origin)).max(publish_elapsed);
    let client_cpu_s = match (cpu_client_0, process_cpu_s(None)) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let server_cpu_split = match (cpu_server_0, config.server_pid.and_then(|p| process_cpu_split_s(Some(p))))
    {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
        _ => None,
    };
    let ms = |v: u64| v as f64 / 1000.0;
    let latency_ms = if hist.is_empty() {
        LatencyMs::default()
    } else {
        LatencyMs {
            p50: ms(hist.value_at_quantile(0.5)),
            p90: ms(hist.value_at_quantile(0.9)),
            p99: ms(hist.value_at_quantile(0.99)),
            p999: ms(hist.value_at_quantile(0.999)),
            max: ms(hist.max()),
        }
    };
    let published = counters.published.load(Ordering::Relaxed);
    Ok(LoadReport {
        published_per_s: published as f64 / publish_elapsed.as_secs_f64(),
        delivered_per_s: delivered as f64 / elapsed.as_secs_f64().max(1e-9),
        delivered,
        latency_ms,
        lost,
        reordered,
        errors: counters.errors.load(Ordering::Relaxed),
        client_cpu_s,
        server_cpu_s: server_cpu_split.map(|(user, sys)| user + sys),
        server_user_s: server_cpu_split.map(|(user, _)| user),
        server_sys_s: server_cpu_split.map(|(_, sys)| sys),
        server_rss_bytes: config.server_pid.and_then(process_rss_bytes),
        published,
        connections,
        elapsed_s: elapsed.as_secs_f64(),
        error_samples: samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_gaps_late_and_duplicates() {
        let mut t = Tally::new(10);
        for s in [11, 12, 14, 15] {
            t.record(s);
        }
        assert_eq!(t.lost(15), 1);
        t.record(13);
        assert_eq!((t.lost(15), t.reordered), (0, 1));
        t.record(15);
        assert_eq!(t.reordered, 2);
        assert_eq!(t.lost(18), 3);
    }
}
