//! The token-stream run (`--token-stream`): the workload of an agent streaming its answer.
//! `runs` concurrent runs, each of its own user with one socket: `agent_started`, `token_rate`
//! `agent_text` events per second (one event per message) for the duration, `agent_completed`.
//!
//! The same workload is published once per transport, one after the other against the same
//! server: over HTTP (one `POST /v1/events` per token, keep-alive connections) and over the
//! publisher socket (`GET /v1/publish`, one frame per token on `sockets` shared sockets, answers
//! read as they come). Each phase reports the server's CPU per delivered token and the
//! publish→receive latency, measured as in the load run (open loop, timestamp in the payload).

use super::events::{push_event, random_hex};
use super::load::{
    Counters, LatencyMs, LoadConfig, Shared, Totals, collect, finish_readers, open_sockets, read_socket,
    readers_started,
};
use super::publish::{post, send_time};
use super::stats::{process_cpu_s, process_cpu_split_s};
use herald_client::publish_socket::{PublishReceiver, PublishSocket};
use herald_protocol::Outcome;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How a phase publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One `POST /v1/events` per token.
    Http,
    /// One frame per token on the publisher socket.
    Socket,
}

/// What the token-stream run does.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// `http://host:port` of the server.
    pub url: String,
    /// API key for publishing.
    pub api_key: String,
    /// HS256 secret to sign the users' tokens with.
    pub jwt_secret: String,
    /// Concurrent runs (one user and one socket each).
    pub runs: usize,
    /// `agent_text` events per second per run.
    pub token_rate: f64,
    /// How long each run streams.
    pub duration: Duration,
    /// Approximate size of each event's `data`, in bytes.
    pub payload_bytes: usize,
    /// Publisher sockets the runs share (socket transport).
    pub sockets: usize,
    /// How long to wait after publishing for the last frames.
    pub drain_timeout: Duration,
    /// The server's pid, for its CPU time.
    pub server_pid: Option<u32>,
}

impl TokenConfig {
    /// The load settings that open this run's sockets: one per run, each of its own user.
    fn sockets_to_open(&self) -> LoadConfig {
        LoadConfig {
            url: self.url.clone(),
            api_key: self.api_key.clone(),
            jwt_secret: self.jwt_secret.clone(),
            users: self.runs,
            conns_per_user: 1,
            rate: None,
            duration: self.duration,
            payload_bytes: self.payload_bytes,
            batch: 1,
            publishers: 1,
            drain_timeout: self.drain_timeout,
            server_pid: self.server_pid,
        }
    }
}

/// The result of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct TokenReport {
    /// How the tokens were published.
    pub transport: Transport,
    /// Concurrent runs.
    pub runs: usize,
    /// Tokens (all events of the runs) published.
    pub published: u64,
    /// Event frames received.
    pub delivered: u64,
    /// Publish→receive latency.
    pub latency_ms: LatencyMs,
    /// Server CPU per delivered frame, in µs (with `--spawn` or `--server-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_token: Option<f64>,
    /// The kernel's part of `server_cpu_us_per_token`: the writes each token needs (and, on
    /// loopback, the receiver's TCP work), which no server avoids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_sys_us_per_token: Option<f64>,
    /// Bench CPU per delivered frame, in µs.
    pub client_cpu_us_per_token: f64,
    /// Frames that never arrived.
    pub lost: u64,
    /// Frames out of order or twice.
    pub reordered: u64,
    /// Refused publishes and dropped sockets.
    pub errors: u64,
    /// The first few errors.
    pub error_samples: Vec<String>,
}

impl TokenReport {
    /// True when every token reached its socket once, in order, with no error.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.reordered == 0 && self.errors == 0 && self.delivered > 0
    }
}

/// Where a run's events go.
#[derive(Clone)]
enum Sink {
    Http { client: reqwest::Client, endpoint: String, auth: String },
    Socket { frames: mpsc::UnboundedSender<String>, sent: Arc<AtomicU64> },
}

impl Sink {
    /// Publishes one event (HTTP: waits for the answer; socket: queues the frame).
    async fn publish(&self, event: String) -> Result<(), String> {
        match self {
            Sink::Http { client, endpoint, auth } => post(client, endpoint, auth, event).await.map(|_| ()),
            Sink::Socket { frames, sent } => {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                frames
                    .send(format!(r#"{{"ref":{n},"event":{event}}}"#))
                    .map_err(|_| "publisher socket closed".to_owned())
            }
        }
    }
}

/// Runs one phase over `transport` and reports it.
pub async fn run_tokens(config: &TokenConfig, transport: Transport) -> Result<TokenReport, String> {
    let tag = format!("tokens-{}", random_hex(8));
    let users: Vec<String> = (0..config.runs).map(|i| format!("{tag}-u{i}")).collect();
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared::new(config.runs, counters.clone()));
    let sockets = open_sockets(&config.sockets_to_open(), &users, &counters).await?;
    let mut start_seq = vec![0u64; config.runs];
    let (finish_tx, finish_rx) = watch::channel(None);
    let mut readers = tokio::task::JoinSet::new();
    for (user, ws, seq) in sockets {
        start_seq[user] = seq;
        readers.spawn(read_socket(ws, seq, user, shared.clone(), finish_rx.clone()));
    }
    readers_started(&shared, config.runs).await;
    let (sinks, mut answers) = match transport {
        Transport::Http => {
            let client = reqwest::Client::builder().tcp_nodelay(true).build().map_err(|e| e.to_string())?;
            let sink = Sink::Http {
                client,
                endpoint: format!("{}/v1/events", config.url),
                auth: format!("Bearer {}", config.api_key),
            };
            (vec![sink], Vec::new())
        }
        Transport::Socket => open_publishers(config).await?,
    };

    let cpu_client_0 = process_cpu_s(None);
    let cpu_server_0 = config.server_pid.and_then(|p| process_cpu_split_s(Some(p)));
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / config.token_rate);
    let mut runs = tokio::task::JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        let sink = sinks[i % sinks.len()].clone();
        let (shared, user, payload) = (shared.clone(), user.clone(), config.payload_bytes);
        // Runs start spread over one interval, so the tokens do not all fall on the same tick.
        let first = start + interval.mul_f64(i as f64 / config.runs as f64);
        let end = start + config.duration;
        runs.spawn(async move {
            let run_id = format!("{user}-run");
            let mut published = 0u64;
            let mut k = 0u32;
            loop {
                let due = first + interval * k;
                // A server that cannot keep up gets fewer tokens, not a longer run: the run ends
                // on time, and the tokens' latency shows how far behind it fell.
                let event = match k {
                    0 => "agent_started",
                    _ if due >= end || Instant::now() >= end => "agent_completed",
                    _ => "agent_text",
                };
                k += 1;
                let sent_at = send_time(due).await;
                let t =
                    u64::try_from(sent_at.saturating_duration_since(shared.origin).as_micros()).unwrap_or(0);
                let mut body = String::with_capacity(payload + 128);
                push_event(&mut body, &user, &run_id, event, t, payload);
                if let Err(e) = sink.publish(body).await {
                    return (i, published, Some(e));
                }
                published += 1;
                if event == "agent_completed" {
                    return (i, published, None);
                }
            }
        });
    }
    let mut samples = Vec::new();
    let mut published = 0;
    while let Some(joined) = runs.join_next().await {
        let (user, n, error) = joined.map_err(|e| e.to_string())?;
        published += n;
        shared.targets[user].store(start_seq[user] + n, Ordering::Release);
        if let Some(e) = error {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            if samples.len() < 5 {
                samples.push(e);
            }
        }
    }
    drop(sinks);
    for reader in answers.drain(..) {
        let refused = reader.await.map_err(|e| e.to_string())?;
        for e in refused {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            if samples.len() < 5 {
                samples.push(e);
            }
        }
    }
    finish_readers(&finish_tx, &counters, published, config.drain_timeout).await;
    let Totals { hist, delivered, lost, reordered, samples } = collect(readers, &shared, samples).await?;
    let server_cpu_s = match (cpu_server_0, config.server_pid.and_then(|p| process_cpu_split_s(Some(p)))) {
        (Some((user_0, sys_0)), Some((user, sys))) => Some((user - user_0, sys - sys_0)),
        _ => None,
    };
    let client_cpu_s = match (cpu_client_0, process_cpu_s(None)) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let per_token = |s: f64| s * 1e6 / delivered.max(1) as f64;
    Ok(TokenReport {
        transport,
        runs: config.runs,
        published,
        delivered,
        latency_ms: LatencyMs::of(&hist),
        server_cpu_us_per_token: server_cpu_s.map(|(user, sys)| per_token(user + sys)),
        server_sys_us_per_token: server_cpu_s.map(|(_, sys)| per_token(sys)),
        client_cpu_us_per_token: per_token(client_cpu_s),
        lost,
        reordered,
        errors: counters.errors.load(Ordering::Relaxed),
        error_samples: samples,
    })
}

/// Opens the publisher sockets: for each, a sink the runs queue frames on (written in bursts,
/// one flush per burst) and a task that reads its answers and returns the refused ones.
async fn open_publishers(
    config: &TokenConfig,
) -> Result<(Vec<Sink>, Vec<tokio::task::JoinHandle<Vec<String>>>), String> {
    let mut sinks = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..config.sockets.max(1) {
        let socket = PublishSocket::connect(&config.url, &config.api_key)
            .await
            .map_err(|e| format!("opening the publisher socket: {e}"))?;
        let (mut tx, rx) = socket.split();
        let (frames, mut queued) = mpsc::unbounded_channel::<String>();
        let sent = Arc::new(AtomicU64::new(0));
        let writer = tokio::spawn(async move {
            while let Some(first) = queued.recv().await {
                let mut next = Some(first);
                while let Some(frame) = next.take() {
                    if tx.feed_text(frame).await.is_err() {
                        return;
                    }
                    next = queued.try_recv().ok();
                }
                if tx.flush().await.is_err() {
                    return;
                }
            }
        });
        readers.push(tokio::spawn(read_answers(rx, sent.clone(), writer)));
        sinks.push(Sink::Socket { frames, sent });
    }
    Ok((sinks, readers))
}

/// Reads answers until every frame sent has one (after the writer finished); returns the errors.
async fn read_answers(
    mut rx: PublishReceiver,
    sent: Arc<AtomicU64>,
    writer: tokio::task::JoinHandle<()>,
) -> Vec<String> {
    let mut refused = Vec::new();
    let mut answered = 0u64;
    let mut writer = writer;
    let mut writer_done = false;
    loop {
        if writer_done && answered >= sent.load(Ordering::Relaxed) {
            return refused;
        }
        tokio::select! {
            _ = &mut writer, if !writer_done => writer_done = true,
            answer = rx.next_answer(Duration::from_secs(30)) => match answer {
                Ok(answer) => {
                    answered += 1;
                    if let Outcome::Error(e) = answer.outcome {
                        refused.push(format!("publisher socket: {}: {}", e.code, e.message));
                    }
                }
                Err(e) => {
                    refused.push(format!("publisher socket: {e}"));
                    return refused;
                }
            },
        }
    }
}

/// Prints the phases as one table.
pub fn print_reports(config: &TokenConfig, reports: &[TokenReport]) {
    println!(
        "{} runs × {} tokens/s for {:.0} s ({:.0} tokens/s in all), one event per message",
        config.runs,
        config.token_rate,
        config.duration.as_secs_f64(),
        config.runs as f64 * config.token_rate
    );
    println!(
        "{:<10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>16} {:>12} {:>16} {:>10} {:>6}",
        "transport",
        "published",
        "delivered",
        "p50 ms",
        "p99 ms",
        "max ms",
        "server µs/token",
        "of it kernel",
        "client µs/token",
        "lost+reord",
        "errors"
    );
    for r in reports {
        let server = r.server_cpu_us_per_token.map_or("unknown".to_owned(), |v| format!("{v:.1}"));
        let kernel = r.server_sys_us_per_token.map_or("unknown".to_owned(), |v| format!("{v:.1}"));
        println!(
            "{:<10} {:>10} {:>10} {:>8.3} {:>8.3} {:>8.3} {:>16} {:>12} {:>16.1} {:>10} {:>6}",
            format!("{:?}", r.transport).to_lowercase(),
            r.published,
            r.delivered,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.max,
            server,
            kernel,
            r.client_cpu_us_per_token,
            r.lost + r.reordered,
            r.errors
        );
    }
    if let [http, socket] = reports
        && let (Some(h), Some(s)) = (http.server_cpu_us_per_token, socket.server_cpu_us_per_token)
    {
        println!("socket / http server CPU per token: {:.2}", s / h);
    }
    for r in reports {
        for e in &r.error_samples {
            println!("error ({:?}): {e}", r.transport);
        }
    }
}
