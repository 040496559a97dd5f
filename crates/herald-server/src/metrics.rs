//! Prometheus metrics, all prefixed `herald_`, recorded with the `metrics` crate.
//!
//! Call sites use the small functions here, so metric names and labels are spelled in one file
//! (docs/operations.md lists them). The recorder is process-wide by nature of the `metrics`
//! crate; [`install`] is idempotent so several servers in one test process share it.

use herald_protocol::{EventKind, Recovery};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
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

/// `n` event frames were written to sockets.
pub fn delivered(n: usize) {
    counter!("herald_events_delivered_total").increment(n as u64);
    crate::rates::delivered(n as u64);
}

/// An event of `kind` was appended.
pub fn published(kind: EventKind) {
    match PUBLISHED.get() {
        Some(counters) => counters[kind.index()].increment(1),
        None => counter!("herald_events_published_total", "event" => kind.as_str()).increment(1),
    }
    crate::rates::published(1);
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

/// A run was reported stalled.
pub fn run_stalled() {
    counter!("herald_runs_stalled_total").increment(1);
}

/// Records deliveries of one connection. It holds its metric handles, so the hot path (every
/// frame written) records without a registry lookup.
#[derive(Clone)]
pub struct Delivery {
    delivered: metrics::Counter,
    latency: metrics::Histogram,
}

impl Delivery {
    /// Handles for this connection.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            delivered: counter!("herald_events_delivered_total"),
            latency: histogram!("herald_delivery_latency_seconds"),
        }
    }

    /// Frames written at `written`, each with the time its event was appended.
    pub fn written(
        &self,
        appended: impl ExactSizeIterator<Item = std::time::Instant>,
        written: std::time::Instant,
    ) {
        self.delivered.increment(appended.len() as u64);
        crate::rates::delivered(appended.len() as u64);
        for at in appended {
            self.latency.record(written.saturating_duration_since(at).as_secs_f64());
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Delivery")
    }
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
}
