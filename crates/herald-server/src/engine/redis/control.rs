//! What Redis nodes share for operators (see [`crate::engine::nodes`]): node reports, per-user
//! presence and revocations, disconnect orders, and the active-runs index read as a list.
//!
//! Keys: `{prefix}:nodes` (a hash: node id → its JSON report; the hash expires when every node
//! stops reporting), and per user, under the user's hash tag so Redis Cluster keeps them in the
//! user's slot: `{prefix}:{user}:presence` (node id → `connections since_ms`) and
//! `{prefix}:{user}:revoked` (unix seconds; expires with the revocation). Disconnect orders go to
//! every node on the one channel `{prefix}:control` (rare messages, so one channel is plenty;
//! sharded pub/sub on a cluster, like the users' channels).

use super::{RedisEngine, engine_error};
use crate::engine::{ActiveRun, Control, EngineError, NodePresence, NodeReport};
use herald_protocol::UserId;
use redis::AsyncCommands;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::warn;

/// How long a user's presence hash outlives its last change (a crashed node's entries are
/// filtered out by its missing report long before).
const PRESENCE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Keeps the later of two revocations and the longer of two lifetimes, in one step.
const REVOKE_SCRIPT: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL') end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl RedisEngine {
    /// The channel every node listens on for orders.
    pub(super) fn control_channel(&self) -> String {
        format!("{}:control", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// An order arrived on the control channel: hand it to this node's [`crate::node`] task.
    pub(super) fn on_control(&self, payload: &[u8]) {
        match serde_json::from_slice::<Control>(payload) {
            Ok(order) => {
                let _ = self.control_tx.send(order);
            }
            Err(e) => warn!("unparseable order on the control channel: {e}"),
        }
    }

    /// Subscribes to the control channel again, until it works (a cluster dropped the sharded
    /// subscription: its slot moved, or its master failed).
    pub(super) fn resubscribe_control(&self) {
        let Some(engine) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            while let Err(e) = engine.subscriber.subscribe(&engine.control_channel()).await {
                warn!("control channel: subscribing again failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    pub(super) async fn broadcast_control(&self, control: &Control) -> Result<(), EngineError> {
        let payload = serde_json::to_string(control).expect("orders serialize");
        let mut con = self.commands.clone();
        // Sharded on a cluster, like the users' channels: the channel's shard carries it.
        redis::cmd(con.publish_command())
            .arg(self.control_channel())
            .arg(payload)
            .query_async::<()>(&mut con)
            .await
            .map_err(engine_error)
    }

    pub(super) async fn store_report(&self, report: &NodeReport, ttl: Duration) -> Result<(), EngineError> {
        let json = serde_json::to_string(report).expect("reports serialize");
        let mut con = self.commands.clone();
        redis::pipe()
            .hset(self.nodes_key(), &report.id, json)
            .ignore()
            .pexpire(self.nodes_key(), ttl.as_millis() as i64)
            .ignore()
            .query_async::<()>(&mut con)
            .await
            .map_err(engine_error)
    }

    pub(super) async fn reports(&self) -> Result<Vec<NodeReport>, EngineError> {
        let mut con = self.commands.clone();
        let all: Vec<(String, String)> = con.hgetall(self.nodes_key()).await.map_err(engine_error)?;
        let now = now_ms();
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (id, json) in all {
            match serde_json::from_str::<NodeReport>(&json) {
                Ok(r)
                    if now.saturating_sub(r.reported_at_ms) < crate::node::REPORT_TTL.as_millis() as u64 =>
                {
                    live.push(r)
                }
                _ => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _: Result<(), _> = con.hdel(self.nodes_key(), gone).await;
        }
        Ok(live)
    }

    pub(super) async fn store_presence(
        &self,
        user: &UserId,
        node: &str,
        here: Option<&NodePresence>,
    ) -> Result<(), EngineError> {
        let key = self.key(user, "presence");
        let mut con = self.commands.clone();
        match here {
            Some(p) => redis::pipe()
                .hset(&key, node, format!("{} {}", p.connections, p.since_ms))
                .ignore()
                .pexpire(&key, PRESENCE_TTL.as_millis() as i64)
                .ignore()
                .query_async::<()>(&mut con)
                .await
                .map_err(engine_error),
            None => con.hdel::<_, _, ()>(&key, node).await.map_err(engine_error),
        }
    }

    pub(super) async fn read_presence(&self, user: &UserId) -> Result<Vec<NodePresence>, EngineError> {
        let mut con = self.commands.clone();
        let all: Vec<(String, String)> =
            con.hgetall(self.key(user, "presence")).await.map_err(engine_error)?;
        Ok(all
            .into_iter()
            .filter_map(|(node, value)| {
                let (connections, since) = value.split_once(' ')?;
                Some(NodePresence {
                    node,
                    connections: connections.parse().ok()?,
                    since_ms: since.parse().ok()?,
                })
            })
            .collect())
    }

    pub(super) async fn store_revocation(
        &self,
        user: &UserId,
        before: u64,
        keep: Duration,
    ) -> Result<(), EngineError> {
        let mut con = self.commands.clone();
        redis::Script::new(REVOKE_SCRIPT)
            .key(self.key(user, "revoked"))
            .arg(before)
            .arg(keep.as_millis().max(1) as u64)
            .invoke_async::<()>(&mut con)
            .await
            .map_err(engine_error)
    }

    pub(super) async fn read_revocation(&self, user: &UserId) -> Result<Option<u64>, EngineError> {
        let mut con = self.commands.clone();
        con.get(self.key(user, "revoked")).await.map_err(engine_error)
    }

    /// The active-runs index as a list: newest activity first, or (with `silent_for`) the runs
    /// silent that long, longest silent first.
    pub(super) async fn list_active_runs(
        &self,
        silent_for: Duration,
        limit: usize,
    ) -> Result<(usize, Vec<ActiveRun>), EngineError> {
        let key = self.active_runs_key();
        let mut con = self.commands.clone();
        let cutoff = now_ms().saturating_sub(silent_for.as_millis() as u64);
        let (total, members): (usize, Vec<(String, u64)>) = if silent_for.is_zero() {
            let total: usize = con.zcard(&key).await.map_err(engine_error)?;
            let members = if limit == 0 {
                Vec::new()
            } else {
                con.zrevrange_withscores(&key, 0, limit as isize - 1).await.map_err(engine_error)?
            };
            (total, members)
        } else {
            let total: usize = con.zcount(&key, "-inf", cutoff).await.map_err(engine_error)?;
            let members = if limit == 0 {
                Vec::new()
            } else {
                con.zrangebyscore_limit_withscores(&key, "-inf", cutoff, 0, limit as isize)
                    .await
                    .map_err(engine_error)?
            };
            (total, members)
        };
        let runs = members
            .into_iter()
            .filter_map(|(member, last_event_ms)| {
                let (user, run_id) = member.split_once('\n')?;
                Some(ActiveRun { user: UserId::parse(user).ok()?, run_id: run_id.to_owned(), last_event_ms })
            })
            .collect();
        Ok((total, runs))
    }
}
