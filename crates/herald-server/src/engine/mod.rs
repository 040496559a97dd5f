//! Engines: where a user's log lives and how appends reach every node's connections.
//!
//! One trait, [`Engine`], with one implementation per file: [`memory`] for a single node, and
//! (later) Redis for many. An engine owns three things per user: the seq counter and epoch, the
//! idempotency keys, and the run states — and it changes them in one atomic step per append, so
//! two publishers racing on one user can neither reuse a seq nor both break a run rule.

pub mod memory;
pub mod nodes;
pub mod plan;
pub mod redis;

use crate::frame::Frame;
use crate::log::{LogEntry, UserLog};
use async_trait::async_trait;
use herald_protocol::{EventInput, Receipt, RunRuleError, UserId};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use memory::MemoryEngine;
pub use nodes::{ActiveRun, Control, NodePresence, NodeReport};
pub use redis::RedisEngine;

/// The engine cannot serve the request now (e.g. Redis is unreachable). Nothing was stored.
#[derive(Debug, Clone, thiserror::Error)]
#[error("engine unavailable: {message}")]
pub struct EngineError {
    message: String,
    /// What failed underneath (a Redis error, a malformed reply), kept for logs.
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl EngineError {
    /// An error with no underlying cause.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), source: None }
    }

    /// An error caused by `source`; the message says what was being done.
    pub fn caused(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let message = format!("{}: {source}", message.into());
        Self { message, source: Some(Arc::new(source)) }
    }
}

/// Why an append was refused. Nothing of the batch was stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// An event broke a run rule; `index` is its position in the batch.
    #[error("{}{source}", index.map(|i| format!("events[{i}]: ")).unwrap_or_default())]
    RunRule {
        /// Position in the batch (`None` for a single event).
        index: Option<usize>,
        /// The broken rule.
        source: RunRuleError,
    },
    /// The engine could not store the events.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Retained events of one user, for the history API.
#[derive(Debug)]
pub struct History {
    /// The log's epoch.
    pub epoch: String,
    /// Seq of the last appended event.
    pub seq: u64,
    /// True when events after the requested cursor are no longer retained (or the epoch differs):
    /// `events` then starts at the oldest retained event.
    pub reset: bool,
    /// The events, oldest first.
    pub events: Vec<Arc<LogEntry>>,
}

/// A run that has been silent for at least the stall time and is not yet reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalledRun {
    /// Owner of the run.
    pub user: UserId,
    /// The run.
    pub run_id: String,
    /// How long since its last event.
    pub silent_for: Duration,
    /// Identifies this silence (its last activity time in ms): the `run_stalled` event's id is
    /// derived from it, so nodes that detect the same silence append it once.
    pub marker: u64,
}

/// What [`Engine::scan_runs`] found.
#[derive(Debug, Clone, Default)]
pub struct RunScan {
    /// Runs started and not ended.
    pub active: usize,
    /// Active runs silent for the stall time, not yet reported stalled.
    pub stalled: Vec<StalledRun>,
}

/// Where user logs live. See the module docs for what an implementation must guarantee.
#[async_trait]
pub trait Engine: std::fmt::Debug + Send + Sync + 'static {
    /// Short name for logs and metrics (`memory`, `redis`).
    fn name(&self) -> &'static str;

    /// Appends a validated batch (any users) all-or-nothing; receipts in batch order.
    ///
    /// An `id` already in a user's log (or earlier in the batch) is not appended again: its first
    /// receipt comes back with `duplicate: true`.
    async fn append(&self, events: Vec<EventInput>) -> Result<Vec<Receipt>, AppendError>;

    /// This node's live view of a user's log, kept current for as long as it is held.
    async fn open_log(&self, user: &UserId) -> Result<Arc<UserLog>, EngineError>;

    /// Brings this node's view of `user`'s log up to date with the shared log, for a client whose
    /// cursor is ahead of it (it saw newer events through another node). No-op for one node.
    async fn refresh(&self, _user: &UserId, _log: &Arc<UserLog>) -> Result<(), EngineError> {
        Ok(())
    }

    /// Puts back into this node's view of `user`'s log the events after `after` that it dropped
    /// while the shared log still has them (a node's memory cap), for a client resuming from
    /// `after`. No-op for one node, whose log is the only one.
    async fn recall(&self, _user: &UserId, _log: &Arc<UserLog>, _after: u64) -> Result<(), EngineError> {
        Ok(())
    }

    /// Retained events after `after` in `epoch` (any epoch when `None`), at most `limit`.
    async fn history(
        &self,
        user: &UserId,
        after: u64,
        epoch: Option<&str>,
        limit: usize,
    ) -> Result<History, EngineError>;

    /// Stores a ticket's hash for `user` until `ttl` passes.
    async fn put_ticket(&self, hash: &str, user: &UserId, ttl: Duration) -> Result<(), EngineError>;

    /// Takes (and deletes) a ticket: `Some(user)` exactly once while it is valid.
    async fn take_ticket(&self, hash: &str) -> Result<Option<UserId>, EngineError>;

    /// Counts active runs and finds the ones silent for at least `stall_after`.
    async fn scan_runs(&self, stall_after: Duration) -> Result<RunScan, EngineError>;

    /// True while the engine can store events.
    async fn is_ready(&self) -> bool;

    /// Periodic upkeep: expire events past their TTL, forget idle users. Cheap when idle.
    fn sweep(&self) {}

    /// Active runs silent for at least `silent_for` (zero: all), most recently active first —
    /// or, with a non-zero `silent_for`, longest silent first — at most `limit`, with the count
    /// of all that match.
    async fn active_runs(
        &self,
        silent_for: Duration,
        limit: usize,
    ) -> Result<(usize, Vec<ActiveRun>), EngineError>;

    /// Refuses `user`'s tokens issued before `before` (unix seconds) from now on, for `keep`
    /// (tokens outliving that are not refused). A later call with an earlier time keeps the
    /// later one.
    async fn revoke(&self, user: &UserId, before: u64, keep: Duration) -> Result<(), EngineError>;

    /// The user's revocation in effect: tokens issued before it are refused.
    async fn revoked_before(&self, user: &UserId) -> Result<Option<u64>, EngineError>;

    /// Sends an order to every other node. One node (the default) has no one to tell.
    async fn broadcast(&self, _control: &Control) -> Result<(), EngineError> {
        Ok(())
    }

    /// Orders other nodes sent, for this node to carry out; `None` on a single node.
    fn control(&self) -> Option<tokio::sync::broadcast::Receiver<Control>> {
        None
    }

    /// Stores this node's heartbeat report for `ttl` (a node that stops reporting drops out).
    async fn report_node(&self, _report: &NodeReport, _ttl: Duration) -> Result<(), EngineError> {
        Ok(())
    }

    /// Every node's latest report (this node's included, when it has reported).
    async fn nodes(&self) -> Result<Vec<NodeReport>, EngineError> {
        Ok(Vec::new())
    }

    /// Records `user`'s connections on `node` (`None`: none left).
    async fn put_presence(
        &self,
        _user: &UserId,
        _node: &str,
        _here: Option<&NodePresence>,
    ) -> Result<(), EngineError> {
        Ok(())
    }

    /// `user`'s connections per node as recorded by [`Engine::put_presence`], any node that still
    /// reports; empty on a single node, which knows its own connections first-hand.
    async fn presence(&self, _user: &UserId) -> Result<Vec<NodePresence>, EngineError> {
        Ok(Vec::new())
    }
}

/// The start of every event frame, up to its seq. Frames are this, the seq, then the tail that
/// [`FrameEncoder::tail`] writes — so the Redis script can put the seq in without parsing JSON.
pub const FRAME_HEAD: &str = r#"{"type":"event","seq":"#;

/// Encodes the frames of one append, each once, whatever the number of connections it goes to.
///
/// The events of one append share its timestamp, formatted once here. Each frame is built in
/// a scratch buffer kept for the whole append and copied out at its exact size: a retained event
/// holds no spare capacity, and no frame's buffer regrows while it is written.
#[derive(Debug)]
pub struct FrameEncoder {
    ts: String,
    scratch: Vec<u8>,
}

impl FrameEncoder {
    /// An encoder for events appended at `at`.
    pub fn new(at: SystemTime) -> Self {
        Self { ts: humantime::format_rfc3339_millis(at).to_string(), scratch: Vec::with_capacity(512) }
    }

    /// An event's frame with its seq, serialized from borrowed fields (no copy of `data`); the
    /// output is exactly the `ServerFrame::Event` encoding clients parse, which a test below holds
    /// it to.
    pub fn frame(&mut self, seq: u64, id: &str, event: &EventInput) -> Frame {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        out.extend_from_slice(FRAME_HEAD.as_bytes());
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        self.tail(&mut out, id, event);
        let frame = Frame::new(std::str::from_utf8(&out).expect("serde_json writes UTF-8"));
        self.scratch = out;
        frame
    }

    /// Appends the part of an event's frame after its seq to `out`: `,"id":…,"ts":…}`.
    pub fn tail(&self, out: &mut Vec<u8>, id: &str, event: &EventInput) {
        #[derive(serde::Serialize)]
        struct Tail<'a> {
            id: &'a str,
            user_id: &'a str,
            thread_id: Option<&'a str>,
            run_id: Option<&'a str>,
            event: &'static str,
            data: &'a herald_protocol::EventData,
            ts: &'a str,
        }
        let tail = Tail {
            id,
            user_id: event.user_id.as_str(),
            thread_id: event.thread_id.as_deref(),
            run_id: event.run_id.as_deref(),
            event: event.kind.as_str(),
            data: &event.data,
            ts: &self.ts,
        };
        let start = out.len();
        serde_json::to_writer(&mut *out, &tail).expect("frames serialize");
        // The object's `{` becomes the `,` after the seq.
        out[start] = b',';
    }
}

/// A fresh epoch: random, so a log recreated after history was lost never matches an old cursor.
pub fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// A generated event id, used when the publisher gives none: time-ordered, so logs read well.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::frame::EventFrame;
    use herald_protocol::{PublishBody, ServerFrame};
    use serde_json::Value;

    #[test]
    fn encoded_frames_are_server_frame_events() {
        let body = br#"{"user_id":"u","event":"tool_executing","run_id":"r","thread_id":"t",
            "data":{"tool_name":"search","q":"a \"quoted\" text"}}"#;
        let event = PublishBody::parse(body, 10).unwrap().into_events().remove(0);
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut encoder = FrameEncoder::new(at);
        let frame = encoder.frame(7, "id-1", &event);
        let expected = ServerFrame::Event(EventFrame {
            seq: 7,
            id: "id-1".into(),
            user_id: "u".into(),
            thread_id: Some("t".into()),
            run_id: Some("r".into()),
            event: "tool_executing".into(),
            data: Value::Object(event.data.fields().clone()),
            ts: "2023-11-14T22:13:20.123Z".into(),
            snapshot: false,
            first_seq: None,
            truncated: false,
        });
        assert_eq!(frame.as_str(), expected.to_json());
        let mut tail = Vec::new();
        encoder.tail(&mut tail, "id-1", &event);
        assert_eq!(frame.as_str(), format!("{FRAME_HEAD}7{}", String::from_utf8(tail).unwrap()));
        // The scratch buffer is reused: a second frame is whole, not appended to the first.
        let second = encoder.frame(8, "id-2", &event);
        assert!(
            second.as_str().starts_with(r#"{"type":"event","seq":8,"id":"id-2","#),
            "{}",
            second.as_str()
        );
    }
}
