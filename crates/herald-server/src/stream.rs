//! One client stream session, whatever the transport: the WebSocket ([`crate::ws::connection`])
//! and the AG-UI Server-Sent Events stream ([`crate::api::agui`]) both read a user's log through
//! a [`Session`], and only encode what it hands them.
//!
//! A session owns the guards a stream holds for its life (the user's connection slot, the log's
//! reader count, the open-connection gauge), opens the log (catching up first when the client's
//! cursor is ahead of this node), and then answers one question, [`Session::next`]: the next batch
//! of events, or why the stream stops (history reset, too far behind, server draining, token
//! expired). How far behind a reader may fall is checked in one place, [`Session::is_too_far_behind`].

use crate::engine::EngineError;
use crate::gate::Gate;
use crate::log::{Attached, LogEntry, Opening, Tap, Trimmed, UserLog};
use crate::registry::{ConnectionSlot, TooManyConnections, UserManager};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Fuse};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::warn;

/// Where a resuming client says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Last seq the client has.
    pub after: u64,
    /// Epoch of that seq; `None` trusts the cursor to be of the log's current epoch.
    pub epoch: Option<String>,
}

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The user's connection limit is reached.
    #[error(transparent)]
    TooManyConnections(#[from] TooManyConnections),
    /// The engine could not open the log.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Why a session stops: each transport tells its client in its own way (a close code, an SSE
/// comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The log's history was lost (new epoch): reconnect and resume.
    Reset,
    /// The reader fell out of the retained window or too far behind.
    SlowConsumer,
    /// The server drains.
    Shutdown,
    /// The client's token expired.
    TokenExpired,
    /// An operator disconnected the user ([`Session::disconnect_reason`] says why).
    Disconnected,
}

/// What [`Session::next`] found.
#[derive(Debug)]
pub enum Next<T> {
    /// Events after the cursor, oldest first; hand the batch back to [`Session::advance`] once
    /// it is written (its buffer is reused for the next one).
    Batch(Vec<Arc<LogEntry>>),
    /// The stream ends.
    Stop(Stop),
    /// The transport's own future (client input, heartbeat, keep-alive) finished first.
    Other(T),
}

/// Held for a session's life; dropping it frees the user's slot and the gauges.
#[derive(Debug)]
struct Guards {
    _slot: ConnectionSlot,
    _attached: Attached,
    _open: crate::metrics::OpenConnection,
}

/// One stream's cursor into its user's log. See the module docs.
#[derive(Debug)]
pub struct Session {
    _guards: Guards,
    log: Arc<UserLog>,
    cursor: u64,
    max_pending_bytes: u64,
    /// Changes when an operator disconnects the user (the value is the reason).
    kicked: watch::Receiver<Arc<str>>,
    /// The drain, the token's expiry and the disconnect, waited on together.
    signals: Signals,
    /// The server's drain, as this session's own child token: checking it takes a lock no other
    /// connection touches (the server's token is shared by all of them).
    drain: CancellationToken,
    live: bool,
    /// The batch buffer, lent out by [`Session::next`] and returned by [`Session::advance`].
    spare: Vec<Arc<LogEntry>>,
    /// Batches handed out without waiting since the drain was last checked.
    busy: u8,
}

impl Session {
    /// Claims a connection slot of `manager`'s user and opens its log. A cursor ahead of this
    /// node's view in the same epoch means the client saw newer events through another node: the
    /// log catches up first, so the cursor is replayed rather than reset.
    pub async fn start(
        manager: &Arc<UserManager>,
        cursor: Option<&Cursor>,
        max_pending_bytes: u64,
        expires_at: Option<SystemTime>,
        shutdown: CancellationToken,
    ) -> Result<Session, Refused> {
        let slot = manager.connect()?;
        let log = manager.open_log().await?;
        if let Some(c) = cursor
            && c.epoch.as_deref().is_none_or(|e| e == log.epoch())
        {
            if c.after > log.head()
                && let Err(e) = manager.refresh_log(&log).await
            {
                warn!("could not catch up with the shared log: {e}");
            }
            if c.after + 1 < log.first_retained()
                && let Err(e) = manager.recall_log(&log, c.after).await
            {
                warn!("could not read back the events this node dropped: {e}");
            }
        }
        let kicked = slot.kicked();
        let drain = shutdown.child_token();
        let guards =
            Guards { _slot: slot, _attached: log.attach(), _open: crate::metrics::OpenConnection::new() };
        Ok(Session {
            _guards: guards,
            log,
            cursor: 0,
            max_pending_bytes,
            signals: Signals::new(&drain, until(expires_at), kicked.clone()),
            kicked,
            drain,
            live: false,
            spare: Vec::new(),
            busy: 0,
        })
    }

    /// Decides how the stream starts from `cursor` (replay, reset or none) and puts the session's
    /// cursor at the head: the backlog is written first, then [`Session::next`] continues.
    pub fn open(&mut self, cursor: Option<&Cursor>) -> Opening {
        let epoch = self.log.epoch();
        let opening = self.log.open(cursor.map(|c| (c.after, c.epoch.as_deref().unwrap_or(epoch))));
        crate::metrics::recovery(opening.recovery);
        self.cursor = opening.head;
        opening
    }

    /// The log this session reads.
    pub fn log(&self) -> &Arc<UserLog> {
        &self.log
    }

    /// The seq of the last event handed out and advanced past.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Moves the expiry to `expires_at` (a refreshed token).
    pub fn extend(&mut self, expires_at: SystemTime) {
        self.signals.expiry.as_mut().reset(tokio::time::Instant::now() + until(Some(expires_at)));
        self.signals.gate.open();
    }

    /// The operator's reason, once the session stopped with [`Stop::Disconnected`].
    pub fn disconnect_reason(&self) -> Arc<str> {
        self.kicked.borrow().clone()
    }

    /// True once a read found nothing new: the backlog is behind the stream.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The next batch (up to `max_bytes`, at least one event) after the cursor, or why the stream
    /// stops, or `other`'s output if it finishes first while the session waits for events.
    ///
    /// With a `tap` (the transport has nothing of its own left to write), the session at the
    /// head attaches it while it waits, so new events are written as they are appended and this
    /// task is not woken for them. The tap is detached again before this returns.
    pub async fn next<T>(
        &mut self,
        max_bytes: usize,
        tap: Option<&Arc<Tap>>,
        other: impl Future<Output = T>,
    ) -> Next<T> {
        tokio::pin!(other);
        loop {
            // A reader kept busy by a publisher on another node may never wait below, where the
            // drain is noticed; it checks every few batches (the check takes a lock).
            self.busy = self.busy.wrapping_add(1);
            if self.busy % 16 == 0 && self.drain.is_cancelled() {
                return Next::Stop(Stop::Shutdown);
            }
            // Taken before the log is read, so an append right after the read still wakes us.
            let appended = self.log.appended();
            if self.log.is_closed() {
                return Next::Stop(Stop::Reset);
            }
            let mut batch = std::mem::take(&mut self.spare);
            match self.log.read_after_into(self.cursor, max_bytes, &mut batch) {
                Err(Trimmed) => return Next::Stop(Stop::SlowConsumer),
                Ok(()) if !batch.is_empty() => return Next::Batch(batch),
                Ok(()) => {
                    self.spare = batch;
                    self.live = true;
                }
            }
            // At the head: wait for an append, or, with a tap attached, until the log lets it go
            // (the tap writes the appends meanwhile).
            let tapped = tap
                .filter(|tap| self.log.attach_tap(tap, self.cursor))
                .map(|tap| Tapped { log: &self.log, tap: Some(tap) });
            let woken = async {
                match tapped.as_ref().and_then(|t| t.tap) {
                    Some(tap) => tap.released().await,
                    None => appended.await,
                }
            };
            let out = tokio::select! {
                biased;
                () = woken => None,
                stop = poll_fn(|cx| self.signals.poll_stop(cx)) => Some(Next::Stop(stop)),
                out = &mut other => Some(Next::Other(out)),
            };
            // Detached before anything returns: the transport writes only once the tap cannot.
            if let Some(tapped) = tapped {
                self.cursor = tapped.detach();
            }
            if let Some(next) = out {
                return next;
            }
        }
    }

    /// Moves the cursor past `batch`, once its frames are written, and keeps its buffer.
    pub fn advance(&mut self, mut batch: Vec<Arc<LogEntry>>) {
        if let Some(last) = batch.last() {
            self.cursor = last.seq;
        }
        batch.clear();
        self.spare = batch;
    }

    /// The slow-consumer check: more than `max_pending_bytes` behind, or out of the retained window.
    pub fn is_too_far_behind(&self) -> bool {
        self.log.pending_bytes(self.cursor).map_or(true, |pending| pending > self.max_pending_bytes)
    }

    /// Waits, while a write is blocked, until the stream must stop: the reader fell too far
    /// behind as the log kept growing, the server drains, the token expires or an operator
    /// disconnects the user.
    pub async fn stalled(&mut self) -> Stop {
        let mut grew = false;
        loop {
            // Taken before the check, so an append during it is not missed.
            let appended = self.log.appended();
            if grew && self.is_too_far_behind() {
                return Stop::SlowConsumer;
            }
            tokio::select! {
                stop = poll_fn(|cx| self.signals.poll_stop(cx)) => return stop,
                () = appended => grew = true,
            }
        }
    }
}

/// A tap attached for one wait of [`Session::next`]; detached when the wait ends, also when the
/// wait is dropped (the connection's task ends mid-wait), so the log never writes to a
/// connection that stopped reading.
struct Tapped<'a> {
    log: &'a UserLog,
    /// `None` once detached.
    tap: Option<&'a Arc<Tap>>,
}

impl Tapped<'_> {
    /// Detaches the tap: the seq of the last event it took.
    fn detach(mut self) -> u64 {
        let tap = self.tap.take().expect("attached until detached");
        self.log.detach_tap(tap)
    }
}

impl Drop for Tapped<'_> {
    fn drop(&mut self) {
        if let Some(tap) = self.tap {
            self.log.detach_tap(tap);
        }
    }
}

/// What stops a session from outside its log. Each is quiet for nearly all of a session's life,
/// so they sit behind one [`Gate`]: the loop that wakes per event polls them only when one fired.
struct Signals {
    gate: Gate,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    expiry: Pin<Box<Sleep>>,
    /// Resolves when the disconnect watch changes; never if its sender is gone.
    kicked: Fuse<BoxFuture<'static, ()>>,
}

impl Signals {
    fn new(drain: &CancellationToken, expires_in: Duration, mut kicked: watch::Receiver<Arc<str>>) -> Self {
        let kicked: BoxFuture<'static, ()> = Box::pin(async move {
            if kicked.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        });
        Self {
            gate: Gate::new(),
            shutdown: Box::pin(drain.clone().cancelled_owned()),
            expiry: Box::pin(tokio::time::sleep(expires_in)),
            kicked: kicked.fuse(),
        }
    }

    /// The first of drain, expiry and disconnect that happened.
    fn poll_stop(&mut self, cx: &mut Context<'_>) -> Poll<Stop> {
        let Self { gate, shutdown, expiry, kicked } = self;
        gate.poll(cx, |cx| {
            if shutdown.as_mut().poll(cx).is_ready() {
                Poll::Ready(Stop::Shutdown)
            } else if expiry.as_mut().poll(cx).is_ready() {
                Poll::Ready(Stop::TokenExpired)
            } else if kicked.poll_unpin(cx).is_ready() {
                Poll::Ready(Stop::Disconnected)
            } else {
                Poll::Pending
            }
        })
    }
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals").field("gate", &self.gate).field("expiry", &self.expiry.deadline()).finish()
    }
}

/// Time left until `at`. Tickets carry no expiry; a year stands in for "never" without
/// overflowing the timer.
fn until(at: Option<SystemTime>) -> Duration {
    at.map_or(Duration::from_secs(365 * 24 * 3600), |at| {
        at.duration_since(SystemTime::now()).unwrap_or_default()
    })
}
