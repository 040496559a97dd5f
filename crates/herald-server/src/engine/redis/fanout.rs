//! Fan-out: this node's live copy of the logs of the users it serves, fed by their channels.
//!
//! A node subscribes to a user's channel *before* it reads the user's history and drops what it
//! already has by seq, so nothing falls between the history and the live messages; a seq gap (a
//! message missed while Redis was unreachable) is filled from the stream, and a message of another
//! epoch (Redis lost the log) closes the local log so its clients reconnect and get `reset`.
//! One message carries all of a user's events of one batch; their frames are slices of it, shared
//! by every local connection without being decoded or encoded again.

use super::wire::{self, Published, WireEvent};
use super::{RedisEngine, engine_error};
use crate::engine::{EngineError, new_epoch};
use crate::log::{NewEntry, NotNext, Retention, UserLog};
use bytes::Bytes;
use herald_protocol::UserId;
use parking_lot::Mutex;
use redis::{PushKind, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// This node's view of one user it serves.
#[derive(Debug, Default)]
pub(super) struct Local {
    ready: tokio::sync::OnceCell<()>,
    state: Mutex<LocalState>,
    catching_up: AtomicBool,
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
                // Messages published while we were away are in the streams: fetch them once the
                // connection is back (catch-up retries until it is).
                warn!("redis pub/sub connection lost; catching up when it returns");
                let users: Vec<_> = self.locals.lock().iter().map(|(u, l)| (u.clone(), l.clone())).collect();
                for (user, local) in users {
                    self.spawn_catch_up(user, local);
                }
            }
            _ => {}
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

    fn spawn_catch_up(&self, user: UserId, local: Arc<Local>) {
        if local.catching_up.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(engine) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            loop {
                let still_served = engine.locals.lock().get(&user).is_some_and(|l| Arc::ptr_eq(l, &local));
                if !still_served {
                    break;
                }
                let Some(log) = local.state.lock().log.clone() else { break };
                match engine.read_after(&user, log.head()).await {
                    Ok((epoch, events)) => {
                        engine.apply_read(&user, &local, &log, epoch, &events);
                        break;
                    }
                    Err(e) => {
                        debug!(%user, "catch-up waits for redis: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            local.catching_up.store(false, Ordering::Release);
        });
    }

    /// Applies what [`RedisEngine::read_after`] returned; a missing or different epoch means the
    /// shared log lost its history, so this node's copy is retired.
    fn apply_read(
        &self,
        user: &UserId,
        local: &Arc<Local>,
        log: &UserLog,
        epoch: Option<String>,
        events: &[WireEvent],
    ) {
        let Some(epoch) = epoch else {
            self.retire(user, local, log);
            return;
        };
        if let Applied::Stale = apply(log, &epoch, events, &self.retention) {
            self.retire(user, local, log);
        }
    }

    /// Current epoch and every retained event after `after`, read atomically.
    async fn read_after(
        &self,
        user: &UserId,
        after: u64,
    ) -> Result<(Option<String>, Vec<WireEvent>), EngineError> {
        let mut con = self.commands.clone();
        let (epoch, range): (Option<String>, Value) = redis::pipe()
            .atomic()
            .hget(self.key(user, "meta"), "epoch")
            .xrange(self.key(user, "log"), format!("{}-0", after + 1), "+")
            .query_async(&mut con)
            .await
            .map_err(engine_error)?;
        Ok((epoch, wire::decode_range(range).map_err(engine_error)?))
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
        local.state.lock().log.clone().ok_or_else(|| EngineError::new("log was reset while opening; retry"))
    }

    /// Reads what `log` is missing from the stream (a client saw newer events on another node).
    pub(super) async fn refresh_local(&self, user: &UserId, log: &Arc<UserLog>) -> Result<(), EngineError> {
        let Some(local) = self.locals.lock().get(user).cloned() else { return Ok(()) };
        let (epoch, events) = self.read_after(user, log.head()).await?;
        self.apply_read(user, &local, log, epoch, &events);
        Ok(())
    }

    /// Subscribes to `user`'s channel, then loads its history into a new local log.
    async fn load(&self, user: &UserId, local: &Arc<Local>) -> Result<(), EngineError> {
        {
            let _ops = self.subscriptions.lock().await;
            let mut subscriber = self.subscriber.clone();
            let channel = self.key(user, "ch");
            // One retry: the first command after Redis came back may only trigger the reconnect.
            if subscriber.subscribe(&channel).await.is_err() {
                subscriber.subscribe(&channel).await.map_err(engine_error)?;
            }
        }
        let meta = self.key(user, "meta");
        let mut con = self.commands.clone();
        // A user's keys are refreshed by appends; one that only connects keeps its meta a TTL.
        let keep_ms = self.retention.ttl.as_millis() as i64 * 5 / 4;
        let (epoch, seq, range): (String, u64, Value) = redis::pipe()
            .atomic()
            .hset_nx(&meta, "epoch", new_epoch())
            .ignore()
            .hset_nx(&meta, "seq", 0)
            .ignore()
            .pexpire(&meta, keep_ms.max(1000))
            .ignore()
            .hget(&meta, "epoch")
            .hget(&meta, "seq")
            .xrange_all(self.key(user, "log"))
            .query_async(&mut con)
            .await
            .map_err(engine_error)?;
        let events = wire::decode_range(range).map_err(engine_error)?;
        let base = seq.saturating_sub(events.len() as u64);
        let log = Arc::new(UserLog::new(epoch.clone(), base, self.retention));
        apply(&log, &epoch, &events, &self.retention);
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
            }
        }
        if gap {
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
                let mut subscriber = engine.subscriber.clone();
                if let Err(e) = subscriber.unsubscribe(engine.key(&user, "ch")).await {
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
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    for e in events {
        let age = Duration::from_millis(now_ms.saturating_sub(e.appended_ms)).min(retention.ttl);
        let entry = NewEntry {
            seq: e.seq,
            id: e.id.clone(),
            run_id: e.run_id.clone(),
            kind: e.kind,
            frame: e.frame.clone(),
            age,
        };
        match log.append(entry) {
            Ok(_) | Err(NotNext::AlreadyHave) => {}
            Err(NotNext::Gap) => return Applied::Gap,
        }
    }
    Applied::Done
}
