//! The registry of per-user managers: the one place that maps a user to its [`UserManager`].
//!
//! The system Herald replaces had an async-looking getter that was really synchronous, a shared
//! fallback manager for callers without a user (leaking events across users), and a check-then-
//! create race that could make two managers for one user. Here each of those is impossible by
//! construction:
//!
//! - [`Registry::manager`] is a plain synchronous function. Awaiting it does not compile:
//!
//! ```compile_fail
//! # async fn f(registry: &herald_server::registry::Registry, ctx: &herald_server::registry::UserContext) {
//! let manager = registry.manager(ctx).await; // error: `Arc<UserManager>` is not a future
//! # }
//! ```
//!
//! ```
//! # fn f(registry: &herald_server::registry::Registry) {
//! use herald_server::registry::UserContext;
//! let ctx = UserContext::new("alice").expect("valid user id");
//! let manager = registry.manager(&ctx); // no .await: it is synchronous
//! assert_eq!(manager.user().as_str(), "alice");
//! # }
//! ```
//!
//! - There is no default manager: a [`UserContext`] can only be built from a valid user id.
//! - Lookup and creation happen under one lock, so concurrent callers for one user get the same
//!   `Arc`.
//!
//! Managers hold no events: a user's log (seq, epoch, history) lives in the engine, so dropping an
//! idle manager loses nothing, and the registry stays bounded by the users active right now.

#[cfg(any(test, feature = "test-util"))]
use crate::engine::AppendError;
use crate::engine::{Engine, EngineError};
use crate::log::UserLog;
use crate::node::PresenceChanges;
use foldhash::{HashMap, HashMapExt};
#[cfg(any(test, feature = "test-util"))]
use herald_protocol::{EventInput, EventKind, FieldError, Receipt};
use herald_protocol::{UserId, UserIdError};
use parking_lot::Mutex;
#[cfg(any(test, feature = "test-util"))]
use serde_json::{Map, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Who a manager is for. Only constructible from a valid user id: no anonymous context exists.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserContext {
    user: UserId,
}

impl UserContext {
    /// Validates `user_id`; an empty or malformed id is refused.
    pub fn new(user_id: &str) -> Result<Self, UserIdError> {
        Ok(Self { user: UserId::parse(user_id)? })
    }

    /// A context for an already validated id.
    pub fn from_user(user: UserId) -> Self {
        Self { user }
    }

    /// The user.
    pub fn user(&self) -> &UserId {
        &self.user
    }
}

/// An event to emit through a [`UserManager`]; the user is the manager's, never a field.
/// Test helper (feature `test-util`): the server itself publishes through the engine.
#[cfg(any(test, feature = "test-util"))]
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The run (required for every kind but `custom`).
    pub run_id: Option<String>,
    /// Conversation thread.
    pub thread_id: Option<String>,
    /// The data object.
    pub data: Map<String, Value>,
    /// Idempotency key.
    pub id: Option<String>,
}

#[cfg(any(test, feature = "test-util"))]
impl Event {
    /// An event of `kind` in run `run_id` with empty data.
    pub fn new(kind: EventKind, run_id: impl Into<String>) -> Self {
        Self { kind, run_id: Some(run_id.into()), thread_id: None, data: Map::new(), id: None }
    }

    /// Sets the data object (anything but an object is ignored).
    pub fn data(mut self, data: Value) -> Self {
        if let Value::Object(map) = data {
            self.data = map;
        }
        self
    }

    /// Sets the idempotency key.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// Why [`UserManager::emit`] refused an event.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmitError {
    /// A field rule is broken (missing `run_id`, `tool_name`, …).
    #[error("invalid event: {0}")]
    Invalid(#[from] FieldError),
    /// A run rule or the engine refused it.
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// The per-user connection limit was reached.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("user already has {0} open connections (the limit)")]
pub struct TooManyConnections(pub usize);

/// Everything Herald does for one user: emit events to their log, count their connections,
/// and tell them to close when an operator disconnects the user.
#[derive(Debug)]
pub struct UserManager {
    user: UserId,
    engine: Arc<dyn Engine>,
    max_connections: usize,
    last_active: Mutex<Instant>,
    /// The operator's last disconnect reason; connections watch it and close with 4003.
    kick: watch::Sender<Arc<str>>,
    /// Open connections on this node: slot number and when it opened (presence's "since"). Its
    /// length is the count the per-user limit checks, under the same lock that adds to it.
    opened: Mutex<Vec<(u64, SystemTime)>>,
    /// Where presence changes go (the node's presence writer), if anywhere.
    changes: Option<Arc<PresenceChanges>>,
}

impl UserManager {
    /// The user this manager serves.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// Appends an event to the user's log. A user with no open connection is not an error: the
    /// event is kept within retention and delivered when they connect or resume. Test helper
    /// (feature `test-util`).
    #[cfg(any(test, feature = "test-util"))]
    pub async fn emit(&self, event: Event) -> Result<Receipt, EmitError> {
        self.touch();
        if event.kind.requires_run_id() && event.run_id.is_none() {
            return Err(FieldError { message: format!("run_id is required for {}", event.kind) }.into());
        }
        event.kind.check_data(&event.data).map_err(|message| FieldError { message })?;
        let input = EventInput {
            user_id: self.user.clone(),
            kind: event.kind,
            run_id: event.run_id,
            thread_id: event.thread_id,
            data: event.data.into(),
            id: event.id,
        };
        let mut receipts = self.engine.append(vec![input]).await?;
        Ok(receipts.pop().expect("one receipt per event"))
    }

    /// This node's live view of the user's log.
    pub async fn open_log(&self) -> Result<Arc<UserLog>, EngineError> {
        self.engine.open_log(&self.user).await
    }

    /// Catches this node's view of the log up with the shared log (multi-node engines).
    pub async fn refresh_log(&self, log: &Arc<UserLog>) -> Result<(), EngineError> {
        self.engine.refresh(&self.user, log).await
    }

    /// Puts back into this node's view of the log the events after `after` that it dropped
    /// under its memory cap (multi-node engines), for a client resuming from `after`.
    pub async fn recall_log(&self, log: &Arc<UserLog>, after: u64) -> Result<(), EngineError> {
        self.engine.recall(&self.user, log, after).await
    }

    /// Claims a connection slot, refused past the per-user limit. Released on drop.
    pub fn connect(self: &Arc<Self>) -> Result<ConnectionSlot, TooManyConnections> {
        static NEXT_SLOT: AtomicU64 = AtomicU64::new(0);
        self.touch();
        let number = {
            let mut opened = self.opened.lock();
            if opened.len() >= self.max_connections {
                return Err(TooManyConnections(self.max_connections));
            }
            let number = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
            opened.push((number, SystemTime::now()));
            number
        };
        self.presence_changed();
        Ok(ConnectionSlot { manager: self.clone(), number, kicked: self.kick.subscribe() })
    }

    /// Open connections of this user on this node.
    pub fn connections(&self) -> usize {
        self.opened.lock().len()
    }

    /// Open connections on this node and when the oldest opened; `None` without any.
    pub fn presence(&self) -> Option<(usize, SystemTime)> {
        let opened = self.opened.lock();
        opened.iter().map(|(_, at)| *at).min().map(|since| (opened.len(), since))
    }

    /// Closes every connection of the user on this node with 4003 and `reason`; returns how
    /// many were open.
    pub fn disconnect(&self, reason: &str) -> usize {
        self.kick.send_replace(reason.into());
        self.connections()
    }

    fn presence_changed(&self) {
        if let Some(changes) = &self.changes {
            changes.mark(&self.user);
        }
    }

    fn touch(&self) {
        *self.last_active.lock() = Instant::now();
    }
}

/// A claimed connection slot; dropping it frees the slot and marks the manager active.
#[derive(Debug)]
pub struct ConnectionSlot {
    manager: Arc<UserManager>,
    number: u64,
    kicked: watch::Receiver<Arc<str>>,
}

impl ConnectionSlot {
    /// Changes when an operator disconnects the user (the value is the reason): the holder
    /// closes its stream (4003 on a socket). Orders from before the slot was claimed are not seen.
    pub fn kicked(&self) -> watch::Receiver<Arc<str>> {
        self.kicked.clone()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.manager.touch();
        self.manager.opened.lock().retain(|(n, _)| *n != self.number);
        self.manager.presence_changed();
    }
}

/// Maps users to their managers. See the module docs for the guarantees.
#[derive(Debug)]
pub struct Registry {
    engine: Arc<dyn Engine>,
    idle: Duration,
    max_connections: usize,
    managers: Mutex<HashMap<UserId, Arc<UserManager>>>,
    changes: Option<Arc<PresenceChanges>>,
}

impl Registry {
    /// A registry over `engine`; managers idle for `idle` are dropped by [`Registry::evict_idle`].
    pub fn new(engine: Arc<dyn Engine>, idle: Duration, max_connections_per_user: usize) -> Self {
        Self {
            engine,
            idle,
            max_connections: max_connections_per_user,
            managers: Mutex::new(HashMap::new()),
            changes: None,
        }
    }

    /// Marks the user in `changes` whenever a user's connections on this node open or close
    /// (so a writer can record presence where other nodes see it).
    pub fn with_presence_changes(mut self, changes: Arc<PresenceChanges>) -> Self {
        self.changes = Some(changes);
        self
    }

    /// The manager of `user` if one is alive (never creates one).
    pub fn get(&self, user: &UserId) -> Option<Arc<UserManager>> {
        self.managers.lock().get(user).cloned()
    }

    /// Users with at least one open connection on this node, and the connections they hold.
    pub fn online(&self) -> (usize, usize) {
        self.managers
            .lock()
            .values()
            .map(|m| m.connections())
            .filter(|&n| n > 0)
            .fold((0, 0), |a, n| (a.0 + 1, a.1 + n))
    }

    /// The manager of `ctx`'s user: the same `Arc` for the same user while it is alive, created on
    /// first use. Synchronous and race-free.
    pub fn manager(&self, ctx: &UserContext) -> Arc<UserManager> {
        let mut managers = self.managers.lock();
        let manager = managers.entry(ctx.user.clone()).or_insert_with(|| {
            Arc::new(UserManager {
                user: ctx.user.clone(),
                engine: self.engine.clone(),
                max_connections: self.max_connections,
                last_active: Mutex::new(Instant::now()),
                kick: watch::Sender::new(Arc::from("")),
                opened: Mutex::new(Vec::new()),
                changes: self.changes.clone(),
            })
        });
        manager.touch();
        manager.clone()
    }

    /// Managers alive now.
    pub fn len(&self) -> usize {
        self.managers.lock().len()
    }

    /// True when no manager is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops managers that nobody holds, with no connection, idle longer than the idle time as of
    /// `now`. Returns how many were dropped.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let mut managers = self.managers.lock();
        let before = managers.len();
        managers.retain(|_, m| {
            let idle_for = now.saturating_duration_since(*m.last_active.lock());
            Arc::strong_count(m) > 1 || m.connections() > 0 || idle_for < self.idle
        });
        before - managers.len()
    }
}
