//! Fan-out: this node's live copy of the logs of the users it serves, fed by their channels.
//!
//! A node subscribes to a user's channel *before* it reads the user's history and drops what it
//! already has by seq, so nothing falls between the history and the live messages; a seq gap (a
//! message missed while Redis was unreachable) is filled from the stream, and a message of another
//! epoch (Redis lost the log) closes the local log so its clients reconnect and get `reset`.
//! One message carries all of a user's events of one batch; their frames are slices of it, shared
//! by every local connection without being decoded or encoded again.

use super::wire::{self, LogRead, Published, WireEvent};
use super::{RedisEngine, engine_error, now_ms};
use crate::engine::EngineError;
use crate::log::{NewEntry, NotNext, Retention, UserLog};
use bytes::Bytes;
use herald_protocol::UserId;
use parking_lot::Mutex;
use redis::{PushKind, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{debug, info, warn};

/// This node's view of one user it serves.
#[derive(Debug, Default)]
pub(super) struct Local {
    ready: tokio::sync::OnceCell<()>,
    state: Mutex<LocalState>,
    catching_up: AtomicBool,
    /// A catch-up was asked for since the running one began: it runs once more, so a request
    /// that arrives after its read (a dropped subscription, a gap) is never lost.
    again: AtomicBool,
    /// The cluster dropped this user's subscription: catch-up subscribes again first.
    resubscribe: AtomicBool,
}

#[derive(Debug, Default)]
struct LocalState {
    log: Option<Arc<UserLog>>,
    /// Messages that arrived between SUBSCRIBE and the history read.
    pending: Vec<Published>,
}

/// What applying events to a local log found.
enum Applied {
    Done,
    /// Events before these are missing: read them from the stream.
    Gap,
    /// Another epoch: the shared log lost its history.
    Stale,
    /// Same epoch, but a seq this node has holds another event: the shared log lost its newest
    /// events (a failover to a replica that had not received them) and reused their seqs.
    Diverged,
}

impl RedisEngine {
    fn user_of_channel(&self, channel: &[u8]) -> Option<UserId> {
        let channel = std::str::from_utf8(channel).ok()?;
        let inner = channel.strip_prefix(&self.prefix)?.strip_prefix(":{")?.strip_suffix("}:ch")?;
        UserId::parse(inner).ok()
    }

    pub(super) fn on_push(&self, push: redis::PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
                    return;
                };
                if channel == self.control_channel().as_bytes() {
                    self.on_control(&payload);
                    return;
                }
                let Some(user) = self.user_of_channel(&channel) else { return };
                match wire::decode_published(Bytes::from(payload)) {
                    Ok(message) => self.deliver(&user, message),
                    // Not ours to drop silently: a gap check on the next message fills it.
                    Err(e) => warn!(%user, "unreadable message on a herald channel: {e}"),
                }
            }
            PushKind::Disconnection => {
                warn!("redis pub/sub connection lost; catching up when it returns");
                self.catch_up_everyone();
            }
            PushKind::SUnsubscribe => {
                // The cluster dropped a sharded subscription we did not give up: its slot moved to
                // another master (or that master failed over). Subscribe again — the cluster client
                // follows the slot to its new owner — and read what was published meanwhile.
                let Some(Value::BulkString(channel)) = push.data.first() else { return };
                if channel == self.control_channel().as_bytes() {
                    self.resubscribe_control();
                    return;
                }
                let Some(user) = self.user_of_channel(channel) else { return };
                let Some(local) = self.locals.lock().get(&user).cloned() else { return };
                debug!(%user, "sharded subscription dropped by the cluster; subscribing again");
                local.resubscribe.store(true, Ordering::Release);
                self.spawn_catch_up(user, local);
            }
            _ => {}
        }
    }

    /// After pub/sub messages may have been missed (the connection was lost, or made anew):
    /// every served user catches up from the streams, retrying until Redis answers. On a
    /// cluster the sharded subscriptions are made again first, on whichever master owns each
    /// slot now, and the control channel's too.
    pub(super) fn catch_up_everyone(&self) {
        if self.subscriber.is_cluster() {
            self.resubscribe_control();
        }
        let users: Vec<_> = self.locals.lock().iter().map(|(u, l)| (u.clone(), l.clone())).collect();
        for (user, local) in users {
            if self.subscriber.is_cluster() {
                local.resubscribe.store(true, Ordering::Release);
            }
            self.spawn_catch_up(user, local);
        }
    }

    fn deliver(&self, user: &UserId, message: Published) {
        let Some(local) = self.locals.lock().get(user).cloned() else { return };
        let mut state = local.state.lock();
        let Some(log) = state.log.clone() else {
            state.pending.push(message);
            return;
        };
        drop(state);
        match apply(&log, &message.epoch, &message.events, &self.retention) {
            Applied::Done => {}
            Applied::Gap => self.spawn_catch_up(user.clone(), local),
            Applied::Stale => self.retire(user, &local, &log),
            Applied::Diverged => self.diverged(user, &local, &log),
        }
    }

    /// The log of `user` lost its history in Redis: close ours so clients reconnect and reset.
    fn retire(&self, user: &UserId, local: &Arc<Local>, log: &UserLog) {
        info!(%user, "log epoch changed in redis; closing this node's copy");
        log.close();
        let mut locals = self.locals.lock();
        if locals.get(user).is_some_and(|l| Arc::ptr_eq(l, local)) {
            locals.remove(user);
        }
    }

    /// Subscribes again if the cluster dropped the user's subscription, then reads what the
    /// stream holds past this node's copy — retrying until Redis answers. One catch-up runs per
    /// user at a time; a request made while it runs makes it run once more when it ends.
    fn spawn_catch_up(&self, user: UserId, local: Arc<Local>) {
        local.again.store(true, Ordering::Release);
        if local.catching_up.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(engine) = self.me.upgrade() else {
            local.catching_up.store(false, Ordering::Release);
            return;
        };
        tokio::spawn(async move {
            loop {
                local.again.store(false, Ordering::Release);
                engine.catch_up(&user, &local).await;
                local.catching_up.store(false, Ordering::Release);
                // Asked again after this pass began: run another, unless a new task took over.
                if !local.again.load(Ordering::Acquire) || local.catching_up.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
        });
    }

    /// One pass of [`RedisEngine::spawn_catch_up`].
    async fn catch_up(&self, user: &UserId, local: &Arc<Local>) {
        loop {
            let still_served = self.locals.lock().get(user).is_some_and(|l| Arc::ptr_eq(l, local));
            if !still_served {
                return;
            }
            let Some(log) = local.state.lock().log.clone() else { return };
            // Cleared before subscribing: a drop reported meanwhile sets it again for the next pass.
            if local.resubscribe.swap(false, Ordering::AcqRel) {
                // Subscribed before reading, so nothing falls between the two.
                if let Err(e) = self.subscriber.subscribe(&self.key(user, "ch")).await {
                    debug!(%user, "resubscribe waits for redis: {e}");
                    local.resubscribe.store(true, Ordering::Release);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            match self.read_after(user, log.head()).await {
                Ok(read) => {
                    self.apply_read(user, local, &log, read);
                    return;
                }
                Err(e) => {
                    debug!(%user, "catch-up waits for redis: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// The shared log of `user` lost events this node has seen and reused their seqs for other
    /// events, without changing its epoch — e.g. Redis failed over to a replica that had not
    /// received them. Clients must not resume across that: the epoch is renewed in Redis (once,
    /// by whichever node notices first) and this node's copy is retired, so every client of the
    /// user reconnects and gets `reset`, never a silent gap.
    fn diverged(&self, user: &UserId, local: &Arc<Local>, log: &UserLog) {
        warn!(%user, head = log.head(), "the shared log lost events this node delivered; renewing its epoch");
        self.retire(user, local, log);
        let Some(engine) = self.me.upgrade() else { return };
        let (user, old) = (user.clone(), log.epoch().to_owned());
        tokio::spawn(async move {
            for _ in 0..20 {
                match engine.renew_epoch(&user, &old).await {
                    Ok(()) => return,
                    Err(e) => debug!(%user, "renewing the epoch waits for redis: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }

    /// Applies what [`RedisEngine::read_after`] returned; a missing or different epoch means the
    /// shared log lost its history, so this node's copy is retired.
    fn apply_read(&self, user: &UserId, local: &Arc<Local>, log: &UserLog, read: LogRead) {
        let Some(epoch) = read.epoch else {
            self.retire(user, local, log);
            return;
        };
        match apply(log, &epoch, &read.events, &self.retention) {
            Applied::Done | Applied::Gap => {}
            Applied::Stale => self.retire(user, local, log),
            Applied::Diverged => self.diverged(user, local, log),
        }
    }

    /// Current epoch and every retained event after `after`, read atomically.
    async fn read_after(&self, user: &UserId, after: u64) -> Result<LogRead, EngineError> {
        self.read_log(user, after, 0, false).await
    }

    /// This node's live log of `user`, loaded on first use.
    pub(super) async fn open_local(&self, user: &UserId) -> Result<Arc<UserLog>, EngineError> {
        let local = self.locals.lock().entry(user.clone()).or_default().clone();
        let loaded = local.ready.get_or_try_init(|| self.load(user, &local)).await;
        if let Err(e) = loaded {
            let mut locals = self.locals.lock();
            if locals.get(user).is_some_and(|l| Arc::ptr_eq(l, &local)) {
                locals.remove(user);
            }
            return Err(e);
        }
        let log = local.state.lock().log.clone();
        let log = log.ok_or_else(|| EngineError::new("log was reset while opening; retry"))?;
        if log.runs_shed() {
            // Shed under the node's memory cap: whoever opens the log may draw the runs.
            self.seed_runs(user, &log).await?;
        }
        Ok(log)
    }

    /// Reads what `log` is missing from the stream (a client saw newer events on another node).
    pub(super) async fn refresh_local(&self, user: &UserId, log: &Arc<UserLog>) -> Result<(), EngineError> {
        let Some(local) = self.locals.lock().get(user).cloned() else { return Ok(()) };
        let read = self.read_after(user, log.head()).await?;
        self.apply_read(user, &local, log, read);
        Ok(())
    }

    /// Reads back from the stream the events after `after` that `log` dropped under the node's
    /// memory cap ([`RedisEngine::enforce_local_cap`]), so a client resuming from `after`
    /// replays them instead of resetting. Nothing to do when `log` holds them, or when the
    /// stream no longer does either (retention: the client resets, as it would anyway).
    pub(super) async fn recall_local(
        &self,
        user: &UserId,
        log: &Arc<UserLog>,
        after: u64,
    ) -> Result<(), EngineError> {
        let first = log.first_retained();
        if after + 1 >= first || log.retained().0 >= self.retention.max_events {
            return Ok(());
        }
        let read = self.read_log(user, after, (first - 1 - after) as usize, false).await?;
        if read.epoch.as_deref() != Some(log.epoch()) {
            return Ok(());
        }
        let now_ms = now_ms();
        let older =
            read.events.iter().filter(|e| e.seq < first).map(|e| new_entry(e, now_ms, &self.retention));
        let recalled = log.backfill(older.collect());
        debug!(%user, recalled, "read back events this node had dropped under max_retained_bytes");
        Ok(())
    }

    /// Keeps this node's copies of its users' logs within `max_retained_bytes`: when they hold
    /// more, the least recently active drop their retained events (Redis keeps them; a resume
    /// on this node reads them back, [`RedisEngine::recall_local`]); if that is not enough,
    /// their compacted runs' output too (seeded whole from Redis again when the log is next
    /// opened, [`RedisEngine::open_local`]). Nothing a client sees changes.
    pub(super) fn enforce_local_cap(&self) {
        let logs: Vec<Arc<UserLog>> =
            self.locals.lock().values().filter_map(|l| l.state.lock().log.clone()).collect();
        let mut costs: Vec<(Option<std::time::Instant>, usize, Arc<UserLog>)> =
            logs.into_iter().map(|log| (log.last_appended(), log.held_bytes(), log)).collect();
        let mut total: usize = costs.iter().map(|(_, bytes, _)| bytes).sum();
        if self.max_local_bytes == 0 || total <= self.max_local_bytes {
            return crate::metrics::logs_held_bytes(total);
        }
        costs.sort_unstable_by_key(|(at, _, _)| *at);
        let mut dropped = 0;
        for (_, held, log) in &costs {
            if total <= self.max_local_bytes {
                break;
            }
            if log.retained().0 == 0 {
                continue;
            }
            log.evict_entries();
            total = (total + log.held_bytes()).saturating_sub(*held);
            dropped += 1;
        }
        let mut shed = 0;
        for (_, _, log) in &costs {
            if total <= self.max_local_bytes {
                break;
            }
            let (freed, runs) = log.shed_runs();
            total = total.saturating_sub(freed);
            shed += runs;
        }
        crate::metrics::logs_evicted(dropped);
        crate::metrics::logs_held_bytes(total);
        warn!(
            dropped,
            shed,
            max_retained_bytes = self.max_local_bytes,
            "this node's copies of its users' logs over max_retained_bytes: dropped the events of \
             the {dropped} least recently active and the output of {shed} active runs (Redis keeps \
             them; they are read back when needed)"
        );
    }

    /// Subscribes to `user`'s channel, then loads its history into a new local log.
    async fn load(&self, user: &UserId, local: &Arc<Local>) -> Result<(), EngineError> {
        {
            let _ops = self.subscriptions.lock().await;
            let channel = self.key(user, "ch");
            // One retry: the first command after Redis came back may only trigger the reconnect.
            if self.subscriber.subscribe(&channel).await.is_err() {
                self.subscriber.subscribe(&channel).await.map_err(engine_error)?;
            }
        }
        // A user's keys are refreshed by appends; one that only connects keeps its meta a TTL.
        let read = self.read_log(user, 0, 0, true).await?;
        let (epoch, seq, events) = (read.epoch.unwrap_or_default(), read.seq, read.events);
        let base = seq.saturating_sub(events.len() as u64);
        let log = Arc::new(UserLog::new(epoch.clone(), base, self.retention));
        apply(&log, &epoch, &events, &self.retention);
        // The active runs' compacted state, read after the log (so at a seq at least its head)
        // and before live messages reach it: whole runs, whatever retention trimmed.
        self.seed_runs(user, &log).await?;
        let mut state = local.state.lock();
        let pending = std::mem::take(&mut state.pending);
        state.log = Some(log.clone());
        drop(state);
        let mut gap = false;
        for message in &pending {
            match apply(&log, &message.epoch, &message.events, &self.retention) {
                Applied::Done => {}
                Applied::Gap => gap = true,
                Applied::Stale => {
                    self.retire(user, local, &log);
                    return Ok(());
                }
                Applied::Diverged => {
                    self.diverged(user, local, &log);
                    return Ok(());
                }
            }
        }
        // A gap, or a subscription that went away while this load ran (its catch-up found no
        // log yet and left the resubscribe mark): catch up now.
        if gap || local.resubscribe.load(Ordering::Acquire) {
            self.spawn_catch_up(user.clone(), local.clone());
        }
        Ok(())
    }

    /// Drops the local logs no connection reads any more and unsubscribes from their channels.
    pub(super) fn forget_idle(&self) {
        let idle: Vec<(UserId, Arc<Local>)> = self
            .locals
            .lock()
            .iter()
            .filter(|(_, l)| unused(l))
            .map(|(u, l)| (u.clone(), l.clone()))
            .collect();
        let Some(engine) = self.me.upgrade() else { return };
        for (user, local) in idle {
            let engine = engine.clone();
            tokio::spawn(async move {
                let _ops = engine.subscriptions.lock().await;
                {
                    let mut locals = engine.locals.lock();
                    if !(unused(&local) && locals.get(&user).is_some_and(|l| Arc::ptr_eq(l, &local))) {
                        return;
                    }
                    locals.remove(&user);
                }
                if let Err(e) = engine.subscriber.unsubscribe(&engine.key(&user, "ch")).await {
                    debug!(%user, "unsubscribe failed: {e}");
                }
            });
        }
    }
}

/// True when nothing but the engine holds the local log.
fn unused(local: &Local) -> bool {
    local.state.lock().log.as_ref().is_some_and(|log| Arc::strong_count(log) == 1)
}

/// Appends `events` of `epoch` to `log` in order, skipping those it already has.
fn apply(log: &UserLog, epoch: &str, events: &[WireEvent], retention: &Retention) -> Applied {
    if epoch != log.epoch() {
        return Applied::Stale;
    }
    let now_ms = now_ms();
    let entry = |e: &WireEvent| new_entry(e, now_ms, retention);
    // Usually all new: appended together, so the user's caught-up sockets get them in one write.
    match log.append_all(events.iter().map(entry).collect()) {
        Ok(_) => return Applied::Done,
        Err(NotNext::Gap) => return Applied::Gap,
        Err(NotNext::AlreadyHave) => {}
    }
    for e in events {
        match log.append(entry(e)) {
            Ok(_) => {}
            Err(NotNext::AlreadyHave) => {
                // Delivered twice (live and by a catch-up read): the same event. Another event
                // at a seq we have means the shared log reused it.
                let held = log.history(e.seq - 1, 1).ok().and_then(|mut v| v.pop());
                if held.is_some_and(|h| h.seq == e.seq && h.id != e.id) {
                    return Applied::Diverged;
                }
            }
            Err(NotNext::Gap) => return Applied::Gap,
        }
    }
    Applied::Done
}

/// A log entry of an event read from Redis, its age counted from its append there.
fn new_entry(e: &WireEvent, now_ms: u64, retention: &Retention) -> NewEntry {
    NewEntry {
        seq: e.seq,
        id: e.id.clone(),
        run_id: e.run_id.clone(),
        kind: e.kind,
        frame: e.frame.clone(),
        age: Duration::from_millis(now_ms.saturating_sub(e.appended_ms)).min(retention.ttl),
    }
}
