//! Run monitoring: counts active runs and reports stalled ones (docs/protocol.md, "Agent events and run rules").
//!
//! A run with no event for `run_stall_s` gets a `run_stalled` event appended to its user's log —
//! so every open tab can say "this run seems stuck" — plus a warning log line and a metric. It
//! does not end the run; the run's next event clears the state. The event's id is derived from
//! the silence it reports, so when several nodes detect the same silence it is appended once.

use crate::engine::Engine;
use herald_protocol::{EventInput, EventKind};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Stalled runs named one per log line in a scan; the rest are summed up in one more line, so a
/// mass stall (a backend that died with 100,000 runs open) logs a handful of lines, not 100,000.
const LISTED_PER_SCAN: usize = 5;

/// Scans every `interval` until `shutdown`, appending `run_stalled` for silent runs.
pub async fn monitor(engine: Arc<dyn Engine>, stall_after: Duration, shutdown: CancellationToken) {
    let interval = (stall_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut every = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => scan_once(engine.as_ref(), stall_after).await,
        }
    }
}

/// One scan: updates the active-runs gauge and reports newly stalled runs.
pub async fn scan_once(engine: &dyn Engine, stall_after: Duration) {
    let scan = match engine.scan_runs(stall_after).await {
        Ok(scan) => scan,
        Err(e) => {
            debug!("run scan skipped: {e}");
            return;
        }
    };
    crate::metrics::active_runs(scan.active);
    let mut reported = 0usize;
    for run in scan.stalled {
        let silent_s = run.silent_for.as_secs();
        let event = EventInput {
            user_id: run.user.clone(),
            kind: EventKind::RunStalled,
            run_id: Some(run.run_id.clone()),
            thread_id: None,
            data: json!({ "silent_s": silent_s, "stall_after_s": stall_after.as_secs() })
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into(),
            id: Some(format!("stall-{}-{}", run.run_id, run.marker)),
        };
        match engine.append(vec![event]).await {
            Ok(receipts) if receipts.iter().any(|r| !r.duplicate) => {
                crate::metrics::run_stalled();
                reported += 1;
                if reported <= LISTED_PER_SCAN {
                    warn!(user_id = %run.user, run_id = %run.run_id, silent_s, "run stalled: no event for {silent_s} s");
                }
            }
            Ok(_) => {}
            // The run ended or moved on between the scan and the append: nothing to report.
            Err(e) => debug!(user_id = %run.user, run_id = %run.run_id, "run_stalled not appended: {e}"),
        }
    }
    if reported > LISTED_PER_SCAN {
        warn!(
            stalled = reported,
            "{reported} runs stalled in this scan ({LISTED_PER_SCAN} listed above); \
             herald_runs_stalled_total counts every one"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemoryEngine;
    use crate::log::Retention;
    use herald_protocol::UserId;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tracing::{Level, Subscriber};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    /// Counts WARN events.
    struct CountWarnings(Arc<AtomicUsize>);

    impl<S: Subscriber> Layer<S> for CountWarnings {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if *event.metadata().level() == Level::WARN {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_mass_stall_logs_a_bounded_number_of_lines_and_appends_every_event() {
        let engine = MemoryEngine::new(Retention { max_events: 100, ttl: Duration::from_secs(60) });
        let runs = 200;
        let starts = (0..runs)
            .map(|i| EventInput {
                user_id: UserId::parse(&format!("u{i}")).unwrap(),
                kind: EventKind::AgentStarted,
                run_id: Some(format!("r{i}")),
                thread_id: None,
                data: Default::default(),
                id: None,
            })
            .collect();
        engine.append(starts).await.unwrap();
        let warnings = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(CountWarnings(warnings.clone()));
        let _guard = tracing::subscriber::set_default(subscriber);
        scan_once(&engine, Duration::ZERO).await;
        assert_eq!(warnings.load(Ordering::Relaxed), LISTED_PER_SCAN + 1);
        let user = UserId::parse("u199").unwrap();
        let history = engine.history(&user, 0, None, 10).await.unwrap();
        assert_eq!(history.events.len(), 2, "agent_started and run_stalled");
    }
}
