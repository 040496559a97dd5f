//! One WebSocket connection: a [`Session`] (its cursor into the user's log), a heartbeat, and the
//! client's frames.
//!
//! The session decides what to send and when to stop; this module only encodes. Events are read
//! from the shared log in batches and written as the frames encoded at append, queued in the
//! socket's buffer and written once per batch, so a burst costs one syscall, not one per frame.
//!
//! A connection that stops reading blocks in its flush; while blocked the session watches the log,
//! and once it is more than `max_pending_bytes` behind (or its cursor leaves the retained window)
//! it is closed with 4008. It never buffers events of its own, so memory stays bounded by the log.

use super::socket::Socket;
use crate::gate::Gate;
use crate::limits::Verdict;
use crate::log::{LogEntry, Tap};
use crate::registry::UserManager;
use crate::stream::{Cursor, Next, Refused, Session, Stop};
use crate::upstream::Upstream;
use futures_util::future::BoxFuture;
use herald_protocol::UserId;
use herald_protocol::{ClientFrame, CloseCode, PROTOCOL_VERSION, ServerFrame};
use serde_json::json;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;

/// Bytes of frames read from the log per write (then flushed together).
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// How long a close frame may take to leave before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A slow consumer's close frame waits behind what its socket already holds (megabytes, on a
/// fast link): give the client time to read up to it, so it learns to resume rather than seeing
/// a dropped connection. Memory held meanwhile is bounded by one write batch.
const SLOW_CONSUMER_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-connection settings.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Ping interval; two missed pongs close the connection.
    pub heartbeat: Duration,
    /// How far behind the connection may fall.
    pub max_pending_bytes: u64,
    /// The token's expiry: the connection closes with 4001 then.
    pub expires_at: Option<SystemTime>,
    /// Client messages per second (see [`crate::limits::MessageRate`]).
    pub max_client_msgs_per_s: u32,
}

/// Why the connection ends.
#[derive(Debug)]
enum End {
    Close(u16, &'static str),
    /// An operator disconnected the user (4003), with their reason.
    Disconnected(Arc<str>),
    Gone,
}

impl End {
    /// Why `session` stopped, as the socket says it.
    fn from_stop(session: &Session, stop: Stop) -> Self {
        match stop {
            Stop::Disconnected => End::Disconnected(session.disconnect_reason()),
            other => other.into(),
        }
    }
}

impl From<Stop> for End {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Disconnected => End::Disconnected(Arc::from("disconnected by an operator")),
            Stop::Reset => End::Close(CloseCode::LOG_RESET, "history was reset: reconnect and resume"),
            Stop::SlowConsumer => {
                End::Close(CloseCode::SLOW_CONSUMER, "too far behind: resume from your last seq")
            }
            Stop::Shutdown => End::Close(CloseCode::GOING_AWAY, "server shutting down"),
            Stop::TokenExpired => End::Close(CloseCode::TOKEN_EXPIRED, "token expired"),
        }
    }
}

/// What the connection waits for besides new events.
enum Input {
    Message(Option<Result<Message, tungstenite::Error>>),
    Answer(Box<ServerFrame>),
    Heartbeat,
}

/// A connection's way to the backend, when an upstream is configured: the forwarder, the bound
/// on requests in flight (a permit travels with each request task), and the channel the answers
/// come back on. Absent otherwise, so idle connections do not pay for the channel's first block.
struct UpstreamLink {
    upstream: Upstream,
    in_flight: Arc<Semaphore>,
    answers_tx: mpsc::Sender<Box<ServerFrame>>,
    answers: mpsc::Receiver<Box<ServerFrame>>,
}

impl UpstreamLink {
    fn new(upstream: Upstream) -> Self {
        let (answers_tx, answers) = mpsc::channel(16);
        let in_flight = Arc::new(Semaphore::new(upstream.max_in_flight()));
        Self { upstream, in_flight, answers_tx, answers }
    }
}

struct Connection {
    socket: Socket,
    /// The socket's tap, attached by the session while the connection waits at the head: the
    /// log then writes new events itself and this task sleeps (see [`crate::log::Tap`]).
    tap: Option<Arc<Tap>>,
    session: Session,
    params: Params,
    heartbeat: Heartbeat,
    /// The client's frames are read only once the socket said it has some (see [`Gate`]): the
    /// loop wakes for every event, and a read attempt costs a readiness check and two waker
    /// registrations each time.
    reading: Gate,
    unanswered_pings: u32,
    rate: crate::limits::MessageRate,
    delivery: crate::metrics::Delivery,
    upstream: Option<UpstreamLink>,
    connection_id: String,
    user: UserId,
    refresher: super::refresh::Refresher,
}

/// Serves one upgraded socket until it closes, the token expires, or the server drains. Every
/// log line of the connection carries its `user_id` and `connection_id` (a tracing span).
pub async fn serve(
    socket: Socket,
    manager: Arc<UserManager>,
    cursor: Option<Cursor>,
    params: Params,
    upstream: Option<Upstream>,
    shutdown: CancellationToken,
    refresher: super::refresh::Refresher,
) {
    let connection_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let span = tracing::info_span!("connection", user_id = %manager.user(), connection_id = %connection_id);
    serve_in_span(socket, manager, cursor, params, upstream, shutdown, connection_id, refresher)
        .instrument(span)
        .await
}

// Everything `serve` was given, plus the id its span names.
#[allow(clippy::too_many_arguments)]
async fn serve_in_span(
    mut socket: Socket,
    manager: Arc<UserManager>,
    cursor: Option<Cursor>,
    params: Params,
    upstream: Option<Upstream>,
    shutdown: CancellationToken,
    connection_id: String,
    refresher: super::refresh::Refresher,
) {
    let user = manager.user().clone();
    // Boxed, like every step taken once or rarely (opening, a token refresh, the close): an async
    // fn's state is as large as its largest step, and this one is held by every open connection.
    let started = Box::pin(Session::start(
        &manager,
        cursor.as_ref(),
        params.max_pending_bytes,
        params.expires_at,
        shutdown,
    ))
    .await;
    let session = match started {
        Ok(session) => session,
        Err(Refused::TooManyConnections(e)) => {
            crate::metrics::connection_attempt("limited");
            info!("connection refused: {e}");
            close(&mut socket, CloseCode::TOO_MANY_CONNECTIONS, "too many connections for this user").await;
            return;
        }
        Err(Refused::Engine(e)) => {
            warn!("connection refused: {e}");
            close(&mut socket, 1011, "engine unavailable, retry").await;
            return;
        }
    };
    crate::metrics::connection_attempt("ok");
    let heartbeat = Heartbeat::every(params.heartbeat);
    let mut conn = Connection {
        tap: socket.tap(),
        socket,
        session,
        params,
        heartbeat,
        reading: Gate::new(),
        unanswered_pings: 0,
        rate: crate::limits::MessageRate::per_second(params.max_client_msgs_per_s),
        delivery: crate::metrics::Delivery::new(),
        upstream: upstream.map(UpstreamLink::new),
        connection_id: connection_id.clone(),
        user: user.clone(),
        refresher,
    };
    conn.presence("connected");
    info!(resume = cursor.is_some(), "connection opened");
    let end = match Box::pin(conn.start(&connection_id, &user, cursor)).await {
        Ok(()) => conn.run().await,
        Err(end) => end,
    };
    if let End::Close(code, reason) = end {
        if code == CloseCode::SLOW_CONSUMER {
            crate::metrics::slow_consumer_closed();
        }
        close(&mut conn.socket, code, reason).await;
    }
    if let End::Disconnected(reason) = &end {
        close(&mut conn.socket, CloseCode::DISCONNECTED, reason.as_ref()).await;
    }
    conn.presence("disconnected");
    info!(?end, seq = conn.session.cursor(), "connection closed");
}

impl Connection {
    /// Sends `welcome`, the backlog (replay or active runs) and `synced`.
    async fn start(
        &mut self,
        connection_id: &str,
        user: &herald_protocol::UserId,
        cursor: Option<Cursor>,
    ) -> Result<(), End> {
        let opening = self.session.open(cursor.as_ref());
        let welcome = ServerFrame::Welcome {
            v: PROTOCOL_VERSION,
            connection_id: connection_id.to_owned(),
            user_id: user.to_string(),
            epoch: self.session.log().epoch().to_owned(),
            seq: opening.head,
            heartbeat_ms: self.params.heartbeat.as_millis() as u64,
            recovery: opening.recovery,
        };
        self.socket.queue_text(&welcome.to_json());
        for chunk in opening.backlog.chunks(256) {
            for entry in chunk {
                self.socket.queue_frame(&entry.frame);
            }
            self.socket.flush().await.map_err(|_| End::Gone)?;
        }
        crate::metrics::delivered(opening.backlog.len());
        let synced = ServerFrame::Synced { seq: opening.head };
        self.socket.send_text(&synced.to_json()).await.map_err(|_| End::Gone)
    }

    /// Live phase: write new events, answer the client, keep the heartbeat.
    async fn run(&mut self) -> End {
        loop {
            // The tap writes only to an idle socket: send what tungstenite or a detached tap left.
            if self.tap.is_some() && !self.socket.is_idle() && self.socket.flush().await.is_err() {
                return End::Gone;
            }
            let (socket, upstream, heartbeat, reading) =
                (&mut self.socket, &mut self.upstream, &mut self.heartbeat, &mut self.reading);
            let input = async {
                tokio::select! {
                    biased;
                    // After a message the gate stays open: more may be buffered already.
                    message = poll_fn(|cx| reading.poll(cx, |cx| socket.poll_next(cx))) => {
                        Input::Message(message)
                    }
                    Some(reply) = next_answer(upstream) => Input::Answer(reply),
                    _ = heartbeat.tick() => Input::Heartbeat,
                }
            };
            let next = self.session.next(WRITE_BATCH_BYTES, self.tap.as_ref(), input).await;
            self.socket.resume();
            let end = match next {
                Next::Batch(batch) => self.write(batch).await.err(),
                Next::Stop(stop) => Some(End::from_stop(&self.session, stop)),
                Next::Other(Input::Message(message)) => self.on_message(message).await,
                Next::Other(Input::Answer(reply)) => {
                    self.socket.send_text(&reply.to_json()).await.err().map(|_| End::Gone)
                }
                Next::Other(Input::Heartbeat) => self.ping().await,
            };
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Sends a frame to the backend in its own task; the answer comes back through the link.
    /// Returns a frame to send right away when the request cannot be made.
    fn forward(&self, frame: ClientFrame) -> Option<ServerFrame> {
        let (body, reference) = match frame {
            ClientFrame::Message { reference, thread_id, data } => (
                json!({"type": "message", "user_id": self.user.as_str(), "connection_id": self.connection_id,
                       "ref": reference, "thread_id": thread_id, "data": data}),
                reference,
            ),
            ClientFrame::Cancel { run_id, reference } => (
                json!({"type": "cancel", "user_id": self.user.as_str(), "run_id": run_id, "ref": reference}),
                reference,
            ),
            ClientFrame::Ping => return Some(ServerFrame::Pong),
            // Answered by the connection itself (see `refresh`), never forwarded.
            ClientFrame::Refresh { .. } => return None,
        };
        let Some(link) = &self.upstream else {
            return Some(ServerFrame::Error {
                code: "upstream_unavailable".into(),
                message: "no upstream is configured on this server (HERALD_UPSTREAM_URL)".into(),
                reference,
            });
        };
        let Ok(permit) = link.in_flight.clone().try_acquire_owned() else {
            return Some(ServerFrame::Error {
                code: "rate_limited".into(),
                message: format!(
                    "{} upstream requests already in flight on this connection; wait for their acks",
                    link.upstream.max_in_flight()
                ),
                reference,
            });
        };
        let (upstream, answers) = (link.upstream.clone(), link.answers_tx.clone());
        tokio::spawn(async move {
            let reply = upstream.forward(body, reference).await;
            drop(permit);
            let _ = answers.send(Box::new(reply)).await;
        });
        None
    }

    /// Tells the backend a connection opened or closed, when presence notices are on.
    fn presence(&self, state: &'static str) {
        let Some(upstream) = self.upstream.as_ref().map(|l| l.upstream.clone()).filter(Upstream::presence)
        else {
            return;
        };
        let body = json!({"type": "presence", "user_id": self.user.as_str(),
                          "connection_id": self.connection_id, "state": state});
        tokio::spawn(async move {
            if let Err(e) = upstream.post(&body).await {
                debug!("presence notice not delivered: {e}");
            }
        });
    }

    /// Writes one batch and flushes it; while the socket does not take the bytes, the session
    /// watches the lag and the heartbeat counts how long the peer has not read.
    async fn write(&mut self, batch: Vec<Arc<LogEntry>>) -> Result<(), End> {
        {
            for entry in &batch {
                self.socket.queue_frame(&entry.frame);
            }
            let write = self.socket.flush();
            tokio::pin!(write);
            loop {
                tokio::select! {
                    // Most writes complete at once: only a blocked one watches the lag.
                    biased;
                    result = &mut write => {
                        result.map_err(|_| End::Gone)?;
                        break;
                    }
                    stop = self.session.stalled() => return Err(End::from_stop(&self.session, stop)),
                    _ = self.heartbeat.tick() => {
                        // A write blocked for two heartbeats: the peer is not reading at all.
                        self.unanswered_pings += 1;
                        if self.unanswered_pings > 2 {
                            return Err(End::Close(CloseCode::HEARTBEAT_TIMEOUT, "not reading"));
                        }
                    }
                }
            }
        }
        self.delivery.written(batch.iter().map(|e| e.appended_at), std::time::Instant::now());
        self.session.advance(batch);
        Ok(())
    }

    async fn on_message(&mut self, message: Option<Result<Message, tungstenite::Error>>) -> Option<End> {
        let message = match message {
            None => return Some(End::Gone),
            Some(Err(e)) => {
                debug!("read error: {e}");
                return Some(match super::read_error::close_for_tungstenite(&e) {
                    Some((code, reason)) => End::Close(code, reason),
                    None => End::Gone,
                });
            }
            Some(Ok(m)) => m,
        };
        self.unanswered_pings = 0;
        let reply = match message {
            Message::Text(_) if self.rate.check() == Verdict::Close => {
                return Some(End::Close(CloseCode::POLICY_VIOLATION, "too many messages: slow down"));
            }
            Message::Text(_) if self.rate.refused() => ServerFrame::error(
                "rate_limited",
                "over max_client_msgs_per_s: this message was dropped; keep sending and the socket closes (1008)",
            ),
            Message::Text(text) => match ClientFrame::parse(text.as_str()) {
                Ok(ClientFrame::Refresh { token }) => Box::pin(self.refresh(&token)).await,
                Ok(frame) => match self.forward(frame) {
                    Some(reply) => reply,
                    None => return None,
                },
                Err(e) => ServerFrame::error(e.code(), e.to_string()),
            },
            Message::Binary(_) => {
                return Some(End::Close(
                    CloseCode::UNSUPPORTED_DATA,
                    "binary frames are not supported; send JSON text",
                ));
            }
            Message::Close(_) => {
                // tungstenite queued the close reply; flush it so the client sees its own code.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.flush()).await;
                return Some(End::Gone);
            }
            // Pongs to the client's pings are tungstenite's; a read never yields a raw frame.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return None,
        };
        self.socket.send_text(&reply.to_json()).await.err().map(|_| End::Gone)
    }

    /// Takes a fresh token: the expiry moves to its `exp`, or an error frame says why not (and
    /// the old expiry stays).
    async fn refresh(&mut self, token: &str) -> ServerFrame {
        match self.refresher.check(&self.user, token).await {
            Ok(expires_at) => {
                self.session.extend(expires_at);
                let exp = expires_at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
                info!(exp, "token refreshed");
                ServerFrame::Refreshed { exp }
            }
            Err(frame) => frame,
        }
    }

    async fn ping(&mut self) -> Option<End> {
        if self.unanswered_pings >= 2 {
            return Some(End::Close(CloseCode::HEARTBEAT_TIMEOUT, "heartbeat timeout"));
        }
        self.unanswered_pings += 1;
        self.socket.send_message(Message::Ping(Default::default())).await.err().map(|_| End::Gone)
    }
}

/// The ping interval, behind a [`Gate`]: the loop wakes once per event and would otherwise poll
/// the timer each time.
struct Heartbeat {
    interval: Interval,
    gate: Gate,
}

impl Heartbeat {
    /// Ticks every `period`, the first a period from now; a late tick delays the next ones.
    fn every(period: Duration) -> Self {
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { interval, gate: Gate::new() }
    }

    /// The next tick.
    async fn tick(&mut self) {
        let Self { interval, gate } = self;
        poll_fn(|cx| gate.poll(cx, |cx| interval.poll_tick(cx).map(drop))).await
    }
}

/// The next upstream answer, or never when there is no upstream.
async fn next_answer(link: &mut Option<UpstreamLink>) -> Option<Box<ServerFrame>> {
    match link {
        Some(link) => link.answers.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends a close frame (bounded in time) and, once it is out, waits briefly for the client's close.
/// Boxed: a connection closes once, and the wait would otherwise add to every connection's
/// state (see `serve_in_span`).
fn close<'a>(socket: &'a mut Socket, code: u16, reason: &'a str) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let frame = CloseFrame { code: code.into(), reason: reason.into() };
        let patience =
            if code == CloseCode::SLOW_CONSUMER { SLOW_CONSUMER_CLOSE_TIMEOUT } else { CLOSE_TIMEOUT };
        let sent = tokio::time::timeout(patience, socket.send_message(Message::Close(Some(frame)))).await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
    })
}
