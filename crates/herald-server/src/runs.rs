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
                .unwrap_or_default(),
            id: Some(format!("stall-{}-{}", run.run_id, run.marker)),
        };
        match engine.append(vec![event]).await {
            Ok(receipts) if receipts.iter().any(|r| !r.duplicate) => {
                crate::metrics::run_stalled();
                warn!(user_id = %run.user, run_id = %run.run_id, silent_s, "run stalled: no event for {silent_s} s");
            }
            Ok(_) => {}
            // The run ended or moved on between the scan and the append: nothing to report.
            Err(e) => debug!(user_id = %run.user, run_id = %run.run_id, "run_stalled not appended: {e}"),
        }
    }
}
