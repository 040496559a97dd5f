//! Load generation for `herald bench`: fan-out throughput and latency, idle connections, replay.
//!
//! Works against any server that speaks the contract of docs/protocol.md (JWT in the `Authorization`
//! header, `welcome` … `synced` on connect, `POST /v1/events` with one event or
//! `{"events":[…]}`), not only Herald, so the same workload can be run against the peers in
//! `bench/peers/`.
//!
//! - [`run_load`]: `users × conns_per_user` sockets, `publishers` tasks posting runs of
//!   `agent_text` events (batches of `batch`), at a fixed rate (open loop; when a publisher is
//!   more than 2 ms behind schedule the timestamp in the payload is the *scheduled* send time, so
//!   a slow server cannot hide its queueing) or as fast as the server answers. Every frame is counted per connection; gaps, duplicates and reordering are
//!   reported. Latency is publish→receive from a microsecond timestamp in the payload.
//! - [`run_idle`]: N authenticated idle sockets spread over several 127.0.0.x source addresses;
//!   the server's RSS delta per connection.
//! - [`run_replay`]: N retained events of one user, then the time a resuming socket takes from
//!   connect to `synced`; and the server's RSS delta per retained event.
//!
//! Server CPU and memory come from `/proc/PID/stat` and `/proc/PID/status` when the caller knows
//! the server's pid ([`SpawnedServer`] or `--server-pid`).

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Events per run: `agent_started`, `RUN_LEN - 2` × `agent_text`, `agent_completed`.
const RUN_LEN: u64 = 100;
/// Read buffer of each bench socket. tungstenite's default (128 KiB) is allocated per socket;
/// 16 KiB holds dozens of frames, so a busy socket still drains in few reads.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// How late a timer may fire before the delay counts as the server's (see the publishers).
const TIMER_SLACK: Duration = Duration::from_millis(2);
/// Sockets being opened at the same time.
const CONNECT_CONCURRENCY: usize = 128;
/// Idle sockets per 127.0.0.x source address (below Herald's default per-IP limit of 1024 and far
/// below the ~28k ephemeral ports of one address).
const IDLE_PER_SOURCE: usize = 1000;

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

/// Seconds of CPU (user + system) a process has used, from `/proc/PID/stat`.
pub fn process_cpu_s(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / ticks)
}

/// A process's resident set size in bytes, from `VmRSS` in `/proc/PID/status`.
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Raises the soft open-files limit to `want` (and the hard one too when allowed, e.g. as root);
/// returns the soft limit in force afterwards.
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write to / read from a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max.max(want) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        let capped = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &capped) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}

/// A Herald server this process started (`herald bench --spawn`); killed on drop.
pub struct SpawnedServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The random API key it accepts.
    pub api_key: String,
    /// The random HS256 secret it verifies tokens with.
    pub jwt_secret: String,
}

impl SpawnedServer {
    /// Starts `exe serve` on 127.0.0.1:0 with random keys and `extra` arguments, and waits for
    /// its `listening on http://ADDR` line.
    pub fn start(exe: &std::path::Path, extra: &[String]) -> Result<SpawnedServer, String> {
        let api_key = random_hex(16);
        let jwt_secret = random_hex(32);
        let mut command = Command::new(exe);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the server when
        // this process dies, so an interrupted bench never leaves a server behind.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("HERALD_API_KEY", &api_key)
            .env("HERALD_JWT_SECRET", &jwt_secret)
            .env("HERALD_LOG_FORMAT", "text")
            // Per-connection log lines would cost the server more than the frames do.
            .env("RUST_LOG", "warn,herald_server=info,herald_server::ws=warn,herald_server::api=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {} serve: {e}", exe.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(at) = line.find("listening on http://") {
                        let addr = line[at + "listening on ".len()..]
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .trim_matches('"')
                            .to_owned();
                        let _ = tx.send(Ok(addr));
                        sent = true;
                    } else {
                        seen.push(line);
                    }
                }
                // Keep draining so the server never blocks on a full pipe.
            }
            if !sent {
                let _ = tx.send(Err(seen.join("\n")));
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(url)) => url,
            Ok(Err(output)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the spawned server exited before listening:\n{output}"));
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the spawned server did not log `listening on` within 30 s".into());
            }
        };
        Ok(SpawnedServer { child, url, api_key, jwt_secret })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `len` random hex digits.
pub fn random_hex(len: usize) -> String {
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        let _ = write!(s, "{:x}", rand::random::<u8>() & 0xf);
    }
    s
}

/// The fields of a server frame the bench looks at; the rest is skipped by the parser.
#[derive(Deserialize)]
struct BenchFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    seq: Option<u64>,
    data: Option<BenchData>,
}

#[derive(Deserialize)]
struct BenchData {
    t: Option<u64>,
}

type Ws = WebSocketStream<TcpStream>;

/// Opens one socket as `token`, optionally from a given source address, and reads `welcome`
/// (and the backlog) up to `synced`. Returns the socket, `synced`'s seq and the backlog's size.
async fn open_socket(
    base: &str,
    token: &str,
    query: &str,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<(Ws, u64, u64), String> {
    let fut = async {
        let url = format!("{}{}", crate::ws_url(base), query);
        let mut request = url.as_str().into_client_request().map_err(|e| e.to_string())?;
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).expect("ascii"));
        let host = request.uri().host().unwrap_or("127.0.0.1").to_owned();
        let port = request.uri().port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{host} has no IPv4 address"))?;
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let stream = socket.connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES).write_buffer_size(0);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let mut welcomed = false;
        let mut backlog = 0u64;
        loop {
            let text = match ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(f))) => return Err(format!("closed before synced: {f:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("reading the opening: {e}")),
                None => return Err("socket ended before synced".into()),
            };
            let frame: BenchFrame = serde_json::from_str(text.as_str())
                .map_err(|e| format!("bad frame {e}: {}", text.as_str()))?;
            match (&*frame.kind, welcomed) {
                ("welcome", false) => welcomed = true,
                ("event", true) => backlog += 1,
                ("synced", true) => {
                    return Ok((ws, frame.seq.ok_or("synced without seq")?, backlog));
                }
                (kind, _) => return Err(format!("unexpected {kind} frame in the opening")),
            }
        }
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| "timed out opening a socket".to_owned())?
}

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
        let hist = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
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

/// Builds the JSON of one event: `data` is `{"t":<µs>,"delta":"xxx…"}`, about `payload` bytes.
fn push_event(out: &mut String, user: &str, run: &str, event: &str, t: u64, payload: usize) {
    let _ =
        write!(out, r#"{{"user_id":"{user}","run_id":"{run}","event":"{event}","data":{{"t":{t},"delta":""#);
    let pad = payload.saturating_sub(32);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}}");
}

/// One publisher's users and where each is in its current run.
struct PublisherState {
    users: Vec<(usize, String)>,
    /// Events published in the current run, per user; the run index, per user.
    position: Vec<(u64, u64)>,
    next: usize,
}

impl PublisherState {
    /// Appends the next event of the next user (round-robin) to `out`; returns the user index.
    fn next_event(&mut self, out: &mut String, tag: &str, t: u64, payload: usize) -> usize {
        let i = self.next;
        self.next = (self.next + 1) % self.users.len();
        let (user_index, user) = &self.users[i];
        let (pos, run) = &mut self.position[i];
        let event = match *pos {
            0 => "agent_started",
            p if p == RUN_LEN - 1 => "agent_completed",
            _ => "agent_text",
        };
        let run_id = format!("{user}-{tag}r{run}");
        push_event(out, user, &run_id, event, t, payload);
        *pos += 1;
        if *pos == RUN_LEN {
            *pos = 0;
            *run += 1;
        }
        *user_index
    }
}

/// Opens every socket, publishes for `duration`, waits for the last frames, and reports.
pub async fn run_load(config: &LoadConfig, counters: Arc<Counters>) -> Result<LoadReport, String> {
    let tag = format!("bench-{}", random_hex(8));
    let users: Vec<String> = (0..config.users).map(|i| format!("{tag}-u{i}")).collect();
    let ttl = config.duration + config.drain_timeout + Duration::from_secs(3600);
    let tokens: Vec<String> = users.iter().map(|u| crate::sign_token(&config.jwt_secret, u, ttl)).collect();
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
    let cpu_server_0 = config.server_pid.and_then(|p| process_cpu_s(Some(p)));
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

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
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
    let server_cpu_s = match (cpu_server_0, config.server_pid.and_then(|p| process_cpu_s(Some(p)))) {
        (Some(a), Some(b)) => Some(b - a),
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
        server_cpu_s,
        server_rss_bytes: config.server_pid.and_then(process_rss_bytes),
        published,
        connections,
        elapsed_s: elapsed.as_secs_f64(),
        error_samples: samples,
    })
}

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
    pub client_fd_limit: u64,
    /// The first few errors.
    pub error_samples: Vec<String>,
}

/// Opens `connections` idle authenticated sockets and measures the server's RSS per socket.
pub async fn run_idle(config: &IdleConfig) -> Result<IdleReport, String> {
    let client_fd_limit = raise_fd_limit(config.connections as u64 + 1024);
    if client_fd_limit < config.connections as u64 + 256 {
        return Err(format!(
            "the open-files limit is {client_fd_limit} and cannot be raised (hard limit); at most {} idle \
             connections here: raise it (ulimit -Hn, systemd LimitNOFILE, or run as root)",
            client_fd_limit.saturating_sub(256)
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
            .map(|u| crate::sign_token(&config.jwt_secret, &format!("{tag}-u{u}"), Duration::from_secs(3600)))
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

/// What the replay run does.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// `http://host:port` of the server.
    pub url: String,
    /// API key for `POST /v1/events`.
    pub api_key: String,
    /// HS256 secret to sign the user's token with.
    pub jwt_secret: String,
    /// Events to retain and replay.
    pub events: usize,
    /// Approximate size of each event's `data`, in bytes.
    pub payload_bytes: usize,
    /// Replays to time (each a fresh socket resuming from seq 0).
    pub rounds: usize,
    /// The server's pid, for its RSS.
    pub server_pid: Option<u32>,
}

/// The result of [`run_replay`].
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Events published and replayed.
    pub replay_events: usize,
    /// Events each replay delivered before `synced` (must equal `replay_events`).
    pub events_received: u64,
    /// Milliseconds from starting to connect until `synced`, per round.
    pub replay_ms: Vec<f64>,
    /// The median of `replay_ms`.
    pub replay_ms_median: f64,
    /// Seconds to publish the events (batches of up to 1000).
    pub publish_s: f64,
    /// Server RSS before publishing.
    pub server_rss_before_bytes: Option<u64>,
    /// Server RSS with the events retained.
    pub server_rss_after_bytes: Option<u64>,
    /// (after − before) / events.
    pub server_rss_per_event_bytes: Option<f64>,
}

/// Publishes `events` events to one offline user, then times resuming sockets (`after=0`).
pub async fn run_replay(config: &ReplayConfig) -> Result<ReplayReport, String> {
    let tag = format!("replay-{}", random_hex(8));
    let user = format!("{tag}-u0");
    let token = crate::sign_token(&config.jwt_secret, &user, Duration::from_secs(3600));
    let http = reqwest::Client::new();
    let endpoint = format!("{}/v1/events", config.url.trim_end_matches('/'));
    let mut state = PublisherState { users: vec![(0, user.clone())], position: vec![(0, 0)], next: 0 };
    // Warm the server's per-user structures with one socket, so the RSS delta is the events'.
    let (ws, _, _) = open_socket(&config.url, &token, "", None, Duration::from_secs(30)).await?;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = config.server_pid.and_then(process_rss_bytes);
    let started = Instant::now();
    let mut epoch = String::new();
    let mut left = config.events;
    while left > 0 {
        let n = left.min(1000);
        let mut body = String::from(r#"{"events":["#);
        for i in 0..n {
            if i > 0 {
                body.push(',');
            }
            state.next_event(&mut body, &tag, 0, config.payload_bytes);
        }
        body.push_str("]}");
        let response = http
            .post(&endpoint)
            .bearer_auth(&config.api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST /v1/events: {e}"))?;
        let status = response.status();
        let value: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("POST /v1/events: {status}: {value}"));
        }
        if let Some(e) = value["results"][0]["epoch"].as_str() {
            epoch = e.to_owned();
        }
        left -= n;
    }
    let publish_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = config.server_pid.and_then(process_rss_bytes);
    let mut replay_ms = Vec::new();
    let mut events_received = 0;
    for _ in 0..config.rounds.max(1) {
        let t0 = Instant::now();
        let (ws, seq, backlog) = open_socket(
            &config.url,
            &token,
            &format!("?after=0&epoch={epoch}"),
            None,
            Duration::from_secs(60),
        )
        .await?;
        replay_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        events_received = backlog;
        drop(ws);
        if seq != config.events as u64 {
            return Err(format!("synced at seq {seq}, expected {}", config.events));
        }
    }
    let mut sorted = replay_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let per_event = match (rss_before, rss_after) {
        (Some(b), Some(a)) if config.events > 0 => Some((a as f64 - b as f64) / config.events as f64),
        _ => None,
    };
    Ok(ReplayReport {
        replay_events: config.events,
        events_received,
        replay_ms_median: sorted[sorted.len() / 2],
        replay_ms,
        publish_s,
        server_rss_before_bytes: rss_before,
        server_rss_after_bytes: rss_after,
        server_rss_per_event_bytes: per_event,
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

    #[test]
    fn events_have_the_payload_size() {
        let mut s = String::new();
        push_event(&mut s, "u", "r", "agent_text", 123_456_789, 200);
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        let data = serde_json::to_string(&v["data"]).expect("json");
        assert!((190..=210).contains(&data.len()), "{}", data.len());
    }

    #[test]
    fn runs_follow_the_state_machine() {
        let mut p = PublisherState { users: vec![(0, "a".into())], position: vec![(0, 0)], next: 0 };
        let mut names = Vec::new();
        for _ in 0..(RUN_LEN + 1) {
            let mut s = String::new();
            p.next_event(&mut s, "x", 0, 10);
            let v: serde_json::Value = serde_json::from_str(&s).expect("json");
            names.push((v["event"].as_str().unwrap().to_owned(), v["run_id"].as_str().unwrap().to_owned()));
        }
        assert_eq!(names[0], ("agent_started".into(), "a-xr0".into()));
        assert_eq!(names[RUN_LEN as usize - 1].0, "agent_completed");
        assert_eq!(names[RUN_LEN as usize], ("agent_started".into(), "a-xr1".into()));
    }
}
