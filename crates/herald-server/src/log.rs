//! The node-local view of one user's log: retained event frames, the head seq, and cursors.
//!
//! A connection is a cursor into this log, not a copy of it. Every event is encoded to its frame
//! once, on append ([`Frame`]: the WebSocket header and the text); every connection of the user
//! writes the same shared bytes. How far a connection is behind is a subtraction of two byte
//! offsets, so a slow reader costs no memory beyond the retained log, which is bounded by
//! `history_size` and `history_ttl_s`.
//!
//! Beside the retained events, the log keeps the compacted state of active runs
//! ([`herald_protocol::compact`]), which outlives retention: a connection with no usable cursor
//! starts from that snapshot, so a tab opened in the middle of a long answer draws the whole run,
//! not only its retained tail. Events are folded into it lazily — when they leave the log, or
//! when a snapshot is taken — never twice, and not at all when their run ended meanwhile: a run
//! that starts and ends within the window, as most do, costs its events no parsing.
//!
//! A reader that has caught up can attach a [`Tap`]: the log then hands each new event to the
//! tap's writer as it is appended, under the log's lock, instead of waking the reader's task to
//! read it — with many users each event goes to a connection or two, and the wake-up, the read
//! and the task's poll cost as much as the write itself. A tap whose writer cannot take an event
//! whole is detached and its reader woken; the reader continues from the tap's cursor as usual.
//!
//! This module owns no I/O and no run rules: engines decide what is appended, connections decide
//! when to read, and a tap's writer is theirs too.

use crate::frame::Frame;
use herald_protocol::compact::{Compactor, Limits, SnapshotFrame};
use herald_protocol::{EventKind, Recovery};
use parking_lot::Mutex;
// foldhash: `ended` is looked up for every event that leaves the retained window.
use foldhash::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// One retained event: its metadata and its encoded `{"type":"event",…}` frame.
#[derive(Debug)]
pub struct LogEntry {
    /// Position in the log.
    pub seq: u64,
    /// Idempotency key.
    pub id: String,
    /// The run, if any.
    pub run_id: Option<String>,
    /// The event kind.
    pub kind: EventKind,
    /// The frame, header and text, shared by every connection.
    pub frame: Frame,
    /// Total frame bytes appended to this log up to and including this entry.
    pub end_offset: u64,
    /// When the entry was appended, for the TTL.
    pub appended_at: Instant,
}

/// How much of a log is kept.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Most events kept per user.
    pub max_events: usize,
    /// How long an event is kept.
    pub ttl: Duration,
}

/// Why [`UserLog::append`] refused an event: it is not the one after the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotNext {
    /// The log already has this seq (a duplicate delivery): nothing to do.
    AlreadyHave,
    /// Events between the head and this seq are missing: fetch them first.
    Gap,
}

/// An event to append to a [`UserLog`].
#[derive(Debug)]
pub struct NewEntry {
    /// Its seq: the log's head + 1.
    pub seq: u64,
    /// Idempotency key.
    pub id: String,
    /// The run, if any.
    pub run_id: Option<String>,
    /// The event kind.
    pub kind: EventKind,
    /// The encoded frame.
    pub frame: Frame,
    /// How long ago it was appended to the shared log (zero when appended here), so the TTL
    /// counts from its real append time.
    pub age: Duration,
}

impl NewEntry {
    /// The retained entry, `end_offset` bytes into the log, appended `age` before `now`.
    fn into_entry(self, end_offset: u64, now: Instant) -> LogEntry {
        let NewEntry { seq, id, run_id, kind, frame, age } = self;
        LogEntry {
            seq,
            id,
            run_id,
            kind,
            frame,
            end_offset,
            appended_at: now.checked_sub(age).unwrap_or(now),
        }
    }
}

/// What a new connection starts with: how its cursor was honoured and the frames before `synced`.
#[derive(Debug)]
pub struct Opening {
    /// `none`, `replayed` or `reset`.
    pub recovery: Recovery,
    /// The log's head when the connection opened; the connection continues after it.
    pub head: u64,
    /// The events to send before `synced`: the replay, or the snapshot of the active runs.
    pub backlog: Vec<Arc<LogEntry>>,
    /// True when `backlog` is the snapshot (recovery `none` or `reset`): compacted frames marked
    /// `"snapshot":true`, each with the seq of the last event it covers. A transport must not
    /// offer them as resume points: only the head after them is one.
    pub snapshot: bool,
}

/// How much of the frames offered a [`TapWriter`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Frames written whole, from the first.
    pub whole: usize,
    /// True when the frame after those was written in part: the writer keeps its rest for its
    /// reader to send before anything else.
    pub in_part: bool,
}

/// What a [`Tap`] writes with: called under the log's lock, so it must not wait.
pub trait TapWriter: Send + Sync {
    /// Writes the frames of `entries` now, in order, as much as can go without waiting (a full
    /// socket, or one that failed, takes nothing).
    fn write_now(&self, entries: &[Arc<LogEntry>]) -> Taken;
}

/// A caught-up reader's way to take events as they are appended (see the module docs).
///
/// Attached by [`UserLog::attach_tap`] when the reader is at the head; from then on each append
/// goes to its writer, and the reader's task sleeps until [`Tap::released`] (or until anything
/// else it waits for happens: it then detaches with [`UserLog::detach_tap`] before writing
/// anything itself, so the two never write at once).
///
/// The writer is kept inline (`Arc<Tap<W>>` coerces to `Arc<Tap>`): an append to a user with
/// thousands of others finds each tap cold in the cache, and every pointer on the way to the
/// socket is one more miss.
pub struct Tap<W: ?Sized = dyn TapWriter> {
    /// The seq of the last event the writer took, whole or in part. Changed under the log's
    /// lock only.
    cursor: AtomicU64,
    /// Woken when the log detaches the tap: a write did not go whole, or the log closed.
    released: Notify,
    writer: W,
}

impl<W: TapWriter> Tap<W> {
    /// A tap that writes with `writer`.
    pub fn new(writer: W) -> Arc<Self> {
        Arc::new(Self { cursor: AtomicU64::new(0), released: Notify::new(), writer })
    }
}

impl<W: ?Sized> Tap<W> {
    /// The tap's writer.
    pub fn writer(&self) -> &W {
        &self.writer
    }
}

impl Tap {
    /// Completes once the log detached the tap on its own (or spuriously, once, after the
    /// reader detached it itself): detach and read on from the cursor.
    pub async fn released(&self) {
        self.released.notified().await
    }

    /// Writes the events of `parts` (consecutive, in order: the new entries, as the log's ring
    /// buffer holds them). Returns how many of their frames it wrote, whole or begun, and false
    /// when the tap must be detached (its reader is woken).
    fn offer(&self, parts: [&[Arc<LogEntry>]; 2]) -> (usize, bool) {
        let mut written = 0;
        for entries in parts.into_iter().filter(|p| !p.is_empty()) {
            let taken = self.writer.write_now(entries);
            let through = taken.whole + usize::from(taken.in_part);
            written += through;
            if let Some(last) = through.checked_sub(1).map(|i| &entries[i]) {
                self.cursor.store(last.seq, Ordering::Relaxed);
            }
            if taken.whole < entries.len() {
                self.released.notify_one();
                return (written, false);
            }
        }
        (written, true)
    }
}

impl<W: ?Sized> std::fmt::Debug for Tap<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("cursor", &self.cursor.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// A connection's read past the retained window: it cannot continue without a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed;

/// The retained events of one user on this node; readers wait for appends on [`UserLog::appended`].
#[derive(Debug)]
pub struct UserLog {
    epoch: String,
    retention: Retention,
    inner: Mutex<Inner>,
    /// Woken at every append and at close. One `Notify`, not a watch channel: a watch spreads its
    /// waiters over 8 locked lists and takes every lock at each send, once per appended event.
    appended: Notify,
    connections: AtomicUsize,
    closed: AtomicBool,
    /// The zero of the compactor's clock.
    created: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<Arc<LogEntry>>,
    head: u64,
    end_offset: u64,
    retained_bytes: usize,
    /// Folded with every event up to its `through`; retained entries after it are not yet.
    runs: Compactor,
    /// Per run, the seq of its latest terminal event still retained: the run's events before it
    /// need no folding (the run ended).
    ended: HashMap<String, u64>,
    /// Readers at the head that take each append as it happens.
    taps: Vec<Arc<Tap>>,
    /// When the oldest retained entry was appended: the TTL check of every append reads it
    /// here, not from that entry, cold in the cache in a log that is not full.
    oldest_at: Option<Instant>,
    /// The runs' output was shed under a memory cap ([`UserLog::shed_runs`]) and not seeded
    /// again since: an engine with a shared store seeds them whole before a reader draws them.
    runs_shed: bool,
}

impl Inner {
    /// Seq of the oldest retained entry (the head + 1 when none is).
    fn first_retained(&self) -> u64 {
        self.entries.front().map_or(self.head + 1, |e| e.seq)
    }

    /// Folds `entry` into the compacted runs (if it is after what they hold), at its own time;
    /// skips it when a later terminal event of its run is retained. Returns what compaction lost
    /// (runs truncated, runs dropped).
    fn fold(&mut self, entry: &LogEntry, at_ms: u64) -> (u64, u64) {
        let ended = entry.run_id.as_deref().and_then(|run| self.ended.get(run).map(|&end| (run, end)));
        if let Some((run, end)) = ended
            && end == entry.seq
        {
            // The run's terminal event is folded (or was, by a seeded state): nothing of it is
            // left to skip.
            self.ended.remove(run);
        }
        if entry.seq <= self.runs.through() {
            return (0, 0);
        }
        if ended.is_some_and(|(_, end)| end > entry.seq) {
            self.runs.set_through(entry.seq);
            return (0, 0);
        }
        let before = (self.runs.truncated_runs(), self.runs.dropped_runs());
        self.runs.apply(
            entry.seq,
            &entry.id,
            entry.run_id.as_deref(),
            entry.kind,
            entry.frame.as_str(),
            at_ms,
        );
        (self.runs.truncated_runs() - before.0, self.runs.dropped_runs() - before.1)
    }
}

impl UserLog {
    /// A log in `epoch` whose last appended seq is `head` (0 for a new log).
    pub fn new(epoch: String, head: u64, retention: Retention) -> Self {
        let mut runs = Compactor::new(Limits::default());
        runs.set_through(head);
        let inner = Inner { head, runs, ..Inner::default() };
        Self {
            epoch,
            retention,
            inner: Mutex::new(inner),
            appended: Notify::new(),
            connections: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            created: Instant::now(),
        }
    }

    /// Rebuilds the compacted runs from a shared store read at seq `through` (the frames of each
    /// active run, oldest first: compacted or as published). Events up to `through` that reach
    /// this log afterwards are already counted and are not folded again. Frames that are not
    /// event frames of a run are skipped and counted in the result.
    ///
    /// Seeding a log whose runs already folded events past `through` (seeded again after
    /// [`UserLog::shed_runs`], while events kept arriving) folds those again from the retained
    /// entries; if some of them are no longer retained, the current runs are kept.
    pub fn seed_runs<'a>(&self, frames: impl IntoIterator<Item = &'a str>, through: u64) -> usize {
        let now = self.clock(Instant::now());
        let mut inner = self.inner.lock();
        let mut runs = Compactor::new(Limits::default());
        let skipped = frames.into_iter().filter(|f| runs.seed(f, now).is_err()).count();
        runs.set_through(through);
        let folded = inner.runs.through();
        if folded > through && inner.first_retained() > through + 1 {
            return skipped;
        }
        let old = std::mem::replace(&mut inner.runs, runs);
        let refold: Vec<Arc<LogEntry>> =
            inner.entries.iter().filter(|e| e.seq > through && e.seq <= folded).cloned().collect();
        for entry in &refold {
            inner.fold(entry, self.clock(entry.appended_at));
        }
        inner.runs.set_through(through.max(folded));
        inner.runs_shed = false;
        drop(old);
        skipped
    }

    /// Compacted runs and their bytes, for memory accounting (events not folded yet are
    /// retained entries, counted as those).
    pub fn compacted(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.runs.runs(), inner.runs.bytes())
    }

    /// The log's head and the snapshot of its active runs (or of `run` only), for the history API.
    pub fn snapshot(&self, run: Option<&str>) -> (u64, Vec<SnapshotFrame>) {
        self.snapshot_of(run, &EventKind::ALL)
    }

    /// [`UserLog::snapshot`] with the frames of `kinds` only (what a run's context needs, without
    /// rendering its text).
    pub fn snapshot_of(&self, run: Option<&str>, kinds: &[EventKind]) -> (u64, Vec<SnapshotFrame>) {
        let mut inner = self.inner.lock();
        let lost = self.fold_retained(&mut inner);
        let out = (inner.head, inner.runs.snapshot_of(run, kinds));
        drop(inner);
        crate::metrics::snapshot_losses(lost.0, lost.1);
        out
    }

    /// Folds every retained entry not folded yet: the compacted runs are then current.
    fn fold_retained(&self, inner: &mut Inner) -> (u64, u64) {
        let through = inner.runs.through();
        let Some(first) = inner.entries.front().map(|e| e.seq) else { return (0, 0) };
        let start = through.saturating_add(1).saturating_sub(first) as usize;
        let pending: Vec<Arc<LogEntry>> =
            inner.entries.range(start.min(inner.entries.len())..).cloned().collect();
        let mut lost = (0, 0);
        for entry in &pending {
            let l = inner.fold(entry, self.clock(entry.appended_at));
            lost = (lost.0 + l.0, lost.1 + l.1);
        }
        lost
    }

    /// Milliseconds since the log was created: the compactor's clock.
    fn clock(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.created).as_millis() as u64
    }

    /// The log's epoch: it changes whenever history is lost, so cursors of another epoch reset.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Seq of the last appended event.
    pub fn head(&self) -> u64 {
        self.inner.lock().head
    }

    /// Retained events and their frame bytes, for memory accounting.
    pub fn retained(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.entries.len(), inner.retained_bytes)
    }

    /// Everything the log holds that grows with what is published: retained frame bytes plus
    /// the compacted active runs (up to 64 × 512 KiB per user on their own), which a memory cap
    /// must count too.
    pub fn held_bytes(&self) -> usize {
        let inner = self.inner.lock();
        inner.retained_bytes + inner.runs.bytes()
    }

    /// Completes at the first append (or [`UserLog::close`]) after this call, even when it is
    /// polled only later: take it before reading, await it when the read found nothing new.
    pub fn appended(&self) -> Notified<'_> {
        self.appended.notified()
    }

    /// Waits until the log's head is at least `seq`, or the log is closed.
    pub async fn wait_for_head(&self, seq: u64) {
        loop {
            let appended = self.appended();
            if self.head() >= seq || self.is_closed() {
                return;
            }
            appended.await;
        }
    }

    /// Connections currently reading this log on this node.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Registers a reading connection until the guard drops.
    pub fn attach(self: &Arc<Self>) -> Attached {
        self.connections.fetch_add(1, Ordering::Relaxed);
        Attached(self.clone())
    }

    /// Appends the next event (`seq` must be `head + 1`). Its frame was encoded once, by the
    /// engine, and is shared from here by every connection. Returns the entries trimmed to stay
    /// within retention.
    ///
    /// The seq is checked under the log's lock, so writers racing to deliver the same event (a
    /// live message and a catch-up read) append it exactly once, in order.
    pub fn append(&self, event: NewEntry) -> Result<Vec<Arc<LogEntry>>, NotNext> {
        self.append_all(vec![event])
    }

    /// Appends consecutive events, the first `head + 1`, under one lock: a tap gets them in one
    /// write. Nothing is appended when the first is not the next one (or the rest do not follow
    /// it).
    pub fn append_all(&self, events: Vec<NewEntry>) -> Result<Vec<Arc<LogEntry>>, NotNext> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let Some(first) = events.first() else { return Ok(Vec::new()) };
        if first.seq <= inner.head {
            return Err(NotNext::AlreadyHave);
        }
        if first.seq > inner.head + 1 || events.iter().zip(&events[1..]).any(|(a, b)| b.seq != a.seq + 1) {
            return Err(NotNext::Gap);
        }
        let appended = events.len();
        for event in events {
            self.push_locked(&mut inner, event, now);
        }
        if !inner.taps.is_empty() {
            let Inner { entries, taps, .. } = &mut *inner;
            // The new entries are the ring buffer's last: the end of its second slice, and of
            // its first when they wrap around.
            let (front, back) = entries.as_slices();
            let in_back = appended.min(back.len());
            let new = [&front[front.len() - (appended - in_back)..], &back[back.len() - in_back..]];
            // Taps that wrote every new frame, and how many the others wrote (each a prefix).
            let (mut whole, mut partial) = (0, Vec::new());
            taps.retain(|tap| {
                let (written, keep) = tap.offer(new);
                match written {
                    0 => {}
                    n if n == appended => whole += 1,
                    n => partial.push(n),
                }
                keep
            });
            // Recorded once per append, not per socket (with many users that is once per frame,
            // and each recording takes a thread-local lock). An entry from another node carries
            // its append time there, so the latency is not always zero.
            if whole + partial.len() > 0 {
                let appended_at = || new.into_iter().flatten().map(|e| e.appended_at);
                let by_whole = appended_at().flat_map(|at| std::iter::repeat_n(at, whole));
                let by_partial = partial.iter().flat_map(|&n| appended_at().take(n));
                crate::metrics::Delivery::new().written(by_whole.chain(by_partial), now);
            }
        }
        let trimmed = self.trim_locked(&mut inner, now);
        drop(inner);
        self.appended.notify_waiters();
        Ok(trimmed)
    }

    /// Adds `event` (already checked to be the next) at the head.
    fn push_locked(&self, inner: &mut Inner, event: NewEntry, now: Instant) {
        if event.kind.is_terminal()
            && let Some(run) = &event.run_id
        {
            // The run's state is freed now; its events still retained will not be folded.
            inner.runs.end(run);
            inner.ended.insert(run.clone(), event.seq);
        }
        let seq = event.seq;
        inner.end_offset += event.frame.len() as u64;
        inner.retained_bytes += event.frame.len();
        let entry = event.into_entry(inner.end_offset, now);
        inner.oldest_at.get_or_insert(entry.appended_at);
        inner.entries.push_back(Arc::new(entry));
        inner.head = seq;
    }

    /// Attaches `tap` for a reader whose cursor is `cursor`, if that is the head (see [`Tap`]);
    /// false when there are events to read first, or the log is closed.
    pub fn attach_tap(&self, tap: &Arc<Tap>, cursor: u64) -> bool {
        let mut inner = self.inner.lock();
        if inner.head != cursor || self.is_closed() {
            return false;
        }
        tap.cursor.store(cursor, Ordering::Relaxed);
        inner.taps.push(tap.clone());
        true
    }

    /// Detaches `tap` (if the log has not already) and returns its cursor: the seq of the last
    /// event it took. Once this returns, the log no longer writes through it.
    pub fn detach_tap(&self, tap: &Arc<Tap>) -> u64 {
        let mut inner = self.inner.lock();
        if let Some(at) = inner.taps.iter().position(|t| Arc::ptr_eq(t, tap)) {
            inner.taps.swap_remove(at);
        }
        tap.cursor.load(Ordering::Relaxed)
    }

    /// Marks the log as replaced: its history was lost (new epoch). Readers are woken and must
    /// close, so their clients reconnect and learn about the new epoch.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let taps = std::mem::take(&mut self.inner.lock().taps);
        for tap in taps {
            tap.released.notify_one();
        }
        self.appended.notify_waiters();
    }

    /// True after [`UserLog::close`].
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Drops entries older than the TTL, and compacted runs silent for as long (the engines
    /// forget such runs too); returns the entries.
    pub fn expire(&self, now: Instant) -> Vec<Arc<LogEntry>> {
        let cutoff = self.clock(now).saturating_sub(self.retention.ttl.as_millis() as u64);
        let mut inner = self.inner.lock();
        let trimmed = self.trim_locked(&mut inner, now);
        if self.clock(now) > self.retention.ttl.as_millis() as u64 && inner.runs.runs() > 0 {
            // A run with an event still retained (not folded yet) is not silent.
            let through = inner.runs.through();
            let Inner { entries, runs, .. } = &mut *inner;
            for entry in entries.iter().filter(|e| e.seq > through) {
                if let Some(run) = entry.run_id.as_deref() {
                    runs.touch(run, self.clock(entry.appended_at));
                }
            }
            inner.runs.expire(cutoff);
        }
        trimmed
    }

    /// Drops every retained entry (the engine's global memory cap): seq, epoch and the compacted
    /// runs stay, so readers behind the head and resuming cursors get `reset`, never a gap.
    pub fn evict_entries(&self) -> Vec<Arc<LogEntry>> {
        let mut inner = self.inner.lock();
        let lost = self.fold_retained(&mut inner);
        inner.retained_bytes = 0;
        inner.ended.clear();
        inner.oldest_at = None;
        let evicted = inner.entries.drain(..).collect();
        drop(inner);
        crate::metrics::snapshot_losses(lost.0, lost.1);
        evicted
    }

    /// Seq of the oldest retained event (the head + 1 when none is).
    pub fn first_retained(&self) -> u64 {
        let inner = self.inner.lock();
        inner.first_retained()
    }

    /// When the newest retained event was appended (`None` when none is retained): how
    /// recently the log was active, for a memory cap that drops the least recent first.
    pub fn last_appended(&self) -> Option<Instant> {
        self.inner.lock().entries.back().map(|e| e.appended_at)
    }

    /// Puts back events older than the first retained one, read again from a shared store after
    /// this node's copy dropped them ([`UserLog::evict_entries`]): of `older` (in seq order), the
    /// run that ends right before the first retained event, as much of it as retention allows.
    /// Readers resuming from those seqs then replay instead of resetting. They were folded into
    /// the compacted runs before they were dropped, so they are not folded again. Returns how
    /// many were put back.
    pub fn backfill(&self, older: Vec<NewEntry>) -> usize {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let first = inner.first_retained();
        let room = self.retention.max_events.saturating_sub(inner.entries.len());
        let mut end = inner.entries.front().map_or(inner.end_offset, |e| e.end_offset - e.frame.len() as u64);
        let mut next = first;
        let mut added = 0;
        for event in older.into_iter().rev() {
            if added == room || event.seq + 1 != next || event.age >= self.retention.ttl {
                break;
            }
            let (seq, len) = (event.seq, event.frame.len());
            let entry = event.into_entry(end, now);
            inner.oldest_at = Some(entry.appended_at);
            inner.entries.push_front(Arc::new(entry));
            inner.retained_bytes += len;
            end = end.saturating_sub(len as u64);
            next = seq;
            added += 1;
        }
        added
    }

    /// Sheds the output of the compacted runs (the engine's global memory cap, once dropping
    /// retained entries was not enough): a tab opened mid-run then draws each active run from
    /// its start, marked `truncated`, and the rest live — unless the engine seeds them whole
    /// again from a shared store first ([`UserLog::runs_shed`]). Returns the bytes freed and
    /// how many runs lost output.
    pub fn shed_runs(&self) -> (usize, u64) {
        let mut inner = self.inner.lock();
        let lost = self.fold_retained(&mut inner);
        let (freed, shed) = inner.runs.shed();
        inner.runs_shed |= shed > 0;
        drop(inner);
        crate::metrics::snapshot_losses(lost.0, lost.1);
        (freed, shed)
    }

    /// True when the runs' output was shed ([`UserLog::shed_runs`]) and not seeded since.
    pub fn runs_shed(&self) -> bool {
        self.inner.lock().runs_shed
    }

    fn trim_locked(&self, inner: &mut Inner, now: Instant) -> Vec<Arc<LogEntry>> {
        let mut trimmed = Vec::new();
        while let Some(oldest_at) = inner.oldest_at {
            let too_many = inner.entries.len() > self.retention.max_events;
            let too_old = now.saturating_duration_since(oldest_at) > self.retention.ttl;
            if !(too_many || too_old) {
                break;
            }
            let front = inner.entries.pop_front().expect("oldest_at is set while entries are retained");
            inner.oldest_at = inner.entries.front().map(|e| e.appended_at);
            inner.retained_bytes -= front.frame.len();
            let lost = inner.fold(&front, self.clock(front.appended_at));
            crate::metrics::snapshot_losses(lost.0, lost.1);
            trimmed.push(front);
        }
        trimmed
    }

    /// Decides how a connection with an optional `(after, epoch)` cursor starts (docs/protocol.md,
    /// "Resume, step by step"): the retained events after a cursor it can replay, else the
    /// snapshot of the active runs ("The active-run snapshot").
    ///
    /// Taken under one lock with the head, so nothing can fall between the backlog and live events:
    /// the connection continues from `head` whatever is appended meanwhile (a run that ends after
    /// this is in the snapshot, and its terminal event follows live).
    pub fn open(&self, cursor: Option<(u64, &str)>) -> Opening {
        let mut inner = self.inner.lock();
        let head = inner.head;
        let recovery = match cursor {
            None => Recovery::None,
            Some((after, epoch)) if epoch == self.epoch && after <= head => {
                if after + 1 >= inner.first_retained() { Recovery::Replayed } else { Recovery::Reset }
            }
            Some(_) => Recovery::Reset,
        };
        let backlog = match recovery {
            Recovery::Replayed => {
                let after = cursor.map_or(0, |c| c.0);
                inner.entries.iter().filter(|e| e.seq > after).cloned().collect()
            }
            Recovery::None | Recovery::Reset => {
                let lost = self.fold_retained(&mut inner);
                crate::metrics::snapshot_losses(lost.0, lost.1);
                let now = Instant::now();
                inner.runs.snapshot(None).into_iter().map(|f| Arc::new(snapshot_entry(f, now))).collect()
            }
        };
        Opening { recovery, head, backlog, snapshot: recovery != Recovery::Replayed }
    }

    /// Up to `max_bytes` (at least one event) of the events after `after`.
    pub fn read_after(&self, after: u64, max_bytes: usize) -> Result<Vec<Arc<LogEntry>>, Trimmed> {
        let mut out = Vec::new();
        self.read_after_into(after, max_bytes, &mut out)?;
        Ok(out)
    }

    /// [`UserLog::read_after`] into `out` (cleared first), so a reader reuses one buffer for
    /// every batch instead of allocating one per write.
    pub fn read_after_into(
        &self,
        after: u64,
        max_bytes: usize,
        out: &mut Vec<Arc<LogEntry>>,
    ) -> Result<(), Trimmed> {
        out.clear();
        let inner = self.inner.lock();
        let Some(start) = position_after(&inner, after)? else {
            return Ok(());
        };
        let mut bytes = 0;
        for entry in inner.entries.range(start..) {
            if !out.is_empty() && bytes + entry.frame.len() > max_bytes {
                break;
            }
            bytes += entry.frame.len();
            out.push(entry.clone());
        }
        Ok(())
    }

    /// Retained events after `after` (up to `limit`), for the history API; `Trimmed` when some
    /// events after `after` are no longer retained.
    pub fn history(&self, after: u64, limit: usize) -> Result<Vec<Arc<LogEntry>>, Trimmed> {
        let inner = self.inner.lock();
        let Some(start) = position_after(&inner, after)? else {
            return Ok(Vec::new());
        };
        Ok(inner.entries.range(start..).take(limit).cloned().collect())
    }

    /// The oldest retained events, at most `limit`.
    pub fn oldest(&self, limit: usize) -> Vec<Arc<LogEntry>> {
        self.inner.lock().entries.iter().take(limit).cloned().collect()
    }

    /// Frame bytes appended after the event `after` that a connection at `after` has not written.
    pub fn pending_bytes(&self, after: u64) -> Result<u64, Trimmed> {
        let inner = self.inner.lock();
        match position_after(&inner, after)? {
            None => Ok(0),
            Some(i) => {
                let written = inner.entries[i].end_offset - inner.entries[i].frame.len() as u64;
                Ok(inner.end_offset - written)
            }
        }
    }
}

/// Index of the first entry with seq > `after`; `None` when there is none (caught up).
fn position_after(inner: &Inner, after: u64) -> Result<Option<usize>, Trimmed> {
    if after >= inner.head {
        return Ok(None);
    }
    let Some(first) = inner.entries.front() else {
        return Err(Trimmed);
    };
    if after + 1 < first.seq {
        return Err(Trimmed);
    }
    Ok(Some((after + 1 - first.seq) as usize))
}

/// A snapshot frame as a log entry, so transports write it like any other.
fn snapshot_entry(f: SnapshotFrame, now: Instant) -> LogEntry {
    LogEntry {
        seq: f.seq,
        id: f.id,
        run_id: Some(f.run_id),
        kind: f.kind,
        frame: f.frame.into(),
        end_offset: 0,
        appended_at: now,
    }
}

/// Keeps a connection counted on its log until dropped.
#[derive(Debug)]
pub struct Attached(Arc<UserLog>);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(max: usize) -> UserLog {
        UserLog::new("e1".into(), 0, Retention { max_events: max, ttl: Duration::from_secs(60) })
    }

    fn push(log: &UserLog, kind: EventKind, run: &str) -> u64 {
        let seq = log.head() + 1;
        let frame = format!("frame-{seq:04}");
        let age = Duration::ZERO;
        log.append(NewEntry {
            seq,
            id: format!("id{seq}"),
            run_id: Some(run.into()),
            kind,
            frame: frame.into(),
            age,
        })
        .expect("next seq");
        seq
    }

    /// How much of one offered frame a scripted writer takes.
    #[derive(Clone, Copy)]
    enum Took {
        All,
        Part,
        Nothing,
    }

    /// Takes what its script says, in turn (one step per offered frame, up to the first frame
    /// not taken whole), and records the seqs it was offered.
    struct Scripted {
        takes: Mutex<VecDeque<Took>>,
        offered: Arc<Mutex<Vec<u64>>>,
    }

    impl TapWriter for Scripted {
        fn write_now(&self, entries: &[Arc<LogEntry>]) -> Taken {
            let mut taken = Taken { whole: 0, in_part: false };
            for entry in entries {
                self.offered.lock().push(entry.seq);
                match self.takes.lock().pop_front().unwrap_or(Took::All) {
                    Took::All => taken.whole += 1,
                    Took::Part => return Taken { in_part: true, ..taken },
                    Took::Nothing => return taken,
                }
            }
            taken
        }
    }

    fn scripted(takes: &[Took]) -> (Arc<Tap>, Arc<Mutex<Vec<u64>>>) {
        let offered = Arc::new(Mutex::new(Vec::new()));
        let writer =
            Scripted { takes: Mutex::new(takes.iter().copied().collect()), offered: offered.clone() };
        (Tap::new(writer), offered)
    }

    #[tokio::test]
    async fn a_tap_attaches_only_at_the_head_and_takes_appends_until_one_does_not_go_whole() {
        let l = log(10);
        push(&l, EventKind::Progress, "r");
        let (tap, offered) = scripted(&[Took::All, Took::Part, Took::All]);
        assert!(!l.attach_tap(&tap, 0), "a reader behind the head reads first");
        assert!(l.attach_tap(&tap, 1));
        push(&l, EventKind::Progress, "r"); // 2: whole
        push(&l, EventKind::Progress, "r"); // 3: in part, so the tap is detached
        push(&l, EventKind::Progress, "r"); // 4: read from the log
        assert_eq!(*offered.lock(), vec![2, 3], "nothing is offered once detached");
        tokio::time::timeout(Duration::from_secs(5), tap.released()).await.expect("the reader is woken");
        assert_eq!(
            l.detach_tap(&tap),
            3,
            "a frame taken in part is past the cursor: its rest is the reader's"
        );
        assert_eq!(l.read_after(3, 1 << 20).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4]);
    }

    /// Taps' deliveries are recorded once per append, each with its event's own append time:
    /// an event a node appended 1.5 s ago (as the Redis engine's fanout hands over) is a 1.5 s
    /// delivery for both taps that wrote it, one whole and one in part.
    #[test]
    fn a_taps_delivery_counts_from_when_its_event_was_appended() {
        let handle = crate::metrics::install();
        // Samples between 1 s and 2.5 s: no other test of this process delivers that late.
        let late = || {
            let text = handle.render();
            let bucket = |le: &str| -> f64 {
                let line = format!("herald_delivery_latency_seconds_bucket{{le=\"{le}\"}} ");
                text.lines().find_map(|l| l.strip_prefix(&line)).map_or(0.0, |v| v.trim().parse().unwrap())
            };
            bucket("2.5") - bucket("1")
        };
        let before = late();
        let l = log(10);
        let (whole, _) = scripted(&[Took::All]);
        let (in_part, _) = scripted(&[Took::Part]);
        assert!(l.attach_tap(&whole, 0) && l.attach_tap(&in_part, 0));
        l.append_all(vec![NewEntry { age: Duration::from_millis(1500), ..entry_at(1) }]).unwrap();
        crate::metrics::record_deliveries();
        assert_eq!(late() - before, 2.0, "one late delivery per tap");
    }

    fn entry_at(seq: u64) -> NewEntry {
        let frame = format!("frame-{seq:04}");
        NewEntry {
            seq,
            id: format!("id{seq}"),
            run_id: None,
            kind: EventKind::Custom,
            frame: frame.into(),
            age: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn a_batch_goes_to_a_tap_in_one_write_and_a_cut_inside_it_moves_the_cursor_to_the_cut_frame() {
        let l = log(10);
        let (tap, offered) = scripted(&[Took::All, Took::Part]);
        assert!(l.attach_tap(&tap, 0));
        assert_eq!(l.append_all(vec![entry_at(2), entry_at(3)]).unwrap_err(), NotNext::Gap);
        assert_eq!(
            l.append_all(vec![entry_at(1), entry_at(3)]).unwrap_err(),
            NotNext::Gap,
            "the rest must follow"
        );
        assert_eq!(l.head(), 0, "a refused batch appends nothing");
        l.append_all(vec![entry_at(1), entry_at(2), entry_at(3)]).unwrap();
        assert_eq!(*offered.lock(), vec![1, 2], "one offer of the batch, up to the frame cut");
        tokio::time::timeout(Duration::from_secs(5), tap.released()).await.expect("released");
        assert_eq!(l.detach_tap(&tap), 2);
        assert_eq!(l.head(), 3);
    }

    #[test]
    fn a_tap_gets_every_batch_in_order_also_where_the_retained_ring_wraps_around() {
        let l = log(3);
        let (tap, offered) = scripted(&[]);
        assert!(l.attach_tap(&tap, 0));
        // Batches of three through a ring of a few slots: some straddle its end.
        for first in (1..=60).step_by(3) {
            l.append_all(vec![entry_at(first), entry_at(first + 1), entry_at(first + 2)]).unwrap();
        }
        assert_eq!(*offered.lock(), (1..=60).collect::<Vec<_>>());
        assert_eq!(l.detach_tap(&tap), 60);
    }

    #[tokio::test]
    async fn a_full_socket_leaves_the_event_to_the_reader_and_a_closed_log_releases_its_taps() {
        let l = log(10);
        let (tap, _) = scripted(&[Took::Nothing]);
        assert!(l.attach_tap(&tap, 0));
        push(&l, EventKind::Progress, "r");
        tokio::time::timeout(Duration::from_secs(5), tap.released()).await.expect("released");
        assert_eq!(l.detach_tap(&tap), 0, "the event was not taken");

        let (tap, offered) = scripted(&[]);
        assert!(l.attach_tap(&tap, 1));
        assert_eq!(l.detach_tap(&tap), 1);
        push(&l, EventKind::Progress, "r");
        assert!(offered.lock().is_empty(), "a detached tap is not written to");
        assert!(l.attach_tap(&tap, 2));
        l.close();
        tokio::time::timeout(Duration::from_secs(5), tap.released()).await.expect("released at close");
        assert!(!l.attach_tap(&tap, 2), "a closed log takes no taps");
    }

    #[tokio::test]
    async fn an_append_between_the_read_and_the_wait_still_wakes_the_reader() {
        let l = log(10);
        let appended = l.appended();
        // The reader found nothing; the append lands before it starts waiting.
        push(&l, EventKind::Progress, "r");
        tokio::time::timeout(Duration::from_secs(5), appended).await.expect("the append wakes it");
        let closed = l.appended();
        l.close();
        tokio::time::timeout(Duration::from_secs(5), closed).await.expect("closing wakes it");
    }

    #[tokio::test]
    async fn wait_for_head_returns_once_the_head_is_reached() {
        let l = std::sync::Arc::new(log(10));
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.wait_for_head(3).await }
        });
        for _ in 0..3 {
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished(), "returned before seq 3 at {}", l.head());
            push(&l, EventKind::Progress, "r");
        }
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken at seq 3").unwrap();
    }

    #[test]
    fn cursors_replay_or_reset() {
        let l = log(3);
        for _ in 0..5 {
            push(&l, EventKind::Progress, "r");
        }
        // retained: 3, 4, 5
        assert_eq!(l.open(Some((2, "e1"))).recovery, Recovery::Replayed);
        assert_eq!(l.open(Some((2, "e1"))).backlog.len(), 3);
        assert_eq!(l.open(Some((5, "e1"))).backlog.len(), 0);
        assert_eq!(l.open(Some((1, "e1"))).recovery, Recovery::Reset);
        assert_eq!(l.open(Some((6, "e1"))).recovery, Recovery::Reset);
        assert_eq!(l.open(Some((4, "other"))).recovery, Recovery::Reset);
        assert_eq!(l.open(None).recovery, Recovery::None);
        assert_eq!(l.read_after(1, 1 << 20).unwrap_err(), Trimmed);
        assert_eq!(l.read_after(3, 1).unwrap().len(), 1);
        assert_eq!(l.read_after(3, 1 << 20).unwrap().len(), 2);
    }

    fn push_text(log: &UserLog, run: &str, delta: &str) -> u64 {
        let seq = log.head() + 1;
        let frame = serde_json::json!({"type": "event", "seq": seq, "id": format!("id{seq}"), "user_id": "u",
            "thread_id": null, "run_id": run, "event": "agent_text", "data": {"delta": delta}, "ts": "t"});
        let entry = NewEntry {
            seq,
            id: format!("id{seq}"),
            run_id: Some(run.into()),
            kind: EventKind::AgentText,
            frame: frame.to_string().into(),
            age: Duration::ZERO,
        };
        log.append(entry).expect("next seq");
        seq
    }

    fn text_of(entry: &LogEntry) -> String {
        let frame: serde_json::Value = serde_json::from_str(entry.frame.as_str()).unwrap();
        frame["data"]["delta"].as_str().unwrap_or_default().to_owned()
    }

    #[test]
    fn the_snapshot_outlives_retention() {
        let l = log(1000);
        push(&l, EventKind::AgentStarted, "long");
        for i in 0..1500 {
            push_text(&l, "long", &format!("{i} "));
        }
        assert_eq!(l.retained().0, 1000, "the run's start is trimmed");
        let expected: String = (0..1500).map(|i| format!("{i} ")).collect();
        for opening in [l.open(None), l.open(Some((3, "e1"))), l.open(Some((9, "old")))] {
            assert_ne!(opening.recovery, Recovery::Replayed);
            assert!(opening.snapshot);
            let seqs: Vec<u64> = opening.backlog.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, vec![1, 1501]);
            assert_eq!(text_of(&opening.backlog[1]), expected);
            assert_eq!(opening.head, 1501);
        }
        // A cursor within retention replays the retained events as they are.
        let replay = l.open(Some((1400, "e1")));
        assert!(!replay.snapshot);
        assert_eq!(replay.backlog.len(), 101);
        // The run ends: nothing of it is left to snapshot.
        push(&l, EventKind::AgentCompleted, "long");
        assert!(l.open(None).backlog.is_empty());
        assert_eq!(l.compacted(), (0, 0));
    }

    #[test]
    fn a_run_that_ends_within_the_window_is_never_folded() {
        let l = log(5);
        push(&l, EventKind::AgentStarted, "short");
        // More text than a run's budget: folding it would truncate the run (and count that).
        let delta = "x".repeat(300 * 1024);
        for _ in 0..3 {
            push_text(&l, "short", &delta);
        }
        assert_eq!(l.inner.lock().runs.through(), 0, "appending folds nothing");
        push(&l, EventKind::AgentCompleted, "short");
        for _ in 0..5 {
            push(&l, EventKind::Custom, "other");
        }
        let inner = l.inner.lock();
        assert_eq!(inner.entries.front().map(|e| e.seq), Some(6), "the run left the window");
        assert_eq!(inner.runs.truncated_runs(), 0, "its events were passed over, not folded");
        assert!(inner.ended.is_empty(), "its terminal event left with it");
        assert_eq!(inner.runs.runs(), 0);
    }

    #[test]
    fn a_terminal_event_a_seeded_state_covers_is_forgotten_when_it_leaves() {
        let l = log(2);
        push(&l, EventKind::AgentStarted, "r");
        push(&l, EventKind::AgentCompleted, "r");
        assert_eq!(l.seed_runs([], 2), 0);
        push(&l, EventKind::Custom, "x");
        push(&l, EventKind::Custom, "x");
        assert!(l.inner.lock().ended.is_empty(), "no bookkeeping outlives the window");
    }

    #[test]
    fn events_folded_for_a_snapshot_are_not_folded_again_when_trimmed() {
        let l = log(10);
        push(&l, EventKind::AgentStarted, "r");
        for i in 0..5 {
            push_text(&l, "r", &format!("{i} "));
        }
        let first = l.open(None);
        assert_eq!(text_of(&first.backlog[1]), "0 1 2 3 4 ");
        for i in 5..30 {
            push_text(&l, "r", &format!("{i} "));
        }
        let expected: String = (0..30).map(|i| format!("{i} ")).collect();
        assert_eq!(text_of(&l.open(None).backlog[1]), expected);
    }

    #[test]
    fn seeded_runs_are_not_folded_twice() {
        let l = UserLog::new("e1".into(), 10, Retention { max_events: 100, ttl: Duration::from_secs(60) });
        let started = r#"{"type":"event","seq":9,"id":"a","user_id":"u","thread_id":null,"run_id":"r","event":"agent_started","data":{},"ts":"t"}"#;
        let text = r#"{"type":"event","seq":10,"id":"b","user_id":"u","thread_id":null,"run_id":"r","event":"agent_text","data":{"delta":"x"},"ts":"t","first_seq":10,"snapshot":true}"#;
        assert_eq!(l.seed_runs([started, text, "junk"], 10), 1);
        push_text(&l, "r", "y");
        let (head, snap) = l.snapshot(Some("r"));
        assert_eq!(head, 11);
        assert_eq!(snap.len(), 2);
        assert!(snap[1].frame.contains(r#""delta":"xy""#), "{}", snap[1].frame);
    }

    #[test]
    fn runs_shed_then_seeded_again_are_whole_with_what_was_folded_after_the_seed() {
        let l = UserLog::new("e1".into(), 10, Retention { max_events: 100, ttl: Duration::from_secs(60) });
        let started = r#"{"type":"event","seq":9,"id":"a","user_id":"u","thread_id":null,"run_id":"r","event":"agent_started","data":{},"ts":"t"}"#;
        let text = r#"{"type":"event","seq":10,"id":"b","user_id":"u","thread_id":null,"run_id":"r","event":"agent_text","data":{"delta":"x"},"ts":"t"}"#;
        l.seed_runs([started, text], 10);
        push_text(&l, "r", "y");
        push_text(&l, "r", "z");
        assert_eq!(l.snapshot(Some("r")).1.len(), 2, "folded through 12");
        let (freed, shed) = l.shed_runs();
        assert!(freed > 0 && shed == 1 && l.runs_shed());
        assert_eq!(l.snapshot(Some("r")).1.len(), 1, "only the start is left");
        // The store's state as read at seq 10: the events after it are folded again from the log.
        l.seed_runs([started, text], 10);
        assert!(!l.runs_shed());
        let snap = l.snapshot(Some("r")).1;
        assert_eq!(snap.len(), 2);
        assert!(snap[1].frame.contains(r#""delta":"xyz""#), "{}", snap[1].frame);
        assert!(!snap[0].frame.contains("truncated"), "{}", snap[0].frame);
        // Without the events after the store's seq, the current runs are kept as they are.
        l.shed_runs();
        l.evict_entries();
        l.seed_runs([started, text], 10);
        assert!(l.runs_shed(), "11 and 12 are gone from the log: nothing to rebuild from");
    }

    #[test]
    fn snapshot_holds_only_active_runs() {
        let l = log(100);
        push(&l, EventKind::AgentStarted, "done");
        push(&l, EventKind::AgentStarted, "live");
        push(&l, EventKind::AgentCompleted, "done");
        push(&l, EventKind::AgentThinking, "live");
        push(&l, EventKind::Progress, "orphan");
        let seqs: Vec<u64> = l.open(None).backlog.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 4]);
    }

    #[test]
    fn pending_bytes_counts_what_a_cursor_has_not_written() {
        let l = log(100);
        for _ in 0..4 {
            push(&l, EventKind::Progress, "r"); // each frame is 10 bytes
        }
        assert_eq!(l.pending_bytes(4), Ok(0));
        assert_eq!(l.pending_bytes(1), Ok(30));
        assert_eq!(l.pending_bytes(0), Ok(40));
        assert_eq!(l.retained(), (4, 40));
    }

    #[test]
    fn evicted_events_put_back_replay_as_if_never_dropped() {
        let l = log(6);
        for _ in 0..4 {
            push(&l, EventKind::Progress, "r");
        }
        let evicted = l.evict_entries();
        push(&l, EventKind::Progress, "r");
        assert_eq!(l.first_retained(), 5);
        let again = |e: &Arc<LogEntry>| NewEntry {
            seq: e.seq,
            id: e.id.clone(),
            run_id: e.run_id.clone(),
            kind: e.kind,
            frame: e.frame.clone(),
            age: Duration::ZERO,
        };
        // Only the run of events ending right before the first retained one is taken.
        let gapped: Vec<NewEntry> = evicted.iter().filter(|e| e.seq != 3).map(again).collect();
        assert_eq!(l.backfill(gapped), 1, "only seq 4 joins seq 5");
        assert_eq!(l.first_retained(), 4);
        assert_eq!(l.backfill(evicted[..3].iter().map(again).collect()), 3);
        assert_eq!(l.first_retained(), 1);
        assert_eq!(l.retained(), (5, 50));
        // Offsets are as if the events had never left: a cursor's pending bytes are right.
        assert_eq!(l.pending_bytes(0), Ok(50));
        assert_eq!(l.pending_bytes(3), Ok(20));
        let replay = l.open(Some((2, "e1")));
        assert_eq!(replay.recovery, Recovery::Replayed);
        assert_eq!(replay.backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        // Past retention nothing more fits: the log keeps at most 6 events.
        push(&l, EventKind::Progress, "r");
        let full = l.evict_entries();
        assert_eq!(full.len(), 6);
        push(&l, EventKind::Progress, "r");
        assert_eq!(l.backfill(full.iter().map(again).collect()), 5, "room for 6, 1 retained");
        assert_eq!(l.first_retained(), 2);
    }

    #[test]
    fn only_the_next_seq_is_appended() {
        let l = log(10);
        push(&l, EventKind::Progress, "r");
        let entry = |seq| NewEntry {
            seq,
            id: "x".into(),
            run_id: None,
            kind: EventKind::Progress,
            frame: "f".into(),
            age: Duration::ZERO,
        };
        assert_eq!(l.append(entry(1)).unwrap_err(), NotNext::AlreadyHave);
        assert_eq!(l.append(entry(3)).unwrap_err(), NotNext::Gap);
        assert!(l.append(entry(2)).is_ok());
        assert_eq!(l.head(), 2);
    }

    #[test]
    fn ttl_expires_entries() {
        let l = UserLog::new("e".into(), 0, Retention { max_events: 10, ttl: Duration::from_secs(1) });
        push(&l, EventKind::Progress, "r");
        assert!(l.expire(Instant::now()).is_empty());
        let later = Instant::now() + Duration::from_secs(2);
        assert_eq!(l.expire(later).len(), 1);
        assert_eq!(l.open(Some((0, "e"))).recovery, Recovery::Reset);
        assert_eq!(l.head(), 1);
    }
}
