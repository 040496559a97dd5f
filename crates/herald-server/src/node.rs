//! This node among the others: its identity, the report it heartbeats, the presence of its users,
//! and the disconnect orders it carries out.
//!
//! Everything an operator sees across nodes goes through the engine (Redis for many nodes), and
//! this node's own part is always read first-hand: a node never trusts its own stale report.

use crate::AppState;
use crate::engine::{Control, NodePresence, NodeReport};
use foldhash::HashSet;
use herald_protocol::UserId;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often the node reports itself.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// A report older than this means the node is gone.
pub const REPORT_TTL: Duration = Duration::from_secs(10);

/// Seconds the rates in a report average over.
const RATE_WINDOW_S: u64 = 10;

/// Who this node is.
#[derive(Debug, Clone)]
pub struct Node {
    /// Random per process start, so a restarted node is a new node.
    pub id: String,
    /// When it started.
    pub started_at: SystemTime,
}

impl Node {
    /// A new identity.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self { id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(), started_at: SystemTime::now() }
    }
}

/// Unix milliseconds of `at`.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// This node's report, now.
pub fn report(state: &AppState) -> NodeReport {
    let (users, connections) = state.registry.online();
    let rates = crate::rates::snapshot(RATE_WINDOW_S);
    NodeReport {
        id: state.node.id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_ms: unix_ms(state.node.started_at),
        reported_at_ms: unix_ms(SystemTime::now()),
        connections,
        users,
        published_per_s: rates.published_per_s,
        delivered_per_s: rates.delivered_per_s,
        rejected: rates.rejected,
    }
}

/// Every live node's report, this node's fresh one first.
pub async fn all_reports(state: &AppState) -> Result<Vec<NodeReport>, crate::engine::EngineError> {
    let mut reports = vec![report(state)];
    let now = unix_ms(SystemTime::now());
    let others = state.engine.nodes().await?;
    reports.extend(others.into_iter().filter(|r| {
        r.id != state.node.id && now.saturating_sub(r.reported_at_ms) < REPORT_TTL.as_millis() as u64
    }));
    Ok(reports)
}

/// The user's connections on this node.
pub fn local_presence(state: &AppState, user: &UserId) -> Option<NodePresence> {
    let (connections, since) = state.registry.get(user)?.presence()?;
    Some(NodePresence { node: state.node.id.clone(), connections, since_ms: unix_ms(since) })
}

/// Closes the user's sockets on this node; returns how many were open.
pub fn disconnect_here(state: &AppState, user: &UserId, reason: &str) -> usize {
    let closed = state.registry.get(user).map_or(0, |m| m.disconnect(reason));
    if closed > 0 {
        info!(user_id = %user, closed, "disconnected by an operator");
    }
    closed
}

/// Runs until `closed` is cancelled: heartbeats the report, records presence changes, carries
/// out other nodes' disconnect orders.
///
/// The server cancels `closed` once the drain closed its sockets: the presence changes those
/// closes queued are recorded before this returns, so a node that drains (a deploy) takes its
/// presence records out of the engine instead of leaving one per user it served.
pub async fn run(state: Arc<AppState>, changes: Arc<PresenceChanges>, closed: CancellationToken) {
    let mut every = tokio::time::interval(REPORT_EVERY);
    let mut control = state.engine.control();
    loop {
        tokio::select! {
            _ = closed.cancelled() => {
                for user in changes.take() {
                    record_presence(&state, &user).await;
                }
                return;
            }
            _ = every.tick(), if !state.shutdown.is_cancelled() => {
                if let Err(e) = state.engine.report_node(&report(&state), REPORT_TTL).await {
                    debug!("node report not stored: {e}");
                }
            }
            users = changes.next() => {
                for user in users {
                    record_presence(&state, &user).await;
                }
            }
            order = next_order(&mut control) => match order {
                Some(Control::Disconnect { user, reason, origin }) if origin != state.node.id => {
                    match UserId::parse(&user) {
                        Ok(user) => { disconnect_here(&state, &user, &reason); }
                        Err(e) => warn!("disconnect order for an invalid user id: {e}"),
                    }
                }
                Some(_) => {}
                None => control = None,
            },
        }
    }
}

/// Users whose connections on this node changed since the node last recorded them.
///
/// A set, not a queue: a user whose tabs open and close a hundred times while the engine is
/// slow to answer is recorded once, as things are when the writer gets to it, so what waits is
/// bounded by the users on the node, not by how often they reconnect.
#[derive(Debug, Default)]
pub struct PresenceChanges {
    pending: Mutex<HashSet<UserId>>,
    added: Notify,
}

impl PresenceChanges {
    /// Notes that `user`'s connections changed.
    pub fn mark(&self, user: &UserId) {
        if self.pending.lock().insert(user.clone()) {
            self.added.notify_one();
        }
    }

    /// The users marked since the last call, waiting for one if there are none.
    pub async fn next(&self) -> Vec<UserId> {
        loop {
            let users = self.take();
            if !users.is_empty() {
                return users;
            }
            self.added.notified().await;
        }
    }

    /// The users marked since the last call (maybe none).
    pub fn take(&self) -> Vec<UserId> {
        std::mem::take(&mut *self.pending.lock()).into_iter().collect()
    }
}

/// Records `user`'s connections on this node as they are now (none: the record is removed).
async fn record_presence(state: &AppState, user: &UserId) {
    let here = local_presence(state, user);
    if let Err(e) = state.engine.put_presence(user, &state.node.id, here.as_ref()).await {
        debug!(user_id = %user, "presence not recorded: {e}");
    }
}

/// The next order, or never without a control channel. `None` when the channel closed.
async fn next_order(control: &mut Option<tokio::sync::broadcast::Receiver<Control>>) -> Option<Control> {
    use tokio::sync::broadcast::error::RecvError;
    let Some(rx) = control else { return std::future::pending().await };
    loop {
        match rx.recv().await {
            Ok(order) => return Some(order),
            Err(RecvError::Lagged(n)) => warn!("{n} control orders were missed"),
            Err(RecvError::Closed) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[tokio::test]
    async fn a_user_marked_many_times_before_the_writer_looks_is_recorded_once() {
        let changes = PresenceChanges::default();
        for _ in 0..100 {
            changes.mark(&user("ann"));
        }
        changes.mark(&user("bob"));
        let mut users = changes.next().await;
        users.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(users, [user("ann"), user("bob")]);
        assert!(changes.take().is_empty(), "taken once");
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_a_mark() {
        let changes = Arc::new(PresenceChanges::default());
        let writer = tokio::spawn({
            let changes = changes.clone();
            async move { changes.next().await }
        });
        tokio::task::yield_now().await;
        changes.mark(&user("cy"));
        let users = tokio::time::timeout(Duration::from_secs(5), writer).await.expect("woken").unwrap();
        assert_eq!(users, [user("cy")]);
    }
}
