//! Prometheus metrics, all prefixed `herald_`, recorded with the `metrics` crate.
//!
//! Call sites use the small functions here, so metric names and labels are spelled in one file
//! (docs/operations.md lists them). The recorder is process-wide by nature of the `metrics`
//! crate; [`install`] is idempotent so several servers in one test process share it.

use herald_protocol::{EventKind, Recovery};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// `herald_events_published_total` per kind, taken from the installed recorder once: an append
/// counts every event, and looking a labelled counter up in the registry per event (hashing its
/// key) cost more than the increment.
static PUBLISHED: OnceLock<[metrics::Counter; EventKind::ALL.len()]> = OnceLock::new();

/// How often recorded histogram samples are folded into their buckets without a scrape.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder once per process and returns the handle that renders it.
///
/// Also starts the recorder's upkeep: the exporter keeps every histogram sample (one per
/// delivered frame for `herald_delivery_latency_seconds`) until something drains them, and only
/// a scrape or an upkeep does. Without it a node nobody scrapes grew by about 15 bytes per
/// delivered frame for as long as it ran (docs/benchmarks.md, "Memory of a node that runs for
/// days").
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("herald_delivery_latency_seconds".into()),
                    &[
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                        1.0, 2.5,
                    ],
                )
                .expect("buckets are not empty")
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle());
            gauge!("herald_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            DELIVERY.get_or_init(delivery_handles);
            PUBLISHED.get_or_init(|| {
                EventKind::ALL.map(|kind| counter!("herald_events_published_total", "event" => kind.as_str()))
            });
            let upkeep = handle.clone();
            let (running, started) = std::sync::mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name(UPKEEP_THREAD.into())
                .spawn(move || {
                    let _ = running.send(());
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        record_deliveries();
                        upkeep.run_upkeep();
                    }
                })
                .expect("a thread can be started at startup");
            // Returns once the thread runs (named, in the process's thread list).
            let _ = started.recv();
            handle
        })
        .clone()
}

/// The name of the thread that drains histogram samples (see [`install`]).
pub const UPKEEP_THREAD: &str = "herald-metrics";

/// A WebSocket connection attempt ended with `result` (ok, unauthorized, forbidden, limited).
pub fn connection_attempt(result: &'static str) {
    counter!("herald_connection_attempts_total", "result" => result).increment(1);
}

/// Counts an open connection for as long as it lives.
#[derive(Debug)]
pub struct OpenConnection;

impl OpenConnection {
    /// Marks one more open connection.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        gauge!("herald_connections_open").increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        gauge!("herald_connections_open").decrement(1.0);
    }
}

/// A connection opened with `recovery`.
pub fn recovery(recovery: Recovery) {
    let label = match recovery {
        Recovery::None => "none",
        Recovery::Replayed => "replayed",
        Recovery::Reset => "reset",
    };
    counter!("herald_connection_recoveries_total", "recovery" => label).increment(1);
}

/// `n` event frames were written to sockets at once (a replayed backlog, an SSE batch): counted
/// now, without the latency samples [`Delivery`] gathers for live frames.
pub fn delivered(n: usize) {
    DELIVERY.get_or_init(delivery_handles).0.increment(n as u64);
    crate::rates::delivered(n as u64);
}

/// Events of these kinds were appended (one request's worth: each counter moves once per
/// request, not once per event).
pub fn published(kinds: impl IntoIterator<Item = EventKind>) {
    let mut per_kind = [0u64; EventKind::ALL.len()];
    for kind in kinds {
        per_kind[kind.index()] += 1;
    }
    let mut total = 0;
    for (kind, n) in EventKind::ALL.into_iter().zip(per_kind).filter(|(_, n)| *n > 0) {
        match PUBLISHED.get() {
            Some(counters) => counters[kind.index()].increment(n),
            None => counter!("herald_events_published_total", "event" => kind.as_str()).increment(n),
        }
        total += n;
    }
    if total > 0 {
        crate::rates::published(total);
    }
}

/// A publish broke the run rule `rule`.
pub fn run_rejected(rule: &'static str) {
    counter!("herald_run_rejections_total", "rule" => rule).increment(1);
    crate::rates::rejected(rule);
}

/// The engine failed a request.
pub fn engine_error() {
    counter!("herald_engine_errors_total").increment(1);
}

/// A connection was closed for falling too far behind.
pub fn slow_consumer_closed() {
    counter!("herald_slow_consumer_closes_total").increment(1);
}

/// A request or client message was refused by a rate or connection limit
/// (`limit`: connections_per_ip, client_messages, publish_rate).
pub fn rate_limited(limit: &'static str) {
    counter!("herald_rate_limited_total", "limit" => limit).increment(1);
}

/// A JWKS refresh failed (the cached keys stay in use).
pub fn jwks_refresh_failed() {
    counter!("herald_jwks_refresh_failures_total").increment(1);
}

/// Runs started and not ended, as last counted.
pub fn active_runs(n: usize) {
    gauge!("herald_runs_active").set(n as f64);
}

/// Active runs whose snapshot lost output: `truncated` outgrew their per-run budget (their
/// snapshot says `truncated`), `dropped` were left out past the per-user run limit.
pub fn snapshot_losses(truncated: u64, dropped: u64) {
    if truncated > 0 {
        counter!("herald_run_snapshots_lossy_total", "limit" => "run_bytes").increment(truncated);
    }
    if dropped > 0 {
        counter!("herald_run_snapshots_lossy_total", "limit" => "runs_per_user").increment(dropped);
    }
}

/// What this node's users' logs hold (retained frames and compacted runs; with the memory
/// engine also its per-user overhead) as the last sweep left them: what `max_retained_bytes`
/// caps.
pub fn logs_held_bytes(bytes: usize) {
    gauge!("herald_logs_held_bytes").set(bytes as f64);
}

/// Active runs whose snapshot lost its output to the memory engine's global cap
/// (`max_retained_bytes`): drawn from their start, marked `truncated`.
pub fn snapshots_shed(runs: u64) {
    if runs > 0 {
        counter!("herald_run_snapshots_lossy_total", "limit" => "memory_cap").increment(runs);
    }
}

/// A run was reported stalled.
pub fn run_stalled() {
    counter!("herald_runs_stalled_total").increment(1);
}

/// Records live deliveries: frames written to a connection, each with its append time for
/// `herald_delivery_latency_seconds`.
///
/// A connection writes about one frame per wake-up, on whichever worker thread runs it, and the
/// recorder's counter and histogram are shared by all threads: recording each write straight
/// into them made every worker fight for the same cache lines (4.4 % of the server's CPU at
/// 1,000 connections). Writes are gathered per thread instead ([`Unrecorded`]) and added to the
/// shared metrics every [`RECORD_EVERY_FRAMES`] frames or [`RECORD_EVERY`], by the upkeep thread,
/// and before every scrape and every rate snapshot, so a reader never sees them late.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery;

impl Delivery {
    /// A recorder of one connection's deliveries.
    pub fn new() -> Self {
        Delivery
    }

    /// Frames written at `written`, each with the time its event was appended.
    pub fn written(
        &self,
        appended: impl IntoIterator<Item = std::time::Instant>,
        written: std::time::Instant,
    ) {
        UNRECORDED.with(|mine| {
            let mut mine = mine.0.lock();
            let before = mine.latencies.len();
            mine.latencies
                .extend(appended.into_iter().map(|at| written.saturating_duration_since(at).as_secs_f64()));
            // One latency per frame.
            mine.frames += (mine.latencies.len() - before) as u64;
            let since = *mine.since.get_or_insert(written);
            if mine.latencies.len() >= RECORD_EVERY_FRAMES
                || written.saturating_duration_since(since) >= RECORD_EVERY
            {
                mine.record();
            }
        });
    }
}

/// Frames gathered on one thread before they are recorded (see [`Delivery`]).
const RECORD_EVERY_FRAMES: usize = 256;

/// The longest a thread that keeps writing holds frames unrecorded.
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// Deliveries written on one thread and not yet in the shared metrics.
#[derive(Debug, Default)]
struct Unrecorded {
    frames: u64,
    latencies: Vec<f64>,
    /// When the oldest of them was written.
    since: Option<std::time::Instant>,
    /// The thread ended: recorded once more, then forgotten.
    ended: bool,
}

impl Unrecorded {
    /// Adds the gathered deliveries to the shared metrics.
    fn record(&mut self) {
        if self.frames == 0 {
            return;
        }
        let (delivered, latency) = DELIVERY.get_or_init(delivery_handles);
        delivered.increment(self.frames);
        crate::rates::delivered(self.frames);
        for seconds in self.latencies.drain(..) {
            latency.record(seconds);
        }
        self.frames = 0;
        self.since = None;
    }
}

/// The delivery counter and latency histogram, taken from the recorder once.
static DELIVERY: OnceLock<(metrics::Counter, metrics::Histogram)> = OnceLock::new();

fn delivery_handles() -> (metrics::Counter, metrics::Histogram) {
    (counter!("herald_events_delivered_total"), histogram!("herald_delivery_latency_seconds"))
}

/// Every thread's [`Unrecorded`], for [`record_deliveries`]. A thread's entry leaves at the
/// first [`record_deliveries`] after the thread ended.
static THREADS: parking_lot::Mutex<Vec<Arc<parking_lot::Mutex<Unrecorded>>>> =
    parking_lot::Mutex::new(Vec::new());

/// This thread's deliveries; marked ended when the thread ends (recording then would touch the
/// recorder's own thread-locals, already gone).
struct ThreadDeliveries(Arc<parking_lot::Mutex<Unrecorded>>);

impl ThreadDeliveries {
    fn register() -> Self {
        let mine = Arc::new(parking_lot::Mutex::new(Unrecorded::default()));
        THREADS.lock().push(mine.clone());
        Self(mine)
    }
}

impl Drop for ThreadDeliveries {
    fn drop(&mut self) {
        self.0.lock().ended = true;
    }
}

thread_local! {
    static UNRECORDED: ThreadDeliveries = ThreadDeliveries::register();
}

/// Adds every thread's gathered deliveries to the shared metrics: before a scrape or a rate
/// snapshot reads them.
pub fn record_deliveries() {
    THREADS.lock().retain(|thread| {
        let mut thread = thread.lock();
        thread.record();
        !thread.ended
    });
}

/// Metric handles of one publisher socket (`/v1/publish`), held so that every frame records
/// without a registry lookup. The socket counts as open (`herald_publisher_sockets_open`) while
/// this value lives.
#[derive(Debug)]
pub struct PublisherSocket {
    in_flight: metrics::Gauge,
    answered_ok: metrics::Counter,
}

impl PublisherSocket {
    /// Handles for one socket, counted open until dropped.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        gauge!("herald_publisher_sockets_open").increment(1.0);
        Self {
            in_flight: gauge!("herald_publish_in_flight"),
            answered_ok: counter!("herald_publish_frames_total", "result" => "ok"),
        }
    }

    /// Counts a frame read and not yet answered (`herald_publish_in_flight`, all sockets) until
    /// the returned guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.increment(1.0);
        InFlight(self.in_flight.clone())
    }

    /// The counter of frames answered with receipts (`herald_publish_frames_total{result="ok"}`).
    pub fn ok(&self) -> metrics::Counter {
        self.answered_ok.clone()
    }
}

/// A publisher-socket frame was refused with the error `code`
/// (`herald_publish_frames_total{result=code}`).
pub fn publish_frame_refused(code: &str) {
    counter!("herald_publish_frames_total", "result" => code.to_owned()).increment(1);
}

impl Drop for PublisherSocket {
    fn drop(&mut self) {
        gauge!("herald_publisher_sockets_open").decrement(1.0);
    }
}

/// One publisher-socket frame in flight, counted until dropped.
#[derive(Debug)]
pub struct InFlight(metrics::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Counts user logs dropped by the memory engine's global cap (`max_retained_bytes`).
pub fn logs_evicted(n: usize) {
    counter!("herald_logs_evicted_total").increment(n as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names of this process's threads.
    fn threads() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .expect("Linux lists a process's threads")
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    }

    #[test]
    fn install_starts_one_upkeep_thread_however_often_it_is_called() {
        install();
        install();
        let upkeep = threads().into_iter().filter(|name| name == UPKEEP_THREAD).count();
        assert_eq!(upkeep, 1, "histogram samples are drained by exactly one thread");
    }

    #[test]
    fn every_kind_has_its_published_counter_from_the_start() {
        let handle = install();
        let text = handle.render();
        for kind in EventKind::ALL {
            let series = format!("herald_events_published_total{{event=\"{}\"}}", kind.as_str());
            assert!(text.contains(&series), "{series} missing from:\n{text}");
        }
    }

    #[test]
    fn deliveries_of_a_thread_that_ended_are_recorded_and_its_buffer_forgotten() {
        install();
        let mine = std::thread::spawn(|| {
            let now = std::time::Instant::now();
            Delivery::new().written([now, now], now);
            UNRECORDED.with(|mine| mine.0.clone())
        })
        .join()
        .unwrap();
        {
            let ended = mine.lock();
            assert!(ended.ended, "the thread's end marks its buffer");
            assert!(ended.frames <= 2);
        }
        record_deliveries();
        assert_eq!(mine.lock().frames, 0, "recorded");
        assert!(!THREADS.lock().iter().any(|t| Arc::ptr_eq(t, &mine)), "and forgotten");
    }

    #[test]
    fn a_scrape_sees_deliveries_gathered_on_a_thread_still_running() {
        let handle = install();
        let count = |text: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix("herald_delivery_latency_seconds_count "))
                .map_or(0.0, |v| v.trim().parse().unwrap())
        };
        let before = count(&handle.render());
        let now = std::time::Instant::now();
        Delivery::new().written([now; 3], now);
        record_deliveries();
        // Other tests of this process may deliver too: at least these three are in.
        assert!(count(&handle.render()) >= before + 3.0);
    }
}
