//! The publishers of the load run: each posts runs of events for its share of the users, on a
//! fixed schedule (open loop) or as fast as the server answers, and stops at its first failure
//! (the run state of its users is then unknown).

use super::events::PublisherState;
use super::load::{Counters, LoadConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Waits for `due` and returns the send time to stamp on a request (open loop). A publisher
/// already behind when it gets here — its previous request came back after `due`, the server was
/// slow — stamps `due`, so the wait is charged to the server. One that waited for its timer
/// stamps the time it woke: how late a timer fires (up to ~2 ms: tokio's timer wheel and
/// `epoll_wait` both count whole milliseconds) is the bench's own delay, not the server's.
pub(super) async fn send_time(due: Instant) -> Instant {
    if Instant::now() >= due {
        return due;
    }
    tokio::time::sleep_until(due.into()).await;
    Instant::now()
}

/// What every publisher of one load run shares.
pub(super) struct Publishing {
    /// The run's settings.
    pub(super) config: LoadConfig,
    /// Number of publishers.
    pub(super) publishers: usize,
    /// The instant payload timestamps count from.
    pub(super) origin: Instant,
    /// When publishing started and when it ends.
    pub(super) start: Instant,
    /// Live counters.
    pub(super) counters: Arc<Counters>,
    /// Events accepted, per user.
    pub(super) accepted: Vec<AtomicU64>,
    /// The first few failures.
    pub(super) error_samples: Mutex<Vec<String>>,
    /// Set to stop publishers that publish as fast as they can.
    pub(super) stop: AtomicBool,
}

/// When each request of one publisher is due.
struct Schedule {
    start: Instant,
    end: Instant,
    /// Open loop: request k is due at start + k × interval; `None` publishes as fast as answered.
    interval: Option<Duration>,
    k: u32,
}

impl Schedule {
    /// The send time to stamp on the next request (after waiting for it), or `None` when
    /// publishing is over.
    async fn next_due(&mut self, stop: &AtomicBool) -> Option<Instant> {
        match self.interval {
            Some(iv) => {
                let due = self.start + iv * self.k;
                self.k += 1;
                if due >= self.end {
                    return None;
                }
                Some(send_time(due).await)
            }
            None => {
                let now = Instant::now();
                (now < self.end && !stop.load(Ordering::Relaxed)).then_some(now)
            }
        }
    }
}

/// A publisher's HTTP client: one connection of its own, Nagle off. Built before the schedule
/// starts: building one loads the TLS roots (tens of ms), which would make the first requests
/// late and charge that to the server.
pub(super) fn publisher_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// Publisher number `index`: posts its users' events with `http` until the schedule ends or a
/// request fails.
pub(super) async fn run_publisher(
    shared: Arc<Publishing>,
    index: usize,
    users: Vec<(usize, String)>,
    tag: String,
    http: reqwest::Client,
) {
    let cfg = &shared.config;
    let mut state = PublisherState { position: vec![(0, 0); users.len()], users, next: 0 };
    let endpoint = format!("{}/v1/events", cfg.url.trim_end_matches('/'));
    let auth = format!("Bearer {}", cfg.api_key);
    let mut schedule = Schedule {
        start: shared.start,
        end: shared.start + cfg.duration,
        interval: cfg.rate.map(|r| Duration::from_secs_f64(cfg.batch as f64 * shared.publishers as f64 / r)),
        k: 0,
    };
    let tag = format!("{tag}-p{index}");
    let mut batch_users = Vec::with_capacity(cfg.batch);
    while let Some(due) = schedule.next_due(&shared.stop).await {
        let t = u64::try_from(due.saturating_duration_since(shared.origin).as_micros()).unwrap_or(0);
        let body = batch_body(&mut state, &mut batch_users, &tag, t, cfg);
        match post(&http, &endpoint, &auth, body).await {
            Ok(_) => {
                for &u in &batch_users {
                    shared.accepted[u].fetch_add(1, Ordering::Relaxed);
                }
                shared.counters.published.fetch_add(batch_users.len() as u64, Ordering::Relaxed);
            }
            Err(message) => {
                // The run state of these users is now unknown to us: stop, and report.
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                let mut samples = shared.error_samples.lock().expect("samples");
                if samples.len() < 5 {
                    samples.push(message);
                }
                return;
            }
        }
    }
}

/// The body of the next request: one event, or `{"events":[…]}` of `batch`; `batch_users` gets
/// the user index of each event.
fn batch_body(
    state: &mut PublisherState,
    batch_users: &mut Vec<usize>,
    tag: &str,
    t: u64,
    cfg: &LoadConfig,
) -> String {
    let mut body = String::with_capacity(cfg.batch * (cfg.payload_bytes + 128));
    batch_users.clear();
    if cfg.batch > 1 {
        state.push_batch(&mut body, tag, t, cfg.batch, cfg.payload_bytes, batch_users);
    } else {
        batch_users.push(state.next_event(&mut body, tag, t, cfg.payload_bytes));
    }
    body
}

/// POSTs one body to `endpoint` (`…/v1/events`) with `auth` (`Bearer <key>`); returns the
/// answer's body, or an error that says what the server answered.
pub(super) async fn post(
    http: &reqwest::Client,
    endpoint: &str,
    auth: &str,
    body: String,
) -> Result<bytes::Bytes, String> {
    let sent = http
        .post(endpoint)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST /v1/events: {e}"))?;
    let status = sent.status();
    let text = sent.bytes().await.unwrap_or_default();
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("POST /v1/events: {status}: {}", String::from_utf8_lossy(&text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_publisher_behind_schedule_is_charged_from_the_due_time() {
        // Even a little behind: the server's answer came after the due time, so all of the
        // wait since then is the server's.
        let due = Instant::now() - Duration::from_micros(500);
        assert_eq!(send_time(due).await, due);
    }

    #[tokio::test]
    async fn a_publisher_on_time_stamps_when_its_timer_woke_it() {
        let due = Instant::now() + Duration::from_millis(3);
        let sent = send_time(due).await;
        assert!(sent >= due, "not before its time");
        assert!(sent <= Instant::now(), "the time it woke, not the due time");
    }
}
