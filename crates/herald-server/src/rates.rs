//! Recent rates for operators: events published and delivered per second, and publishes refused
//! by each run rule, over the last minutes (`GET /v1/info`, the `/admin` page).
//!
//! Prometheus counters cannot be read back, so the same call sites (the functions in
//! [`crate::metrics`]) also count here: one slot per second in a ring of [`WINDOW_S`] slots.
//! Process-wide like the metrics recorder: servers sharing a process (tests) share the counts.

use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds of history kept (and summed for rejections).
pub const WINDOW_S: u64 = 300;

/// One second of counts. Atomics, because delivery counts from every connection's write path;
/// a count racing with the slot's reuse for a new second may be lost, which a rate shown to an
/// operator tolerates.
#[derive(Debug, Default)]
struct Slot {
    second: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
}

/// Per-second slots, plus rejections (rare, so behind a lock) as (second, rule) pairs.
#[derive(Debug)]
struct Ring {
    slots: Vec<Slot>,
    rejected: Mutex<VecDeque<(u64, &'static str)>>,
}

impl Ring {
    fn new() -> Self {
        Self {
            slots: (0..WINDOW_S).map(|_| Slot::default()).collect(),
            rejected: Mutex::new(VecDeque::new()),
        }
    }

    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % WINDOW_S) as usize];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != second
            && slot.second.compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            slot.published.store(0, Ordering::Release);
            slot.delivered.store(0, Ordering::Release);
        }
        slot
    }
}

fn ring() -> &'static Ring {
    static RING: OnceLock<Ring> = OnceLock::new();
    RING.get_or_init(Ring::new)
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// `n` events were appended.
pub fn published(n: u64) {
    ring().slot(now_s()).published.fetch_add(n, Ordering::Relaxed);
}

/// `n` event frames were written to clients.
pub fn delivered(n: u64) {
    if n > 0 {
        ring().slot(now_s()).delivered.fetch_add(n, Ordering::Relaxed);
    }
}

/// A publish broke the run rule `rule`.
pub fn rejected(rule: &'static str) {
    let now = now_s();
    let mut rejected = ring().rejected.lock();
    while rejected.front().is_some_and(|(s, _)| now.saturating_sub(*s) >= WINDOW_S) {
        rejected.pop_front();
    }
    // Bounded: a flood of refusals keeps the newest counts, not unbounded memory.
    if rejected.len() >= MAX_REJECTIONS_KEPT {
        rejected.pop_front();
    }
    rejected.push_back((now, rule));
}

/// Most rejections remembered for the window.
const MAX_REJECTIONS_KEPT: usize = 100_000;

/// What the last seconds looked like.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Events appended per second, averaged over the last `over_s` complete seconds.
    pub published_per_s: f64,
    /// Event frames written per second, same window.
    pub delivered_per_s: f64,
    /// Publishes refused per run rule over the last [`WINDOW_S`] seconds.
    pub rejected: BTreeMap<String, u64>,
}

/// Rates over the last `over_s` complete seconds (1..[`WINDOW_S`]) and rejections over the window.
pub fn snapshot(over_s: u64) -> Snapshot {
    // Deliveries are gathered per thread before they are counted (see `metrics::Delivery`).
    crate::metrics::record_deliveries();
    let over_s = over_s.clamp(1, WINDOW_S - 1);
    let now = now_s();
    let ring = ring();
    let (mut published, mut delivered) = (0, 0);
    for age in 1..=over_s {
        let slot = &ring.slots[((now - age) % WINDOW_S) as usize];
        if slot.second.load(Ordering::Acquire) == now - age {
            published += slot.published.load(Ordering::Relaxed);
            delivered += slot.delivered.load(Ordering::Relaxed);
        }
    }
    let mut rejected = BTreeMap::new();
    for (second, rule) in ring.rejected.lock().iter() {
        if now.saturating_sub(*second) < WINDOW_S {
            *rejected.entry((*rule).to_owned()).or_default() += 1;
        }
    }
    Snapshot {
        published_per_s: published as f64 / over_s as f64,
        delivered_per_s: delivered as f64 / over_s as f64,
        rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_reused_only_for_its_own_second() {
        let ring = Ring::new();
        ring.slot(1000).published.fetch_add(3, Ordering::Relaxed);
        ring.slot(1000).published.fetch_add(1, Ordering::Relaxed);
        assert_eq!(ring.slot(1000).published.load(Ordering::Relaxed), 4);
        // Same index, WINDOW_S later: a new second starts from zero.
        assert_eq!(ring.slot(1000 + WINDOW_S).published.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn rejections_are_counted_by_rule() {
        rejected("test_rule_a");
        rejected("test_rule_a");
        assert!(snapshot(10).rejected["test_rule_a"] >= 2);
    }
}
