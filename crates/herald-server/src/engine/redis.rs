//! The Redis engine: many Herald nodes share one Redis (or Redis Cluster); users and backends
//! may use any node.
//!
//! Per user, four keys hash-tagged by the user so Redis Cluster keeps them on one shard:
//! `{prefix}:{user}:meta` (epoch, seq), `:log` (a stream whose entry ids are `<seq>-0`), `:ids`
//! (idempotency keys → seq) and `:runs` (run states). An append is one Lua script
//! ([`append.lua`](append.lua)) that compares the run states and ids it was validated against,
//! takes the next seqs, adds the stream entries, records the ids and publishes each event on the
//! user's channel `{prefix}:{user}:ch` — all or nothing.
//!
//! Each node keeps, for the users it serves, a local [`UserLog`] fed by that channel; its
//! connections read from it exactly as with the memory engine. A node subscribes *before* it reads
//! the user's history and drops what it already has by seq, so nothing falls between the history
//! and the live messages; a seq gap (a message missed while Redis was unreachable) is filled from
//! the stream, and a message of another epoch (Redis lost the log) closes the local log so its
//! clients reconnect and get `reset`.

mod control;

use super::{
    ActiveRun, AppendError, Control, Engine, EngineError, History, NodePresence, NodeReport, RunScan,
    StalledRun, encode_frame, new_epoch, new_event_id,
};
use crate::log::{LogEntry, NewEntry, NotNext, Retention, UserLog};
use async_trait::async_trait;
use futures_util::future::{join_all, try_join_all};
use herald_protocol::{EventInput, EventKind, Receipt, RunState, UserId};
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, PushKind, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// Attempts of one user's append when concurrent publishers keep changing its run states.
const MAX_APPEND_ATTEMPTS: usize = 20;

/// How a request to Redis may take before the engine reports itself unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The frame prefix the append script puts back with the real seq.
const FRAME_PREFIX: &str = r#"{"type":"event","seq":0"#;

/// Engine over a shared Redis. See the module docs.
pub struct RedisEngine {
    prefix: String,
    retention: Retention,
    commands: ConnectionManager,
    subscriber: ConnectionManager,
    script: redis::Script,
    /// Redis Cluster: each append script touches one user's slot only.
    one_user_per_script: bool,
    locals: Mutex<HashMap<UserId, Arc<Local>>>,
    /// Serializes SUBSCRIBE/UNSUBSCRIBE so an unsubscribe of a user going idle cannot undo the
    /// subscribe of a connection arriving at the same moment.
    subscriptions: tokio::sync::Mutex<()>,
    /// Orders from the control channel, for this node's [`crate::node`] task.
    control_tx: tokio::sync::broadcast::Sender<Control>,
    me: Weak<RedisEngine>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// This node's view of one user it serves.
#[derive(Debug, Default)]
struct Local {
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

/// One event as published on a user's channel (or read back from the stream).
#[derive(Debug, Clone)]
struct Published {
    epoch: String,
    seq: u64,
    appended_ms: u64,
    id: String,
    run_id: Option<String>,
    kind: EventKind,
    frame: String,
}

enum Applied {
    Done,
    Gap,
    Stale,
}

impl RedisEngine {
    /// Connects to `url` (two connections: commands, and RESP3 pub/sub with automatic
    /// resubscription) and starts listening for published events.
    ///
    /// With `cluster`, a batch spanning users is written with one script call per user (a Redis
    /// Cluster script may only touch one slot); otherwise with one call, all or nothing.
    pub async fn connect(
        url: &str,
        prefix: &str,
        retention: Retention,
        cluster: bool,
    ) -> Result<Arc<Self>, EngineError> {
        let unavailable = |e: redis::RedisError| EngineError(format!("redis at {}: {e}", redact(url)));
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let client = redis::Client::open(url).map_err(unavailable)?;
        let commands =
            ConnectionManager::new_with_config(client, config.clone()).await.map_err(unavailable)?;
        let resp3_url =
            if url.contains('?') { format!("{url}&protocol=resp3") } else { format!("{url}?protocol=resp3") };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let subscriber = ConnectionManager::new_with_config(
            redis::Client::open(resp3_url).map_err(unavailable)?,
            config.set_push_sender(tx).set_automatic_resubscription(),
        )
        .await
        .map_err(unavailable)?;
        let engine = Arc::new_cyclic(|me| RedisEngine {
            prefix: prefix.to_owned(),
            retention,
            commands,
            subscriber,
            script: redis::Script::new(include_str!("append.lua")),
            one_user_per_script: cluster,
            locals: Mutex::new(HashMap::new()),
            subscriptions: tokio::sync::Mutex::new(()),
            control_tx: tokio::sync::broadcast::channel(64).0,
            me: me.clone(),
        });
        let mut subscriber = engine.subscriber.clone();
        subscriber.subscribe(engine.control_channel()).await.map_err(unavailable)?;
        let weak = Arc::downgrade(&engine);
        tokio::spawn(async move {
            while let Some(push) = rx.recv().await {
                let Some(engine) = weak.upgrade() else { break };
                engine.on_push(push);
            }
        });
        info!(prefix, "redis engine connected");
        Ok(engine)
    }

    fn key(&self, user: &UserId, name: &str) -> String {
        format!("{}:{{{}}}:{name}", self.prefix, user)
    }

    fn user_of_channel(&self, channel: &str) -> Option<UserId> {
        let inner = channel.strip_prefix(&self.prefix)?.strip_prefix(":{")?.strip_suffix("}:ch")?;
        UserId::parse(inner).ok()
    }

    fn on_push(&self, push: redis::PushInfo) {
        match push.kind {
            PushKind::Message => {
                let [channel, payload] = &push.data[..] else { return };
                let (Ok(channel), Ok(payload)) = (
                    redis::from_redis_value_ref::<String>(channel),
                    redis::from_redis_value_ref::<String>(payload),
                ) else {
                    return;
                };
                if channel == self.control_channel() {
                    self.on_control(&payload);
                    return;
                }
                let (Some(user), Some(message)) = (self.user_of_channel(&channel), parse_published(&payload))
                else {
                    warn!(channel, "unparseable message on a herald channel");
                    return;
                };
                self.deliver(&user, message);
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
        match apply(&log, &message, &self.retention) {
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
                    Ok((epoch, messages)) => {
                        engine.apply_read(&user, &local, &log, epoch, &messages);
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

    /// Keeps the node-wide index of active runs (score: last activity, ms) that stall detection
    /// and the active-runs gauge read. Best effort: it is a separate key (not in the users' slots).
    async fn index_runs<'p>(&self, written: impl Iterator<Item = (&'p Part<'p>, &'p Prepared)>) {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let mut pipe = redis::pipe();
        for (part, prepared) in written {
            for (run, state) in part.runs.iter().zip(&prepared.after) {
                let member = format!("{}\n{run}", part.user);
                let state: Option<RunState> = state.as_deref().and_then(|s| serde_json::from_str(s).ok());
                match state {
                    Some(state) if !state.is_ended() => {
                        let activity = part.events.iter().any(|(_, e)| {
                            e.run_id.as_deref() == Some(*run) && e.kind != EventKind::RunStalled
                        });
                        if activity {
                            pipe.zadd(self.active_runs_key(), &member, now_ms).ignore();
                        }
                    }
                    _ => {
                        pipe.zrem(self.active_runs_key(), &member).ignore();
                    }
                }
            }
        }
        let mut con = self.commands.clone();
        if let Err(e) = pipe.query_async::<()>(&mut con).await {
            warn!("could not update the active-runs index: {e}");
        }
    }

    fn active_runs_key(&self) -> String {
        format!("{}:active-runs", self.prefix)
    }

    /// Applies what [`RedisEngine::read_after`] returned; a missing or different epoch means the
    /// shared log lost its history, so this node's copy is retired.
    fn apply_read(
        &self,
        user: &UserId,
        local: &Arc<Local>,
        log: &UserLog,
        epoch: Option<String>,
        read: &[Published],
    ) {
        if epoch.as_deref() != Some(log.epoch()) {
            self.retire(user, local, log);
            return;
        }
        for m in read {
            if let Applied::Stale = apply(log, m, &self.retention) {
                self.retire(user, local, log);
                return;
            }
        }
    }

    /// Current epoch and every retained event after `after`, read atomically.
    async fn read_after(
        &self,
        user: &UserId,
        after: u64,
    ) -> Result<(Option<String>, Vec<Published>), EngineError> {
        let mut con = self.commands.clone();
        let (epoch, range): (Option<String>, StreamRangeReply) = redis::pipe()
            .atomic()
            .hget(self.key(user, "meta"), "epoch")
            .xrange(self.key(user, "log"), format!("{}-0", after + 1), "+")
            .query_async(&mut con)
            .await
            .map_err(engine_error)?;
        let epoch_str = epoch.clone().unwrap_or_default();
        Ok((epoch, range.ids.iter().filter_map(|e| from_stream(&epoch_str, e)).collect()))
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
        let ttl = self.retention.ttl.as_secs().max(1) as i64;
        let mut con = self.commands.clone();
        let (epoch, seq, range): (String, u64, StreamRangeReply) = redis::pipe()
            .atomic()
            .hset_nx(&meta, "epoch", new_epoch())
            .ignore()
            .hset_nx(&meta, "seq", 0)
            .ignore()
            .expire(&meta, ttl)
            .ignore()
            .hget(&meta, "epoch")
            .hget(&meta, "seq")
            .xrange_all(self.key(user, "log"))
            .query_async(&mut con)
            .await
            .map_err(engine_error)?;
        let events: Vec<Published> = range.ids.iter().filter_map(|e| from_stream(&epoch, e)).collect();
        let base = seq.saturating_sub(events.len() as u64);
        let log = Arc::new(UserLog::new(epoch, base, self.retention));
        for m in &events {
            apply(&log, m, &self.retention);
        }
        let mut state = local.state.lock();
        let pending = std::mem::take(&mut state.pending);
        state.log = Some(log.clone());
        drop(state);
        let mut gap = false;
        for m in &pending {
            match apply(&log, m, &self.retention) {
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

    /// Reads what validation of one user's part depends on (its epoch, which ids it already has,
    /// the states of the runs it touches) and validates it with the pure run rules.
    async fn prepare(&self, part: &Part<'_>, numbered: bool) -> Result<Prepared, AppendError> {
        let user = part.user;
        let mut con = self.commands.clone();
        let mut pipe = redis::pipe();
        pipe.hget(self.key(user, "meta"), "epoch");
        for id in &part.ids {
            pipe.zscore(self.key(user, "ids"), id);
        }
        for run in &part.runs {
            pipe.hget(self.key(user, "runs"), run);
        }
        let values: Vec<Value> = pipe.query_async(&mut con).await.map_err(engine_error)?;
        let epoch: Option<String> = redis::from_redis_value_ref(&values[0]).map_err(engine_error)?;
        let known: Vec<Option<u64>> = values[1..=part.ids.len()]
            .iter()
            .map(|v| redis::from_redis_value_ref::<Option<u64>>(v).map_err(engine_error))
            .collect::<Result<_, _>>()?;
        let stored: Vec<Option<String>> = values[part.ids.len() + 1..]
            .iter()
            .map(|v| redis::from_redis_value_ref::<Option<String>>(v).map_err(engine_error))
            .collect::<Result<_, _>>()?;

        let mut staged: HashMap<&str, Option<RunState>> = HashMap::new();
        for (run, text) in part.runs.iter().zip(&stored) {
            let state =
                text.as_deref().map(serde_json::from_str).transpose().map_err(|e| {
                    AppendError::Engine(EngineError(format!("corrupt run state of {run}: {e}")))
                })?;
            staged.insert(run, state);
        }
        let mut plan = Vec::with_capacity(part.events.len());
        let mut first_in_batch: HashMap<&str, usize> = HashMap::new();
        for (k, ((index, event), id)) in part.events.iter().zip(&part.ids).enumerate() {
            if let Some(seq) = known[k] {
                plan.push(Planned::DuplicateOfLog(seq));
                continue;
            }
            if let Some(&first) = first_in_batch.get(id.as_str()) {
                plan.push(Planned::DuplicateInBatch(first));
                continue;
            }
            first_in_batch.insert(id, k);
            if let Some(run) = event.run_id.as_deref() {
                let slot = staged.get_mut(run).expect("every run was read");
                RunState::apply(slot, run, event.kind, &event.data)
                    .map_err(|source| AppendError::RunRule { index: numbered.then_some(*index), source })?;
            }
            plan.push(Planned::Append);
        }
        let after = part
            .runs
            .iter()
            .map(|run| staged[run].as_ref().map(|s| serde_json::to_string(s).expect("run state serializes")))
            .collect();
        Ok(Prepared { epoch, before: stored, after, plan })
    }

    /// Writes the prepared parts `group` with one call of the append script (all or nothing);
    /// `None` when a concurrent publisher changed what they were validated against (prepare
    /// again). Receipts come back per part, in `group` order.
    async fn commit(
        &self,
        group: &[usize],
        parts: &[Part<'_>],
        prepared: &[Prepared],
    ) -> Result<Option<Vec<Vec<Receipt>>>, AppendError> {
        let fresh = |i: usize| -> Vec<usize> {
            prepared[i]
                .plan
                .iter()
                .enumerate()
                .filter(|(_, p)| matches!(p, Planned::Append))
                .map(|(k, _)| k)
                .collect()
        };
        let writing: Vec<(usize, Vec<usize>)> =
            group.iter().map(|&i| (i, fresh(i))).filter(|(_, f)| !f.is_empty()).collect();
        let mut written: HashMap<usize, (String, usize, Vec<u64>)> = HashMap::new();
        if !writing.is_empty() {
            let wall = SystemTime::now();
            let mut invocation = self.script.prepare_invoke();
            invocation
                .arg(self.retention.max_events)
                .arg(self.retention.ttl.as_millis() as u64)
                .arg(writing.len());
            for (i, fresh) in &writing {
                let (part, prepared) = (&parts[*i], &prepared[*i]);
                let user = part.user;
                invocation
                    .key(self.key(user, "meta"))
                    .key(self.key(user, "log"))
                    .key(self.key(user, "ids"))
                    .key(self.key(user, "runs"))
                    .arg(new_epoch())
                    .arg(self.key(user, "ch"))
                    .arg(part.runs.len());
                for ((run, before), after) in part.runs.iter().zip(&prepared.before).zip(&prepared.after) {
                    invocation
                        .arg(*run)
                        .arg(before.as_deref().unwrap_or(""))
                        .arg(after.as_deref().unwrap_or(""));
                }
                invocation.arg(fresh.len());
                for &k in fresh {
                    let event = &part.events[k].1;
                    let frame = encode_frame(0, &part.ids[k], event, wall);
                    let rest =
                        frame.as_str().strip_prefix(FRAME_PREFIX).expect("frames start with type and seq");
                    invocation
                        .arg(&part.ids[k])
                        .arg(event.run_id.as_deref().unwrap_or(""))
                        .arg(event.kind.as_str())
                        .arg(rest);
                }
            }
            let mut con = self.commands.clone();
            let reply: Vec<Value> = invocation.invoke_async(&mut con).await.map_err(engine_error)?;
            let status: String = redis::from_redis_value_ref(&reply[0]).map_err(engine_error)?;
            if status == "conflict" {
                debug!(users = writing.len(), "append conflict, validating again");
                return Ok(None);
            }
            let mut at = 1;
            for (i, _) in &writing {
                let epoch: String = redis::from_redis_value_ref(&reply[at]).map_err(engine_error)?;
                let receivers: usize = redis::from_redis_value_ref(&reply[at + 1]).map_err(engine_error)?;
                let n: usize = redis::from_redis_value_ref(&reply[at + 2]).map_err(engine_error)?;
                let seqs = reply[at + 3..at + 3 + n]
                    .iter()
                    .map(|v| redis::from_redis_value_ref::<u64>(v).map_err(engine_error))
                    .collect::<Result<Vec<_>, _>>()?;
                at += 3 + n;
                written.insert(*i, (epoch, receivers, seqs));
            }
            self.index_runs(writing.iter().map(|(i, _)| (&parts[*i], &prepared[*i]))).await;
        }
        Ok(Some(group.iter().map(|&i| receipts(&parts[i], &prepared[i], written.remove(&i))).collect()))
    }
}

/// The receipts of one part, from what its script call returned (`None`: nothing was written,
/// every event was a duplicate).
fn receipts(
    part: &Part<'_>,
    prepared: &Prepared,
    written: Option<(String, usize, Vec<u64>)>,
) -> Vec<Receipt> {
    let (epoch, receivers, seqs) =
        written.unwrap_or_else(|| (prepared.epoch.clone().unwrap_or_default(), 0, Vec::new()));
    let mut seqs = seqs.into_iter();
    let mut receipts: Vec<Receipt> = Vec::with_capacity(part.events.len());
    for (k, planned) in prepared.plan.iter().enumerate() {
        let receipt = match planned {
            Planned::Append => Receipt {
                id: part.ids[k].clone(),
                seq: seqs.next().expect("one seq per fresh event"),
                epoch: epoch.clone(),
                connections: receivers,
                duplicate: false,
            },
            Planned::DuplicateInBatch(first) => Receipt { duplicate: true, ..receipts[*first].clone() },
            Planned::DuplicateOfLog(seq) => Receipt {
                id: part.ids[k].clone(),
                seq: *seq,
                epoch: epoch.clone(),
                connections: receivers,
                duplicate: true,
            },
        };
        receipts.push(receipt);
    }
    receipts
}

/// One user's share of a publish batch, with generated ids and the runs it touches.
struct Part<'a> {
    user: &'a UserId,
    /// Events with their position in the whole batch.
    events: &'a [(usize, EventInput)],
    ids: Vec<String>,
    runs: Vec<&'a str>,
}

impl<'a> Part<'a> {
    fn new(user: &'a UserId, events: &'a [(usize, EventInput)]) -> Self {
        let ids = events.iter().map(|(_, e)| e.id.clone().unwrap_or_else(new_event_id)).collect();
        let mut runs: Vec<&str> = events.iter().filter_map(|(_, e)| e.run_id.as_deref()).collect();
        runs.sort_unstable();
        runs.dedup();
        Part { user, events, ids, runs }
    }
}

/// A validated part: what it was validated against and what each event becomes.
struct Prepared {
    epoch: Option<String>,
    /// Run states as read (compare-and-set), in `Part::runs` order.
    before: Vec<Option<String>>,
    /// Run states after the part, in the same order.
    after: Vec<Option<String>>,
    plan: Vec<Planned>,
}

/// What one event of a part becomes.
enum Planned {
    Append,
    DuplicateOfLog(u64),
    DuplicateInBatch(usize),
}

fn apply(log: &UserLog, m: &Published, retention: &Retention) -> Applied {
    if m.epoch != log.epoch() {
        return Applied::Stale;
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let age = Duration::from_millis(now_ms.saturating_sub(m.appended_ms)).min(retention.ttl);
    let entry = NewEntry {
        seq: m.seq,
        id: m.id.clone(),
        run_id: m.run_id.clone(),
        kind: m.kind,
        frame: m.frame.clone().into(),
        age,
    };
    match log.append(entry) {
        Ok(_) | Err(NotNext::AlreadyHave) => Applied::Done,
        Err(NotNext::Gap) => Applied::Gap,
    }
}

fn parse_published(payload: &str) -> Option<Published> {
    let mut parts = payload.splitn(7, '\n');
    let epoch = parts.next()?.to_owned();
    let seq = parts.next()?.parse().ok()?;
    let appended_ms = parts.next()?.parse().ok()?;
    let id = parts.next()?.to_owned();
    let run_id = Some(parts.next()?).filter(|r| !r.is_empty()).map(str::to_owned);
    let kind = EventKind::from_name(parts.next()?)?;
    let frame = parts.next()?.to_owned();
    Some(Published { epoch, seq, appended_ms, id, run_id, kind, frame })
}

fn from_stream(epoch: &str, entry: &redis::streams::StreamId) -> Option<Published> {
    let seq = entry.id.split('-').next()?.parse().ok()?;
    let field = |name: &str| entry.get::<String>(name);
    Some(Published {
        epoch: epoch.to_owned(),
        seq,
        appended_ms: field("t")?.parse().ok()?,
        id: field("i")?,
        run_id: field("r").filter(|r| !r.is_empty()),
        kind: EventKind::from_name(&field("k")?)?,
        frame: field("f")?,
    })
}

fn engine_error(e: impl std::fmt::Display) -> EngineError {
    EngineError(format!("redis: {e}"))
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[async_trait]
impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn append(&self, events: Vec<EventInput>) -> Result<Vec<Receipt>, AppendError> {
        let numbered = events.len() > 1;
        let total = events.len();
        let mut by_user: BTreeMap<UserId, Vec<(usize, EventInput)>> = BTreeMap::new();
        for (i, event) in events.into_iter().enumerate() {
            by_user.entry(event.user_id.clone()).or_default().push((i, event));
        }
        let parts: Vec<Part<'_>> = by_user.iter().map(|(user, events)| Part::new(user, events)).collect();
        // Phase 1: every user's part is validated before anything is written, so a batch with
        // a broken rule anywhere appends nothing.
        let mut prepared = try_join_all(parts.iter().map(|p| self.prepare(p, numbered))).await?;
        // Phase 2: one script call writes every part, all or nothing — or, on Redis Cluster,
        // one call per user (a script may only touch one slot), written concurrently over the
        // multiplexed connection. A group that met a concurrent change is validated and written
        // again.
        let mut receipts: Vec<Option<Receipt>> = vec![None; total];
        let mut pending: Vec<Vec<usize>> = if self.one_user_per_script {
            (0..parts.len()).map(|i| vec![i]).collect()
        } else {
            vec![(0..parts.len()).collect()]
        };
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let written = join_all(pending.iter().map(|group| self.commit(group, &parts, &prepared))).await;
            let mut conflicts = Vec::new();
            for (group, result) in pending.into_iter().zip(written) {
                match result? {
                    Some(per_part) => {
                        for (&i, part_receipts) in group.iter().zip(per_part) {
                            for ((index, _), receipt) in parts[i].events.iter().zip(part_receipts) {
                                receipts[*index] = Some(receipt);
                            }
                        }
                    }
                    None => conflicts.push(group),
                }
            }
            if conflicts.is_empty() {
                return Ok(receipts.into_iter().map(|r| r.expect("every event has a receipt")).collect());
            }
            for &i in conflicts.iter().flatten() {
                prepared[i] = self.prepare(&parts[i], numbered).await?;
            }
            pending = conflicts;
        }
        Err(EngineError("append kept conflicting with concurrent publishers; retry with the same ids".into())
            .into())
    }

    async fn open_log(&self, user: &UserId) -> Result<Arc<UserLog>, EngineError> {
        let local = self.locals.lock().entry(user.clone()).or_default().clone();
        let loaded = local.ready.get_or_try_init(|| self.load(user, &local)).await;
        if let Err(e) = loaded {
            let mut locals = self.locals.lock();
            if locals.get(user).is_some_and(|l| Arc::ptr_eq(l, &local)) {
                locals.remove(user);
            }
            return Err(e);
        }
        local.state.lock().log.clone().ok_or_else(|| EngineError("log was reset while opening; retry".into()))
    }

    async fn refresh(&self, user: &UserId, log: &Arc<UserLog>) -> Result<(), EngineError> {
        let Some(local) = self.locals.lock().get(user).cloned() else { return Ok(()) };
        let (epoch, read) = self.read_after(user, log.head()).await?;
        self.apply_read(user, &local, log, epoch, &read);
        Ok(())
    }

    async fn history(
        &self,
        user: &UserId,
        after: u64,
        epoch: Option<&str>,
        limit: usize,
    ) -> Result<History, EngineError> {
        let mut con = self.commands.clone();
        let meta = self.key(user, "meta");
        let log = self.key(user, "log");
        let (current, seq, oldest, range): (Option<String>, Option<u64>, StreamRangeReply, StreamRangeReply) =
            redis::pipe()
                .atomic()
                .hget(&meta, "epoch")
                .hget(&meta, "seq")
                .xrange_count(&log, "-", "+", 1)
                .xrange_count(&log, format!("{}-0", after + 1), "+", limit)
                .query_async(&mut con)
                .await
                .map_err(engine_error)?;
        let current = current.unwrap_or_default();
        let seq = seq.unwrap_or(0);
        let first_retained = oldest.ids.first().and_then(|e| e.id.split('-').next()?.parse::<u64>().ok());
        let same_epoch = epoch.is_none_or(|e| e == current);
        let served = same_epoch && after <= seq && first_retained.is_none_or(|f| after + 1 >= f);
        let (reset, entries) = if served {
            (false, range)
        } else {
            let all: StreamRangeReply =
                con.xrange_count(&log, "-", "+", limit).await.map_err(engine_error)?;
            (true, all)
        };
        let now = Instant::now();
        let events = entries
            .ids
            .iter()
            .filter_map(|e| from_stream(&current, e))
            .map(|m| {
                Arc::new(LogEntry {
                    seq: m.seq,
                    id: m.id,
                    run_id: m.run_id,
                    kind: m.kind,
                    frame: m.frame.into(),
                    end_offset: 0,
                    appended_at: now,
                })
            })
            .collect();
        Ok(History { epoch: current, seq, reset, events })
    }

    async fn scan_runs(&self, stall_after: Duration) -> Result<RunScan, EngineError> {
        let mut con = self.commands.clone();
        let key = self.active_runs_key();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let cutoff = now_ms.saturating_sub(stall_after.as_millis() as u64);
        let (active, silent): (usize, Vec<(String, u64)>) = redis::pipe()
            .zcard(&key)
            .zrangebyscore_withscores(&key, "-inf", cutoff)
            .query_async(&mut con)
            .await
            .map_err(engine_error)?;
        let mut scan = RunScan { active, stalled: Vec::new() };
        for (member, last_ms) in silent {
            let Some((user, run_id)) = member.split_once('\n') else { continue };
            let Ok(user) = UserId::parse(user) else { continue };
            let state: Option<String> =
                con.hget(self.key(&user, "runs"), run_id).await.map_err(engine_error)?;
            let state: Option<RunState> = state.and_then(|s| serde_json::from_str(&s).ok());
            match state {
                Some(s) if !s.is_ended() => {
                    if !s.is_stalled() {
                        scan.stalled.push(StalledRun {
                            user,
                            run_id: run_id.to_owned(),
                            silent_for: Duration::from_millis(now_ms.saturating_sub(last_ms)),
                            marker: last_ms,
                        });
                    }
                }
                _ => {
                    // Ended, or forgotten with its user's keys: no longer active.
                    let _: Result<(), _> = con.zrem(&key, &member).await;
                    scan.active = scan.active.saturating_sub(1);
                }
            }
        }
        Ok(scan)
    }

    async fn put_ticket(&self, hash: &str, user: &UserId, ttl: Duration) -> Result<(), EngineError> {
        let mut con = self.commands.clone();
        let key = format!("{}:ticket:{hash}", self.prefix);
        con.set_ex::<_, _, ()>(key, user.as_str(), ttl.as_secs().max(1)).await.map_err(engine_error)
    }

    async fn take_ticket(&self, hash: &str) -> Result<Option<UserId>, EngineError> {
        let mut con = self.commands.clone();
        let key = format!("{}:ticket:{hash}", self.prefix);
        let user: Option<String> = con.get_del(key).await.map_err(engine_error)?;
        Ok(user.and_then(|u| UserId::parse(&u).ok()))
    }

    async fn is_ready(&self) -> bool {
        // Both connections: appends need the first, live delivery the second.
        let mut commands = self.commands.clone();
        let mut subscriber = self.subscriber.clone();
        let ping = |con: &mut ConnectionManager| {
            let mut con = con.clone();
            async move {
                let ping = redis::cmd("PING");
                let reply = tokio::time::timeout(RESPONSE_TIMEOUT, ping.query_async::<Value>(&mut con)).await;
                matches!(reply, Ok(Ok(_)))
            }
        };
        ping(&mut commands).await && ping(&mut subscriber).await
    }

    async fn active_runs(
        &self,
        silent_for: Duration,
        limit: usize,
    ) -> Result<(usize, Vec<ActiveRun>), EngineError> {
        self.list_active_runs(silent_for, limit).await
    }

    async fn revoke(&self, user: &UserId, before: u64, keep: Duration) -> Result<(), EngineError> {
        self.store_revocation(user, before, keep).await
    }

    async fn revoked_before(&self, user: &UserId) -> Result<Option<u64>, EngineError> {
        self.read_revocation(user).await
    }

    async fn broadcast(&self, control: &Control) -> Result<(), EngineError> {
        self.broadcast_control(control).await
    }

    fn control(&self) -> Option<tokio::sync::broadcast::Receiver<Control>> {
        Some(self.control_tx.subscribe())
    }

    async fn report_node(&self, report: &NodeReport, ttl: Duration) -> Result<(), EngineError> {
        self.store_report(report, ttl).await
    }

    async fn nodes(&self) -> Result<Vec<NodeReport>, EngineError> {
        self.reports().await
    }

    async fn put_presence(
        &self,
        user: &UserId,
        node: &str,
        here: Option<&NodePresence>,
    ) -> Result<(), EngineError> {
        self.store_presence(user, node, here).await
    }

    async fn presence(&self, user: &UserId) -> Result<Vec<NodePresence>, EngineError> {
        self.read_presence(user).await
    }

    fn sweep(&self) {
        let idle: Vec<(UserId, Arc<Local>)> = self
            .locals
            .lock()
            .iter()
            .filter(|(_, l)| l.state.lock().log.as_ref().is_some_and(|log| Arc::strong_count(log) == 1))
            .map(|(u, l)| (u.clone(), l.clone()))
            .collect();
        let Some(engine) = self.me.upgrade() else { return };
        for (user, local) in idle {
            let engine = engine.clone();
            tokio::spawn(async move {
                let _ops = engine.subscriptions.lock().await;
                {
                    let mut locals = engine.locals.lock();
                    let unused =
                        local.state.lock().log.as_ref().is_some_and(|log| Arc::strong_count(log) == 1);
                    if !(unused && locals.get(&user).is_some_and(|l| Arc::ptr_eq(l, &local))) {
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
