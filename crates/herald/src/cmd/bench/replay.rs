//! The replay run: N retained events of one user, then the time a resuming socket takes from
//! connect to `synced`; and the server's RSS delta per retained event.

use super::events::{PublisherState, random_hex};
use super::publish::post;
use super::socket::open_socket;
use super::stats::process_rss_bytes;
use serde::Serialize;
use std::time::{Duration, Instant};

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
    let token = herald_client::sign_token(&config.jwt_secret, &user, Duration::from_secs(3600));
    let http = reqwest::Client::new();
    let endpoint = format!("{}/v1/events", config.url.trim_end_matches('/'));
    let auth = format!("Bearer {}", config.api_key);
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
        let mut body = String::new();
        state.push_batch(&mut body, &tag, 0, n, config.payload_bytes, &mut Vec::new());
        let answer = post(&http, &endpoint, &auth, body).await?;
        let value: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
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
