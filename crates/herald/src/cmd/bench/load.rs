//! The load run: `users × conns_per_user` sockets, `publishers` tasks posting runs of
//! `agent_text` events (batches of `batch`), at a fixed rate (open loop; when a publisher is more
//! than 2 ms behind schedule the timestamp in the payload is the *scheduled* send time, so a slow
//! server cannot hide its queueing) or as fast as the server answers. Every frame is counted per
//! connection; gaps, duplicates and reordering are reported. Latency is publish→receive from a
//! microsecond timestamp in the payload.

use super::events::random_hex;
use super::publish::{Publishing, publisher_client, run_publisher};
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
pub(super) struct Tally {
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

pub(super) struct SocketResult {
    user: usize,
    tally: Tally,
    error: Option<String>,
}

/// Tells the readers to finish by `drain_timeout` from now, once `expected` frames have arrived
/// (or that deadline passed). The signal wakes every reader at once — thousands of tasks — and
/// frames still on their way would wait behind that storm: their delay would be the bench's,
/// charged as the server's.
pub(super) async fn finish_readers(
    finish: &watch::Sender<Option<Instant>>,
    counters: &Counters,
    expected: u64,
    drain_timeout: Duration,
) {
    let drained_by = Instant::now() + drain_timeout;
    reached(&counters.delivered, expected, drained_by).await;
    let _ = finish.send(Some(drained_by));
}

/// Waits until `n` readers have started. Thousands of freshly spawned readers take tens of ms
/// to be polled once; a schedule started meanwhile would find its first events late and charge
/// that to the server.
pub(super) async fn readers_started(shared: &Shared, n: usize) {
    reached(&shared.readers_started, n as u64, Instant::now() + Duration::from_secs(10)).await;
}

/// Waits until `count` reaches `target` or `deadline` passes, looking every millisecond (the
/// tasks that count are the bench's own; no wake-up is worth adding to their hot path).
async fn reached(count: &AtomicU64, target: u64, deadline: Instant) {
    while count.load(Ordering::Acquire) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Microseconds since `origin`.
fn micros_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Reads frames until the user's target seq is reached after publishing ended, or the drain
/// deadline passes.
pub(super) async fn read_socket(
    mut ws: Ws,
    start_seq: u64,
    user: usize,
    shared: Arc<Shared>,
    mut finish: watch::Receiver<Option<Instant>>,
) -> SocketResult {
    shared.readers_started.fetch_add(1, Ordering::Release);
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

/// What the readers and publishers of one run share.
pub(super) struct Shared {
    /// Time zero of the payload timestamps.
    pub(super) origin: Instant,
    /// Per user: the seq its sockets must reach (u64::MAX until publishing ended).
    pub(super) targets: Vec<AtomicU64>,
    /// Live counters.
    pub(super) counters: Arc<Counters>,
    /// When the last frame arrived, µs after `origin`.
    pub(super) last_frame_us: AtomicU64,
    /// Readers that have started reading (see [`readers_started`]).
    pub(super) readers_started: AtomicU64,
}

impl Shared {
    /// A run's shared state for `users` users, its clock starting now.
    pub(super) fn new(users: usize, counters: Arc<Counters>) -> Self {
        Shared {
            origin: Instant::now(),
            targets: (0..users).map(|_| AtomicU64::new(u64::MAX)).collect(),
            counters,
            last_frame_us: AtomicU64::new(0),
            readers_started: AtomicU64::new(0),
        }
    }
}

/// Opens every socket, publishes for `duration`, waits for the last frames, and reports.
pub async fn run_load(config: &LoadConfig, counters: Arc<Counters>) -> Result<LoadReport, String> {
    let tag = format!("bench-{}", random_hex(8));
    let users: Vec<String> = (0..config.users).map(|i| format!("{tag}-u{i}")).collect();
    let shared = Arc::new(Shared::new(config.users, counters.clone()));

    // Open every socket before publishing; remember where each user's log starts.
    let sockets = open_sockets(config, &users, &counters).await?;
    let connections = sockets.len();
    let mut start_seq = vec![0u64; config.users];
    let (finish_tx, finish_rx) = watch::channel(None);
    let mut readers = tokio::task::JoinSet::new();
    for (user, ws, seq) in sockets {
        start_seq[user] = start_seq[user].max(seq);
        readers.spawn(read_socket(ws, seq, user, shared.clone(), finish_rx.clone()));
    }
    readers_started(&shared, connections).await;

    let cpu_client_0 = process_cpu_s(None);
    let cpu_server_0 = config.server_pid.and_then(|p| process_cpu_split_s(Some(p)));
    let publishing = publish(config, &users, &tag, &shared).await?;
    let publish_elapsed = publishing.start.elapsed();
    for (u, n) in publishing.accepted.iter().enumerate() {
        shared.targets[u].store(start_seq[u] + n.load(Ordering::Relaxed), Ordering::Release);
    }
    let expected = counters.published.load(Ordering::Relaxed) * config.conns_per_user as u64;
    finish_readers(&finish_tx, &counters, expected, config.drain_timeout).await;

    let samples = publishing.error_samples.lock().expect("samples").clone();
    let totals = collect(readers, &shared, samples).await?;
    let last_frame = Duration::from_micros(shared.last_frame_us.load(Ordering::Relaxed));
    let elapsed =
        last_frame.saturating_sub(publishing.start.duration_since(shared.origin)).max(publish_elapsed);
    let client_cpu_s = match (cpu_client_0, process_cpu_s(None)) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let server_cpu_split = match (cpu_server_0, config.server_pid.and_then(|p| process_cpu_split_s(Some(p))))
    {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
        _ => None,
    };
    let published = counters.published.load(Ordering::Relaxed);
    Ok(LoadReport {
        published_per_s: published as f64 / publish_elapsed.as_secs_f64(),
        delivered_per_s: totals.delivered as f64 / elapsed.as_secs_f64().max(1e-9),
        delivered: totals.delivered,
        latency_ms: LatencyMs::of(&totals.hist),
        lost: totals.lost,
        reordered: totals.reordered,
        errors: counters.errors.load(Ordering::Relaxed),
        client_cpu_s,
        server_cpu_s: server_cpu_split.map(|(user, sys)| user + sys),
        server_user_s: server_cpu_split.map(|(user, _)| user),
        server_sys_s: server_cpu_split.map(|(_, sys)| sys),
        server_rss_bytes: config.server_pid.and_then(process_rss_bytes),
        published,
        connections,
        elapsed_s: elapsed.as_secs_f64(),
        error_samples: totals.samples,
    })
}

/// Opens `conns_per_user` sockets per user, at most [`CONNECT_CONCURRENCY`] at a time; returns
/// each socket with its user and the seq it synced at.
pub(super) async fn open_sockets(
    config: &LoadConfig,
    users: &[String],
    counters: &Arc<Counters>,
) -> Result<Vec<(usize, Ws, u64)>, String> {
    let ttl = config.duration + config.drain_timeout + Duration::from_secs(3600);
    let tokens: Arc<Vec<String>> =
        Arc::new(users.iter().map(|u| herald_client::sign_token(&config.jwt_secret, u, ttl)).collect());
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
    while let Some(joined) = opening.join_next().await {
        let (user, opened) = joined.map_err(|e| e.to_string())?;
        let (ws, seq, _) = opened.map_err(|e| format!("opening a socket for {}: {e}", users[user]))?;
        sockets.push((user, ws, seq));
    }
    Ok(sockets)
}

/// Runs the publishers (each with its share of the users) until the duration is over; returns
/// what they accepted and the first failures.
async fn publish(
    config: &LoadConfig,
    users: &[String],
    tag: &str,
    shared: &Shared,
) -> Result<Arc<Publishing>, String> {
    let publishers = config.publishers.min(config.users).max(1);
    let clients = (0..publishers).map(|_| publisher_client()).collect::<Result<Vec<_>, _>>()?;
    let publishing = Arc::new(Publishing {
        config: config.clone(),
        publishers,
        origin: shared.origin,
        start: Instant::now(),
        counters: shared.counters.clone(),
        accepted: (0..config.users).map(|_| AtomicU64::new(0)).collect(),
        error_samples: std::sync::Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (p, http) in clients.into_iter().enumerate() {
        let mine: Vec<(usize, String)> =
            (0..config.users).filter(|u| u % publishers == p).map(|u| (u, users[u].clone())).collect();
        tasks.spawn(run_publisher(publishing.clone(), p, mine, tag.to_owned(), http));
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| e.to_string())?;
    }
    Ok(publishing)
}

/// What every socket received, summed.
pub(super) struct Totals {
    pub(super) hist: Histogram<u64>,
    pub(super) delivered: u64,
    pub(super) lost: u64,
    pub(super) reordered: u64,
    /// `samples` given, then the sockets' errors (at most 5 in all).
    pub(super) samples: Vec<String>,
}

/// Waits for every reader and sums their tallies.
pub(super) async fn collect(
    mut readers: tokio::task::JoinSet<SocketResult>,
    shared: &Shared,
    mut samples: Vec<String>,
) -> Result<Totals, String> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, LATENCY_DIGITS).expect("valid bounds");
    let (mut delivered, mut lost, mut reordered) = (0u64, 0u64, 0u64);
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
    Ok(Totals { hist, delivered, lost, reordered, samples })
}

impl LatencyMs {
    /// The percentiles of a histogram of microseconds (all 0 when it is empty).
    pub(super) fn of(hist: &Histogram<u64>) -> LatencyMs {
        if hist.is_empty() {
            return LatencyMs::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        LatencyMs {
            p50: ms(hist.value_at_quantile(0.5)),
            p90: ms(hist.value_at_quantile(0.9)),
            p99: ms(hist.value_at_quantile(0.99)),
            p999: ms(hist.value_at_quantile(0.999)),
            max: ms(hist.max()),
        }
    }
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
