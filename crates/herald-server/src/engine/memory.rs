//! The in-memory engine: one node, logs in this process, lost on restart (a new epoch then tells
//! resuming clients to reset).
//!
//! Each user has a `UserBook`: the log, the run states and the idempotency keys, behind one
//! mutex. An append locks the books of every user in its batch (in user-id order, so concurrent
//! batches cannot deadlock), validates the whole batch against staged run states, and only then
//! writes — which is what makes a batch all-or-nothing.

use super::plan::{self, Written};
use super::{
    ActiveRun, AppendError, Engine, EngineError, FrameEncoder, History, RunScan, StalledRun, new_epoch,
};
use crate::log::{NewEntry, Retention, UserLog};
use async_trait::async_trait;
use herald_protocol::{EventInput, Receipt, RunState, UserId};
use parking_lot::{Mutex, MutexGuard};
// foldhash: these maps are hit for every published event; SipHash's flood resistance is not
// needed for keys that are already authenticated (user ids, publisher event ids), seeded per process.
use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Memory a user costs beyond its frames (book, log, maps, channel), counted by the global cap; a
/// measured average (docs/benchmarks.md, "Memory under many users").
pub const USER_OVERHEAD_BYTES: usize = 1400;

/// Single-node engine keeping every user's log in memory.
#[derive(Debug)]
pub struct MemoryEngine {
    retention: Retention,
    /// Cap on [`MemoryEngine::accounted_bytes`] enforced by each sweep; 0: none.
    max_retained_bytes: usize,
    users: Mutex<HashMap<UserId, Arc<Mutex<UserBook>>>>,
    tickets: Mutex<HashMap<String, (UserId, Instant)>>,
    /// Per user: tokens issued before this (unix seconds) are refused, until the instant.
    revocations: Mutex<HashMap<UserId, (u64, Instant)>>,
}

#[derive(Debug)]
struct UserBook {
    log: Arc<UserLog>,
    runs: HashMap<String, RunSlot>,
    /// Publisher ids of retained events → their seq (generated ids are never duplicates).
    ids: HashMap<String, u64>,
    /// When the user last appended: run states are forgotten a TTL after it, as on Redis.
    last_append: Instant,
}

#[derive(Debug)]
struct RunSlot {
    state: RunState,
    last_event: Instant,
}

impl MemoryEngine {
    /// An empty engine keeping at most `retention` per user.
    pub fn new(retention: Retention) -> Self {
        Self {
            retention,
            max_retained_bytes: 0,
            users: Mutex::new(HashMap::new()),
            tickets: Mutex::new(HashMap::new()),
            revocations: Mutex::new(HashMap::new()),
        }
    }

    /// Caps the memory of retained logs over all users (`max_retained_bytes`; 0: no cap): each
    /// sweep drops the logs of the least recently active users until the total fits.
    pub fn with_max_retained_bytes(mut self, max: usize) -> Self {
        self.max_retained_bytes = max;
        self
    }

    /// What the global cap counts: retained frame bytes, compacted active runs, and
    /// [`USER_OVERHEAD_BYTES`] per user.
    pub fn accounted_bytes(&self) -> usize {
        let books: Vec<_> = self.users.lock().values().cloned().collect();
        books.iter().map(|b| b.lock().log.held_bytes() + USER_OVERHEAD_BYTES).sum()
    }

    /// Enforces the global cap, least recently active users first: a user with nothing in use
    /// (no connection, no active run) is forgotten whole, like an idle one (a later resume meets a
    /// new epoch: `reset`); others keep seq, epoch and run states and lose their retained events
    /// (readers behind and resuming cursors get `reset`). If that is not enough, a second pass
    /// sheds the compacted output of active runs, least recently active users first (a tab
    /// opened mid-run then draws those runs from their start, marked `truncated`). `costs` is
    /// what each user's book held at the sweep, `(last append, bytes, user)`; called with the
    /// users' map locked, it re-checks each book it touches. Returns what the books hold after.
    fn enforce_cap(
        &self,
        users: &mut HashMap<UserId, Arc<Mutex<UserBook>>>,
        mut costs: Vec<(Instant, usize, UserId)>,
    ) -> usize {
        let mut total: usize = costs.iter().map(|(_, cost, _)| cost).sum();
        if self.max_retained_bytes == 0 || total <= self.max_retained_bytes {
            return total;
        }
        costs.sort_unstable_by_key(|(at, _, _)| *at);
        let mut dropped = 0;
        let mut kept = Vec::new();
        for (_, cost, user) in costs {
            if total <= self.max_retained_bytes {
                break;
            }
            let Some(book) = users.get(&user) else { continue };
            let Some(mut guard) = book.try_lock() else { continue };
            let unused = guard.runs.is_empty() && Arc::strong_count(&guard.log) == 1;
            if unused && Arc::strong_count(book) == 1 {
                drop(guard);
                users.remove(&user);
                total = total.saturating_sub(cost);
            } else {
                if guard.log.retained().0 == 0 {
                    kept.push(user);
                    continue;
                }
                // Evicting folds the entries not folded yet: the runs can grow by what it frees.
                let held = guard.log.held_bytes();
                for old in guard.log.evict_entries() {
                    guard.ids.remove(&old.id);
                }
                total = (total + guard.log.held_bytes()).saturating_sub(held);
                kept.push(user);
            }
            dropped += 1;
        }
        let mut shed = 0;
        for user in kept {
            if total <= self.max_retained_bytes {
                break;
            }
            let Some(guard) = users.get(&user).and_then(|book| book.try_lock()) else { continue };
            let (freed, runs) = guard.log.shed_runs();
            crate::metrics::snapshots_shed(runs);
            if freed > 0 {
                total = total.saturating_sub(freed);
                shed += 1;
            }
        }
        crate::metrics::logs_evicted(dropped);
        tracing::warn!(
            dropped,
            max_retained_bytes = self.max_retained_bytes,
            "retained logs over max_retained_bytes: dropped the {dropped} least recently active; \
             their clients get reset"
        );
        if shed > 0 {
            tracing::warn!(
                shed,
                max_retained_bytes = self.max_retained_bytes,
                "still over max_retained_bytes without retained events: shed the active runs of \
                 the {shed} least recently active users; a tab opened mid-run draws them truncated"
            );
        }
        total
    }

    /// Users with state on this engine (for tests and metrics of bounded memory).
    pub fn user_count(&self) -> usize {
        self.users.lock().len()
    }

    /// Retained events and frame bytes summed over all users: the engine's own memory accounting.
    pub fn retained(&self) -> (usize, usize) {
        let books: Vec<_> = self.users.lock().values().cloned().collect();
        books.iter().map(|b| b.lock().log.retained()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// Compacted active runs and their bytes summed over all users (bounded per user by
    /// [`herald_protocol::compact::Limits`]).
    pub fn compacted(&self) -> (usize, usize) {
        let books: Vec<_> = self.users.lock().values().cloned().collect();
        books.iter().map(|b| b.lock().log.compacted()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    fn book(&self, user: &UserId) -> Arc<Mutex<UserBook>> {
        self.book_locked(&mut self.users.lock(), user)
    }

    fn book_locked(
        &self,
        users: &mut HashMap<UserId, Arc<Mutex<UserBook>>>,
        user: &UserId,
    ) -> Arc<Mutex<UserBook>> {
        if let Some(book) = users.get(user) {
            return book.clone();
        }
        users
            .entry(user.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(UserBook {
                    log: Arc::new(UserLog::new(new_epoch(), 0, self.retention)),
                    runs: HashMap::new(),
                    ids: HashMap::new(),
                    last_append: Instant::now(),
                }))
            })
            .clone()
    }
}

#[async_trait]
impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn append(&self, events: Vec<EventInput>) -> Result<Vec<Receipt>, AppendError> {
        let parts = plan::split(&events);
        let arcs: Vec<Arc<Mutex<UserBook>>> = {
            let mut map = self.users.lock();
            parts.iter().map(|p| self.book_locked(&mut map, p.user)).collect()
        };
        // Parts come in user-id order, so concurrent batches lock in one order: no deadlock.
        let mut books: Vec<MutexGuard<'_, UserBook>> = arcs.iter().map(|b| b.lock()).collect();

        // Plan the whole batch before writing anything.
        let numbered = events.len() > 1;
        let mut planned = Vec::with_capacity(parts.len());
        let mut errors = Vec::new();
        for (part, book) in parts.iter().zip(&books) {
            let known: Vec<Option<u64>> = (0..part.events.len())
                .map(|k| part.keyed(k).then(|| book.ids.get(&part.ids[k]).copied()).flatten())
                .collect();
            let before: Vec<Option<RunState>> =
                part.runs.iter().map(|run| book.runs.get(*run).map(|r| r.state.clone())).collect();
            match part.plan(&known, &before, numbered) {
                Ok(p) => planned.push(p),
                Err(e) => errors.push(e),
            }
        }
        if let Some(error) = plan::first_error(errors) {
            return Err(error);
        }

        // Commit.
        let now = Instant::now();
        let mut encoder = FrameEncoder::new(SystemTime::now());
        let mut receipts: Vec<Option<Receipt>> = vec![None; events.len()];
        for ((part, planned), book) in parts.iter().zip(&planned).zip(books.iter_mut()) {
            let first_seq = book.log.head() + 1;
            let mut seq = first_seq - 1;
            let mut entries = Vec::with_capacity(part.events.len());
            for k in part.fresh(planned) {
                let (id, event) = (&part.ids[k], part.events[k].1);
                seq += 1;
                if part.keyed(k) {
                    book.ids.insert(id.clone(), seq);
                }
                entries.push(NewEntry {
                    seq,
                    id: id.clone(),
                    run_id: event.run_id.clone(),
                    kind: event.kind,
                    frame: encoder.frame(seq, id, event),
                    age: Duration::ZERO,
                });
            }
            // One append per user: its connections get the part's frames in one write each.
            let trimmed = book.log.append_all(entries).expect("the book's lock makes these the next seqs");
            // Only publisher-given ids are kept; hashing every trimmed event's id to remove
            // nothing showed in profiles. (An event of this part may be trimmed already: its id
            // goes too, as it would have one event at a time.)
            if !book.ids.is_empty() {
                for old in trimmed {
                    book.ids.remove(&old.id);
                }
            }
            for (run, state) in part.runs.iter().zip(&planned.after) {
                if let Some(state) = state {
                    let slot = RunSlot { state: state.clone(), last_event: now };
                    // A run's events mostly come in several batches: replace its slot in place
                    // rather than allocate its key again.
                    match book.runs.get_mut(*run) {
                        Some(existing) => *existing = slot,
                        None => {
                            book.runs.insert((*run).to_owned(), slot);
                        }
                    }
                }
            }
            book.last_append = now;
            let written = Written {
                epoch: book.log.epoch().to_owned(),
                connections: book.log.connections(),
                first_seq,
            };
            for ((index, _), receipt) in part.events.iter().zip(part.receipts(planned, &written)) {
                receipts[*index] = Some(receipt);
            }
        }
        Ok(receipts.into_iter().map(|r| r.expect("every event is in one part")).collect())
    }

    async fn open_log(&self, user: &UserId) -> Result<Arc<UserLog>, EngineError> {
        Ok(self.book(user).lock().log.clone())
    }

    async fn history(
        &self,
        user: &UserId,
        after: u64,
        epoch: Option<&str>,
        limit: usize,
    ) -> Result<History, EngineError> {
        let log = self.book(user).lock().log.clone();
        let same_epoch = epoch.is_none_or(|e| e == log.epoch());
        // A cursor ahead of the log is not this log's: the caller must reset, as on a socket.
        let read = if same_epoch && after <= log.head() {
            log.history(after, limit)
        } else {
            Err(crate::log::Trimmed)
        };
        let (reset, events) = match read {
            Ok(events) => (false, events),
            Err(_) => (true, log.oldest(limit)),
        };
        Ok(History { epoch: log.epoch().to_owned(), seq: log.head(), reset, events })
    }

    async fn scan_runs(&self, stall_after: Duration) -> Result<RunScan, EngineError> {
        let now = Instant::now();
        let wall = SystemTime::now();
        let books: Vec<(UserId, Arc<Mutex<UserBook>>)> =
            self.users.lock().iter().map(|(u, b)| (u.clone(), b.clone())).collect();
        let mut scan = RunScan::default();
        for (user, book) in books {
            for (run_id, slot) in book.lock().runs.iter().filter(|(_, r)| !r.state.is_ended()) {
                scan.active += 1;
                let silent_for = now.saturating_duration_since(slot.last_event);
                if silent_for >= stall_after && !slot.state.is_stalled() {
                    let last = wall.checked_sub(silent_for).unwrap_or(wall);
                    let marker = last.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
                    scan.stalled.push(StalledRun {
                        user: user.clone(),
                        run_id: run_id.clone(),
                        silent_for,
                        marker,
                    });
                }
            }
        }
        Ok(scan)
    }

    async fn put_ticket(&self, hash: &str, user: &UserId, ttl: Duration) -> Result<(), EngineError> {
        self.tickets.lock().insert(hash.to_owned(), (user.clone(), Instant::now() + ttl));
        Ok(())
    }

    async fn take_ticket(&self, hash: &str) -> Result<Option<UserId>, EngineError> {
        let taken = self.tickets.lock().remove(hash);
        Ok(taken.filter(|(_, expires)| Instant::now() < *expires).map(|(user, _)| user))
    }

    async fn is_ready(&self) -> bool {
        true
    }

    async fn active_runs(
        &self,
        silent_for: Duration,
        limit: usize,
    ) -> Result<(usize, Vec<ActiveRun>), EngineError> {
        let now = Instant::now();
        let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let books: Vec<(UserId, Arc<Mutex<UserBook>>)> =
            self.users.lock().iter().map(|(u, b)| (u.clone(), b.clone())).collect();
        let mut runs = Vec::new();
        for (user, book) in books {
            for (run_id, slot) in book.lock().runs.iter().filter(|(_, r)| !r.state.is_ended()) {
                let silent = now.saturating_duration_since(slot.last_event);
                if silent >= silent_for {
                    runs.push(ActiveRun {
                        user: user.clone(),
                        run_id: run_id.clone(),
                        last_event_ms: wall_ms.saturating_sub(silent.as_millis() as u64),
                    });
                }
            }
        }
        if silent_for.is_zero() {
            runs.sort_by_key(|r| std::cmp::Reverse(r.last_event_ms));
        } else {
            runs.sort_by_key(|r| r.last_event_ms);
        }
        let total = runs.len();
        runs.truncate(limit);
        Ok((total, runs))
    }

    async fn revoke(&self, user: &UserId, before: u64, keep: Duration) -> Result<(), EngineError> {
        let until = Instant::now() + keep;
        let mut revocations = self.revocations.lock();
        let entry = revocations.entry(user.clone()).or_insert((before, until));
        *entry = (entry.0.max(before), entry.1.max(until));
        Ok(())
    }

    async fn revoked_before(&self, user: &UserId) -> Result<Option<u64>, EngineError> {
        let now = Instant::now();
        Ok(self.revocations.lock().get(user).filter(|(_, until)| now < *until).map(|(before, _)| *before))
    }

    fn sweep(&self) {
        let now = Instant::now();
        self.tickets.lock().retain(|_, (_, expires)| now < *expires);
        self.revocations.lock().retain(|_, (_, until)| now < *until);
        // Expire on a snapshot of the books, so appends to every other user go on meanwhile (the
        // map's lock is what every append takes first); then one short lock removes the idle.
        let books: Vec<(UserId, Arc<Mutex<UserBook>>)> =
            self.users.lock().iter().map(|(u, b)| (u.clone(), b.clone())).collect();
        let mut idle = Vec::new();
        let mut costs = Vec::with_capacity(books.len());
        for (user, book) in &books {
            let Some(mut guard) = book.try_lock() else {
                continue; // an append holds it: in use
            };
            for old in guard.log.expire(now) {
                guard.ids.remove(&old.id);
            }
            // Run states live as long as the user's log is active, like the Redis keys: a TTL
            // after the user's last event, whatever each run's own last event. An ended run's
            // state (kept to refuse a late event after its end) lives a TTL after its end, so a
            // user who publishes all day does not keep every run it ever finished.
            let ttl = self.retention.ttl;
            if now.saturating_duration_since(guard.last_append) > ttl {
                guard.runs.clear();
            } else {
                guard.runs.retain(|_, slot| {
                    !slot.state.is_ended() || now.saturating_duration_since(slot.last_event) <= ttl
                });
            }
            if is_idle(&guard) {
                idle.push(user.clone());
            } else {
                let cost = guard.log.held_bytes() + USER_OVERHEAD_BYTES;
                costs.push((guard.last_append, cost, user.clone()));
            }
        }
        drop(books);
        let mut users = self.users.lock();
        for user in idle {
            // Forget the user only when nothing refers to the book or its log: an appender that
            // fetched the book (under this lock), or a connection holding the log, keeps it alive.
            let Some(book) = users.get(&user) else { continue };
            if Arc::strong_count(book) == 1 && book.try_lock().is_some_and(|guard| is_idle(&guard)) {
                users.remove(&user);
            }
        }
        crate::metrics::logs_held_bytes(self.enforce_cap(&mut users, costs));
    }
}

/// A book with no retained event, no run state, and no connection holding its log.
fn is_idle(book: &UserBook) -> bool {
    book.log.retained().0 == 0 && book.runs.is_empty() && Arc::strong_count(&book.log) == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::EventKind;

    fn event(user: &str, kind: EventKind) -> EventInput {
        EventInput {
            user_id: UserId::parse(user).unwrap(),
            kind,
            run_id: Some("r".into()),
            thread_id: None,
            data: Default::default(),
            id: None,
        }
    }

    #[tokio::test]
    async fn sweep_forgets_idle_users_but_not_those_with_an_open_log() {
        // A zero TTL: events and run states expire at once, so every user becomes idle.
        let engine = MemoryEngine::new(Retention { max_events: 10, ttl: Duration::ZERO });
        for i in 0..100 {
            engine.append(vec![event(&format!("u{i}"), EventKind::AgentStarted)]).await.unwrap();
        }
        let held = engine.open_log(&UserId::parse("u7").unwrap()).await.unwrap();
        assert_eq!(engine.user_count(), 100);
        engine.sweep();
        assert_eq!(engine.user_count(), 1, "only the user whose log is open stays");
        let epoch = held.epoch().to_owned();
        drop(held);
        engine.sweep();
        assert_eq!(engine.user_count(), 0);
        // A forgotten user's next log is a new epoch, so old cursors reset rather than gap.
        let receipt = engine.append(vec![event("u7", EventKind::AgentStarted)]).await.unwrap();
        assert_ne!(receipt[0].epoch, epoch);
        assert_eq!(receipt[0].seq, 1);
    }

    fn custom(user: &str) -> EventInput {
        EventInput { kind: EventKind::Custom, run_id: None, ..event(user, EventKind::Custom) }
    }

    #[tokio::test]
    async fn a_finished_run_is_forgotten_a_ttl_after_its_end_while_its_user_publishes_on() {
        let ttl = Duration::from_secs(10);
        let engine = MemoryEngine::new(Retention { max_events: 100, ttl });
        let run = |run: &str, kind| EventInput { run_id: Some(run.into()), ..event("u", kind) };
        engine
            .append(vec![run("old", EventKind::AgentStarted), run("old", EventKind::AgentCompleted)])
            .await
            .unwrap();
        engine
            .append(vec![run("ended", EventKind::AgentStarted), run("ended", EventKind::AgentCompleted)])
            .await
            .unwrap();
        engine.append(vec![run("active", EventKind::AgentStarted)]).await.unwrap();
        // `old` ended and `active` last spoke longer than a TTL ago; their user kept publishing.
        let user = UserId::parse("u").unwrap();
        let long_ago = Instant::now().checked_sub(ttl + Duration::from_secs(1)).expect("uptime over 11 s");
        for quiet in ["old", "active"] {
            engine.book(&user).lock().runs.get_mut(quiet).expect("kept until the sweep").last_event =
                long_ago;
        }
        engine.sweep();

        let runs = engine.book(&user).lock().runs.keys().cloned().collect::<std::collections::BTreeSet<_>>();
        // An active run lives while its user is active, however quiet the run itself.
        assert_eq!(runs, ["active".to_owned(), "ended".to_owned()].into());
        // A run ended within the TTL still refuses a late event; the forgotten one starts afresh.
        let late = engine.append(vec![run("ended", EventKind::AgentText)]).await;
        assert!(matches!(late, Err(AppendError::RunRule { .. })), "{late:?}");
        engine.append(vec![run("old", EventKind::AgentStarted)]).await.unwrap();
    }

    #[tokio::test]
    async fn the_global_cap_drops_the_least_recently_active_logs_first() {
        let retention = Retention { max_events: 100, ttl: Duration::from_secs(600) };
        let probe = MemoryEngine::new(retention);
        probe.append(vec![custom("p")]).await.unwrap();
        let per_user = probe.accounted_bytes();
        // Room for 5 users with one event each (give or take the few bytes by which their user
        // ids and event names differ from the probe's).
        let cap = 5 * per_user + 100;
        let engine = MemoryEngine::new(retention).with_max_retained_bytes(cap);
        // u0 has an open log (a connection) and an event in an active run; then u1..u19 publish.
        engine.append(vec![event("u0", EventKind::AgentStarted)]).await.unwrap();
        let u0 = UserId::parse("u0").unwrap();
        let held = engine.open_log(&u0).await.unwrap();
        for i in 1..20 {
            engine.append(vec![custom(&format!("u{i}"))]).await.unwrap();
        }
        engine.sweep();
        assert!(engine.accounted_bytes() <= cap, "{} > {cap}", engine.accounted_bytes());
        // The most recent users keep their events.
        for i in 16..20 {
            let user = UserId::parse(&format!("u{i}")).unwrap();
            assert_eq!(engine.history(&user, 0, None, 10).await.unwrap().events.len(), 1, "u{i}");
        }
        // An idle old user is forgotten whole: a cursor of its old epoch resets.
        let u1 = UserId::parse("u1").unwrap();
        let history = engine.history(&u1, 0, None, 10).await.unwrap();
        assert_eq!((history.seq, history.events.len()), (0, 0));
        // The connected user with an active run keeps its epoch, seq and run, loses its events:
        // its cursor from before the event resets (never a silent gap), and the run continues.
        assert_eq!(held.retained().0, 0);
        assert_eq!(held.open(Some((0, held.epoch()))).recovery, herald_protocol::Recovery::Reset);
        let next = engine.append(vec![event("u0", EventKind::AgentCompleted)]).await.unwrap();
        assert_eq!((next[0].seq, next[0].epoch.as_str()), (2, held.epoch()));
    }

    #[tokio::test]
    async fn the_global_cap_counts_active_runs_and_sheds_them_when_events_are_not_enough() {
        // A short log: a long answer lives mostly in its compacted run, outside the retained events.
        let retention = Retention { max_events: 10, ttl: Duration::from_secs(600) };
        let text = |user: &str, i: usize| {
            let mut data = serde_json::Map::new();
            data.insert("delta".into(), serde_json::Value::String(format!("{i:0>100}")));
            EventInput { data: data.into(), ..event(user, EventKind::AgentText) }
        };
        let engine = MemoryEngine::new(retention).with_max_retained_bytes(60_000);
        let mut held = Vec::new();
        for user in ["a", "b", "c"] {
            engine.append(vec![event(user, EventKind::AgentStarted)]).await.unwrap();
            held.push(engine.open_log(&UserId::parse(user).unwrap()).await.unwrap());
            for i in 0..300 {
                engine.append(vec![text(user, i)]).await.unwrap();
            }
        }
        // Each run holds ~30 KB of text folded out of its 10-event log: ~90 KB in all.
        let before = engine.accounted_bytes();
        assert!(before > 80_000, "the runs are counted: {before}");
        engine.sweep();
        let after = engine.accounted_bytes();
        assert!(after <= 60_000, "{after} > the cap");
        // The least recently active (a) lost its run's output; its start says truncated. The most
        // recent (c) still draws its whole answer.
        let a = held[0].snapshot(None).1;
        assert_eq!(a.len(), 1);
        assert!(a[0].frame.contains("\"truncated\":true"), "{}", a[0].frame);
        let c = held[2].snapshot(None).1;
        assert!(!c[0].frame.contains("truncated"), "{}", c[0].frame);
        assert_eq!(c.len(), 2, "start and one merged text");
        assert!(c[1].frame.len() > 30_000);
        // The runs go on: later output is drawn after the start.
        engine.append(vec![text("a", 300)]).await.unwrap();
        assert_eq!(held[0].snapshot(None).1.len(), 2);
    }
}
