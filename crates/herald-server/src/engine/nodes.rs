//! What nodes share beyond logs, for operators: each node's heartbeat report, which nodes hold a
//! user's connections, disconnect orders, and active runs as a list.
//!
//! The memory engine is one node, so "every node" is this one: it keeps nothing here but
//! revocations and runs. The Redis engine stores reports and presence in Redis and carries
//! disconnect orders to every node over pub/sub.

use herald_protocol::UserId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one node says about itself, heartbeated so that any node can list them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's id (random per process start).
    pub id: String,
    /// Herald version the node runs.
    pub version: String,
    /// When the node started, unix milliseconds.
    pub started_at_ms: u64,
    /// When this report was made, unix milliseconds.
    pub reported_at_ms: u64,
    /// Open client connections.
    pub connections: usize,
    /// Users with at least one open connection on this node.
    pub users: usize,
    /// Events appended through this node per second (last 10 s).
    pub published_per_s: f64,
    /// Event frames written by this node per second (last 10 s).
    pub delivered_per_s: f64,
    /// Publishes this node refused, per run rule, over the last minutes.
    pub rejected: BTreeMap<String, u64>,
}

/// A user's open connections on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePresence {
    /// The node.
    pub node: String,
    /// Open connections of the user there.
    pub connections: usize,
    /// When the oldest of them opened, unix milliseconds.
    pub since_ms: u64,
}

/// An order for every node, sent by the node that took the API request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Close every socket of `user` with 4003.
    Disconnect {
        /// Whose sockets (a user id; a node ignores an order whose id does not parse).
        user: String,
        /// The operator's reason (for the close frame and logs).
        reason: String,
        /// The node that took the request (it has already acted).
        origin: String,
    },
}

/// A started, not ended run, with its last activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRun {
    /// Owner of the run.
    pub user: UserId,
    /// The run.
    pub run_id: String,
    /// Its last event (other than `run_stalled`), unix milliseconds.
    pub last_event_ms: u64,
}
