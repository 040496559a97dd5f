//! The Redis engine: many Herald nodes share one Redis (or Redis Cluster); users and backends
//! may use any node.
//!
//! Per user, four keys hash-tagged by the user so Redis Cluster keeps them on one shard:
//! `{prefix}:{user}:meta` (epoch, seq), `:log` (a stream whose entry ids are `<seq>-0`), `:ids`
//! (publisher ids → seq) and `:runs` (run states). The engine is split along its seams:
//!
//! - [`append`]: a batch is planned by the shared pure planner ([`crate::engine::plan`]) from
//!   state read from Redis, then written by one Lua script ([`append.lua`](append.lua)) that
//!   compares what it was validated against, takes the next seqs, adds the stream entries,
//!   records the ids and publishes the user's new events in one message — all or nothing.
//! - [`fanout`]: each node keeps, for the users it serves, a local [`UserLog`] fed by the users'
//!   channels; its connections read from it exactly as with the memory engine.
//! - [`wire`]: the one codec for the script's arguments and reply, stream entries and messages.
//! - [`compact`]: each active run's frames (`:runs:<run_id>`, written by the append script),
//!   from which a node rebuilds the runs' compacted state when it loads a user.

mod append;
mod compact;
mod conn;
mod control;
mod fanout;
pub mod replicas;
pub mod wire;

use super::{ActiveRun, Control, Engine, EngineError, History, NodePresence, NodeReport, RunScan, new_epoch};
use crate::log::{LogEntry, Retention, UserLog};
use async_trait::async_trait;
use conn::{Commands, Subscriber};
use foldhash::{HashMap, HashMapExt};
use herald_protocol::{EventInput, Receipt, UserId};
use parking_lot::Mutex;
use redis::AsyncCommands;
use redis::Value;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Renews a log's epoch if it is still the one expected (KEYS: meta; ARGV: old, new).
const EPOCH_SCRIPT: &str = "if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then \
     redis.call('HSET', KEYS[1], 'epoch', ARGV[2]) end return 0";

/// How the engine talks to Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// Redis URL; with `cluster`, comma-separated seed node URLs.
    pub url: String,
    /// Prefix of every key, so deployments (and tests) can share one Redis.
    pub prefix: String,
    /// Redis Cluster: a cluster client, sharded pub/sub, one append script per user.
    pub cluster: bool,
    /// Replicas that must confirm an append (`WAIT`) before its receipt is sent; 0: none.
    pub wait_replicas: u32,
    /// Cap on the retained bytes of this node's copies of its users' logs (0: none): over it, the
    /// least recently active copies drop their events, read back from Redis when needed.
    pub max_local_bytes: usize,
}

/// Engine over a shared Redis. See the module docs.
pub struct RedisEngine {
    prefix: String,
    retention: Retention,
    commands: Commands,
    subscriber: Subscriber,
    wait_replicas: u32,
    max_local_bytes: usize,
    script: redis::Script,
    read_script: redis::Script,
    epoch_script: redis::Script,
    /// Redis Cluster: each append script touches one user's slot only.
    one_user_per_script: bool,
    locals: Mutex<HashMap<UserId, Arc<fanout::Local>>>,
    /// When this node last wrote each active run's activity to the index (ms).
    indexed: Mutex<HashMap<String, u64>>,
    /// Serializes SUBSCRIBE/UNSUBSCRIBE so an unsubscribe of a user going idle cannot undo the
    /// subscribe of a connection arriving at the same moment.
    subscriptions: tokio::sync::Mutex<()>,
    /// Orders from the control channel, for this node's [`crate::node`] task.
    control_tx: tokio::sync::broadcast::Sender<Control>,
    /// Events appended through this node per active run, to compact the runs' lists now and then.
    appended: compact::Appended,
    /// Run states as this node last stored them: appends to known runs skip the read.
    known_runs: append::KnownRuns,
    /// A check of the cluster connections' maps is under way (see `renew_stale_cluster_connections`).
    renewing: std::sync::atomic::AtomicBool,
    /// The masters serving slots at the last sweep (cluster only), to notice a failover.
    masters: Mutex<Option<Vec<String>>>,
    me: Weak<RedisEngine>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisEngine {
    /// Connects to one Redis at `url` (no replica confirmation): see [`RedisEngine::connect_with`].
    pub async fn connect(
        url: &str,
        prefix: &str,
        retention: Retention,
        cluster: bool,
    ) -> Result<Arc<Self>, EngineError> {
        let options = RedisOptions {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            cluster,
            wait_replicas: 0,
            max_local_bytes: 0,
        };
        Self::connect_with(&options, retention).await
    }

    /// Connects (two connections: commands, and RESP3 pub/sub that resubscribes by itself) and
    /// starts listening for published events.
    ///
    /// On a cluster, a batch spanning users is written with one script call per user (a Redis
    /// Cluster script may only touch one slot); otherwise with one call, all or nothing.
    pub async fn connect_with(
        options: &RedisOptions,
        retention: Retention,
    ) -> Result<Arc<Self>, EngineError> {
        let pushes = Pushes::default();
        let (commands, subscriber) = conn::connect(&options.url, options.cluster, pushes.clone())
            .await
            .map_err(|e| EngineError::caused(format!("redis at {}", redact(&options.url)), e))?;
        let engine = Arc::new_cyclic(|me| RedisEngine {
            prefix: options.prefix.clone(),
            retention,
            commands,
            subscriber,
            wait_replicas: options.wait_replicas,
            max_local_bytes: options.max_local_bytes,
            script: redis::Script::new(include_str!("append.lua")),
            read_script: redis::Script::new(include_str!("read.lua")),
            epoch_script: redis::Script::new(EPOCH_SCRIPT),
            one_user_per_script: options.cluster,
            locals: Mutex::new(HashMap::new()),
            indexed: Mutex::new(HashMap::new()),
            subscriptions: tokio::sync::Mutex::new(()),
            control_tx: tokio::sync::broadcast::channel(64).0,
            appended: compact::Appended::default(),
            known_runs: append::KnownRuns::default(),
            renewing: std::sync::atomic::AtomicBool::new(false),
            masters: Mutex::new(None),
            me: me.clone(),
        });
        // Loaded up front (on every master of a cluster); a server that lost them (restart,
        // failover) gets them again on its first NOSCRIPT.
        for script in [&engine.script, &engine.read_script] {
            let mut con = engine.commands.clone();
            script.prepare_invoke().load_async(&mut con).await.map_err(engine_error)?;
        }
        let _ = pushes.0.set(Arc::downgrade(&engine));
        engine.subscriber.subscribe(&engine.control_channel()).await.map_err(engine_error)?;
        info!(prefix = options.prefix, cluster = options.cluster, "redis engine connected");
        engine.warn_if_replicas_short().await;
        Ok(engine)
    }

    /// The masters with fewer connected replicas than `--redis-wait-replicas` (none when it is
    /// 0): every publish to their users is refused until enough replicas connect.
    pub async fn masters_short_of_replicas(&self) -> Result<Vec<replicas::MasterReplicas>, EngineError> {
        if self.wait_replicas == 0 {
            return Ok(Vec::new());
        }
        replicas::short_of(&self.commands, self.wait_replicas).await.map_err(engine_error)
    }

    /// Says at startup, with what to do, when `--redis-wait-replicas` cannot be met: otherwise
    /// the node looks healthy and refuses every publish.
    async fn warn_if_replicas_short(&self) {
        match self.masters_short_of_replicas().await {
            Ok(short) => {
                for m in short {
                    warn!(
                        master = %m.master,
                        replicas = m.replicas,
                        wait_replicas = self.wait_replicas,
                        "a Redis master has fewer connected replicas than --redis-wait-replicas: every \
                         publish to its users will get 503 until enough replicas connect; add replicas \
                         or lower --redis-wait-replicas"
                    );
                }
            }
            Err(e) => warn!("could not count the Redis masters' replicas for --redis-wait-replicas: {e}"),
        }
    }

    fn key(&self, user: &UserId, name: &str) -> String {
        let [key] = self.keys(user, [name]);
        key
    }

    /// Several keys of `user` ([`RedisEngine::key`]), built without a `format!` each: the
    /// append path builds six per user per call.
    fn keys<const N: usize>(&self, user: &UserId, names: [&str; N]) -> [String; N] {
        let (prefix, user) = (self.prefix.as_str(), user.as_str());
        names.map(|name| {
            let mut key = String::with_capacity(prefix.len() + user.len() + name.len() + 4);
            for part in [prefix, ":{", user, "}:", name] {
                key.push_str(part);
            }
            key
        })
    }

    /// Reads `user`'s log atomically: its state and up to `limit` (0: all) entries after
    /// `after`. With `open`, a missing log is created (new epoch) and its meta kept a TTL.
    async fn read_log(
        &self,
        user: &UserId,
        after: u64,
        limit: usize,
        open: bool,
    ) -> Result<wire::LogRead, EngineError> {
        let mut invocation = self.read_script.prepare_invoke();
        invocation
            .key(self.key(user, "meta"))
            .key(self.key(user, "log"))
            .arg(after)
            .arg(limit)
            .arg(if open { new_epoch() } else { String::new() })
            .arg((self.retention.ttl.as_millis() as u64 * 5 / 4).max(1000))
            .arg(self.retention.max_events);
        let mut con = self.commands.clone();
        let reply: Value = invocation.invoke_async(&mut con).await.map_err(engine_error)?;
        let mut read = wire::decode_read(reply).map_err(engine_error)?;
        // The script trims by age only now and then: what is older than the TTL is gone here.
        let cutoff = now_ms().saturating_sub(self.retention.ttl.as_millis() as u64);
        let expired = read.events.iter().take_while(|e| e.appended_ms < cutoff).count();
        if expired > 0 {
            read.events.drain(..expired);
            read.first_retained = Some(read.events.first().map_or(read.seq + 1, |e| e.seq));
        }
        Ok(read)
    }

    /// Replaces `user`'s epoch `old` with a new one (if it is still `old`), so that no cursor
    /// of the old epoch resumes across events the shared log lost.
    async fn renew_epoch(&self, user: &UserId, old: &str) -> Result<(), EngineError> {
        let mut con = self.commands.clone();
        let mut invocation = self.epoch_script.prepare_invoke();
        invocation.key(self.key(user, "meta")).arg(old).arg(new_epoch());
        invocation.invoke_async::<()>(&mut con).await.map_err(engine_error)
    }

    fn ticket_key(&self, hash: &str) -> String {
        format!("{}:ticket:{hash}", self.prefix)
    }
}

/// The node's clock, ms since the epoch (records' times and the script's retention by age).
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Hands the pub/sub connection's messages to the engine as they are read, on the connection's
/// own task: no channel and no wakeup of another task per message. (Handling one is quick and
/// never waits: a log append, or a spawned catch-up.)
#[derive(Clone, Default)]
struct Pushes(Arc<std::sync::OnceLock<Weak<RedisEngine>>>);

impl redis::aio::AsyncPushSender for Pushes {
    fn send(&self, info: redis::PushInfo) -> Result<(), redis::aio::SendError> {
        // Before the engine exists nothing is subscribed yet; after it is gone nothing listens.
        if let Some(engine) = self.0.get().and_then(Weak::upgrade) {
            engine.on_push(info);
        }
        Ok(())
    }
}

/// A failed Redis request, as the engine reports it (503 `not_ready` to publishers).
fn engine_error(e: impl std::error::Error + Send + Sync + 'static) -> EngineError {
    EngineError::caused("redis", e)
}

/// `url` (or comma-separated urls) without passwords, for messages.
fn redact(url: &str) -> String {
    let one = |url: &str| match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    };
    url.split(',').map(one).collect::<Vec<_>>().join(",")
}

#[async_trait]
impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn append(&self, events: Vec<EventInput>) -> Result<Vec<Receipt>, super::AppendError> {
        self.append_batch(&events).await
    }

    async fn open_log(&self, user: &UserId) -> Result<Arc<UserLog>, EngineError> {
        self.open_local(user).await
    }

    async fn refresh(&self, user: &UserId, log: &Arc<UserLog>) -> Result<(), EngineError> {
        self.refresh_local(user, log).await
    }

    async fn recall(&self, user: &UserId, log: &Arc<UserLog>, after: u64) -> Result<(), EngineError> {
        self.recall_local(user, log, after).await
    }

    async fn history(
        &self,
        user: &UserId,
        after: u64,
        epoch: Option<&str>,
        limit: usize,
    ) -> Result<History, EngineError> {
        let read = self.read_log(user, after, limit, false).await?;
        let current = read.epoch.unwrap_or_default();
        let same_epoch = epoch.is_none_or(|e| e == current);
        let served = same_epoch && after <= read.seq && read.first_retained.is_none_or(|f| after + 1 >= f);
        let (reset, events) = if served {
            (false, read.events)
        } else {
            (true, self.read_log(user, 0, limit, false).await?.events)
        };
        let now = Instant::now();
        let events = events
            .into_iter()
            .map(|e| {
                Arc::new(LogEntry {
                    seq: e.seq,
                    id: e.id,
                    run_id: e.run_id,
                    kind: e.kind,
                    frame: e.frame,
                    end_offset: 0,
                    appended_at: now,
                })
            })
            .collect();
        Ok(History { epoch: current, seq: read.seq, reset, events })
    }

    async fn scan_runs(&self, stall_after: Duration) -> Result<RunScan, EngineError> {
        self.scan_active_runs(stall_after).await
    }

    async fn put_ticket(&self, hash: &str, user: &UserId, ttl: Duration) -> Result<(), EngineError> {
        let mut con = self.commands.clone();
        con.set_ex::<_, _, ()>(self.ticket_key(hash), user.as_str(), ttl.as_secs().max(1))
            .await
            .map_err(engine_error)
    }

    async fn take_ticket(&self, hash: &str) -> Result<Option<UserId>, EngineError> {
        let mut con = self.commands.clone();
        let user: Option<String> = con.get_del(self.ticket_key(hash)).await.map_err(engine_error)?;
        Ok(user.and_then(|u| UserId::parse(&u).ok()))
    }

    async fn is_ready(&self) -> bool {
        // Both connections: appends need the first, live delivery the second.
        self.commands.ping().await && self.subscriber.ping().await
    }

    fn sweep(&self) {
        self.forget_idle();
        self.enforce_local_cap();
        self.prune_index_marks();
        self.renew_stale_cluster_connections();
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
}

impl RedisEngine {
    /// True when the masters serving slots differ from those of the last call (never on the
    /// first call, nor when the cluster does not answer: the next sweep asks again).
    async fn masters_changed(&self) -> bool {
        let Ok(Ok(now)) =
            tokio::time::timeout(conn::RESPONSE_TIMEOUT, replicas::masters(&self.commands)).await
        else {
            return false;
        };
        let before = self.masters.lock().replace(now.clone());
        before.is_some_and(|before| before != now)
    }

    /// On a cluster, with every sweep: a connection whose map of the cluster has a master that
    /// no longer answers is made anew (see [`conn::Renewable`]) — after a failover that its own
    /// requests never revealed. A new subscriber holds no subscriptions: everyone catches up.
    fn renew_stale_cluster_connections(&self) {
        use std::sync::atomic::Ordering;
        if !self.subscriber.is_cluster() || self.renewing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(engine) = self.me.upgrade() else {
            self.renewing.store(false, Ordering::Release);
            return;
        };
        tokio::spawn(async move {
            // (name, connection, a subscriber: subscribe everything again once renewed)
            let connections = [
                ("commands", engine.commands.renewable(), false),
                ("pub/sub", engine.subscriber.renewable(), true),
            ];
            let mut caught_up = false;
            for (which, connection, subscriber) in connections {
                let Some(connection) = connection else { continue };
                match connection.renew_if_stale().await {
                    Ok(true) => {
                        info!("redis cluster: a master stopped answering; {which} connection made anew");
                        if subscriber {
                            engine.catch_up_everyone();
                            caught_up = true;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => warn!("redis cluster: could not connect again yet: {e}"),
                }
            }
            // A dead master sends no SUNSUBSCRIBE for the subscriptions it held, and redis-rs
            // may have redrawn its map (without them) before the check above asked the dead
            // one: when the masters serving slots changed since the last sweep, every served
            // user subscribes again on the slot's owner now and reads what it missed.
            if engine.masters_changed().await && !caught_up {
                info!(
                    "redis cluster: the masters serving slots changed; subscribing every served user again"
                );
                engine.catch_up_everyone();
            }
            engine.renewing.store(false, Ordering::Release);
        });
    }
}
