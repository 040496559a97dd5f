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

mod append;
mod control;
mod fanout;
pub mod wire;

use super::{ActiveRun, Control, Engine, EngineError, History, NodePresence, NodeReport, RunScan};
use crate::log::{LogEntry, Retention, UserLog};
use async_trait::async_trait;
use herald_protocol::{EventInput, Receipt, UserId};
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Value};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tracing::info;

/// How long a request to Redis may take before the engine reports itself unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Engine over a shared Redis. See the module docs.
pub struct RedisEngine {
    prefix: String,
    retention: Retention,
    commands: ConnectionManager,
    subscriber: ConnectionManager,
    script: redis::Script,
    /// Redis Cluster: each append script touches one user's slot only.
    one_user_per_script: bool,
    locals: Mutex<HashMap<UserId, Arc<fanout::Local>>>,
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
        let unavailable = |e: redis::RedisError| EngineError::caused(format!("redis at {}", redact(url)), e);
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

    fn ticket_key(&self, hash: &str) -> String {
        format!("{}:ticket:{hash}", self.prefix)
    }
}

/// A failed Redis request, as the engine reports it (503 `not_ready` to publishers).
fn engine_error(e: impl std::error::Error + Send + Sync + 'static) -> EngineError {
    EngineError::caused("redis", e)
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

    async fn append(&self, events: Vec<EventInput>) -> Result<Vec<Receipt>, super::AppendError> {
        self.append_batch(&events).await
    }

    async fn open_log(&self, user: &UserId) -> Result<Arc<UserLog>, EngineError> {
        self.open_local(user).await
    }

    async fn refresh(&self, user: &UserId, log: &Arc<UserLog>) -> Result<(), EngineError> {
        self.refresh_local(user, log).await
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
        let (current, seq, oldest, range): (Option<String>, Option<u64>, Value, Value) = redis::pipe()
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
        let first_retained = wire::decode_range(oldest).map_err(engine_error)?.first().map(|e| e.seq);
        let same_epoch = epoch.is_none_or(|e| e == current);
        let served = same_epoch && after <= seq && first_retained.is_none_or(|f| after + 1 >= f);
        let (reset, entries) = if served {
            (false, range)
        } else {
            (true, con.xrange_count(&log, "-", "+", limit).await.map_err(engine_error)?)
        };
        let now = Instant::now();
        let events = wire::decode_range(entries)
            .map_err(engine_error)?
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
        Ok(History { epoch: current, seq, reset, events })
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
        let ping = |con: &ConnectionManager| {
            let mut con = con.clone();
            async move {
                let ping = redis::cmd("PING");
                let reply = tokio::time::timeout(RESPONSE_TIMEOUT, ping.query_async::<Value>(&mut con)).await;
                matches!(reply, Ok(Ok(_)))
            }
        };
        ping(&self.commands).await && ping(&self.subscriber).await
    }

    fn sweep(&self) {
        self.forget_idle();
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
