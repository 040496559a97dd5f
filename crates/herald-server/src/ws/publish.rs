//! `GET /v1/publish`: the publisher socket. One long-lived connection carries what would
//! otherwise be one `POST /v1/events` per event, for token streams where every delta is an event.
//!
//! Auth, parsing, validation, the append and the error codes are the HTTP path's own
//! ([`Publisher`], [`PublishFrame`] over `PublishBody`, [`events::append`], [`ApiFailure`]);
//! this file only adds what a socket needs:
//!
//! - Pipelining. Frames are appended as they arrive, several at a time, and answered in the order
//!   they were sent. Frames that touch a common user wait for each other ([`UserOrder`]), so one
//!   user's events (a run's tokens) are appended in the order sent; other users' overlap.
//! - Backpressure. A frame holds one of `publish_max_in_flight` slots from the moment it is read
//!   until its answer is handed to the kernel. With no slot free the socket is not read, so a
//!   publisher that sends faster than it reads its answers is slowed by TCP, not buffered.
//! - Drain. On shutdown the socket stops reading, answers every frame it read, then closes with
//!   1001.
//! - Heartbeat. The server pings every `heartbeat_ms`; a publisher from which nothing (not even a
//!   pong) was read for two heartbeats is closed with 4000, so dead peers do not linger.

use super::MaybeUpgrade;
use crate::AppState;
use crate::api::{Accepting, ApiFailure, Publisher, events};
use crate::metrics::{InFlight, PublisherSocket};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::response::{IntoResponse, Response};
use futures_util::future::{BoxFuture, Shared};
use futures_util::stream::{FuturesOrdered, SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use herald_protocol::publish_socket::salvage_ref;
use herald_protocol::{
    AnswerError, CloseCode, Outcome, PublishAnswer, PublishBody, PublishFrame, Receipt, UserId,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::{Instrument, debug};

/// How long a closing socket (drain, heartbeat timeout) may take to hand over its last answers
/// and its close frame before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// `GET /v1/publish`: the publisher socket (docs/protocol.md, "Publishing over a socket").
///
/// One connection carries what would otherwise be one `POST /v1/events` per event: each text
/// frame is `{"ref":…,"event":{…}}` or `{"ref":…,"events":[…]}`, answered in order with its
/// receipts or its error (same API key, validation and codes as `POST /v1/events`). The key is
/// checked before the upgrade; a plain GET without the upgrade headers is answered 400
/// `not_websocket`.
#[utoipa::path(
    get,
    path = "/v1/publish",
    tag = "publish",
    operation_id = "publish_socket",
    security(("api_key" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: publish frames and their answers follow (docs/protocol.md)."),
        crate::api::responses::RequestRefused,
    )
)]
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    _: Accepting,
    publisher: Publisher,
    upgrade: MaybeUpgrade,
) -> Result<Response, ApiFailure> {
    let Some(upgrade) = upgrade.0 else {
        return Err(ApiFailure::bad_request(
            "not_websocket",
            "GET /v1/publish expects a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
        ));
    };
    // Frames up to max_body_bytes are published; up to twice that they are read and answered
    // `too_large`; beyond, the socket closes with 1009 (a frame must be read whole to be skipped).
    let max = state.config.max_body_bytes.saturating_mul(2);
    let tracker = state.tracker.clone();
    Ok(upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| tracker.track_future(serve(socket, state, publisher.key)))
        .into_response())
}

/// Serves one publisher socket until the publisher leaves or the server drains.
async fn serve(socket: WebSocket, state: Arc<AppState>, key: usize) {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let span = tracing::info_span!("publisher", connection_id = %id);
    async move {
        let metrics = PublisherSocket::new();
        let (sink, stream) = socket.split();
        // Unbounded, yet bounded: every answer in it holds one of the in-flight slots.
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = Reader::new(state, key, &metrics);
        let ended = tokio_util::sync::CancellationToken::new();
        let session = async {
            let read = async {
                let result = reader.run(stream, tx).await;
                ended.cancel();
                result
            };
            tokio::join!(read, write(sink, rx))
        };
        // Once the reader is done, a writer blocked by a peer that does not read gets a grace.
        let deadline = async {
            ended.cancelled().await;
            tokio::time::sleep(CLOSE_GRACE).await;
        };
        tokio::select! {
            ((frames, end), ()) = session => debug!(frames, ?end, "publisher socket closed"),
            () = deadline => debug!("publisher socket did not take its last frames in time: dropped"),
        }
    }
    .instrument(span)
    .await
}

/// What the reader hands the writer.
enum Out {
    /// An answer, with the in-flight slot its frame held.
    Answer(Utf8Bytes, Slot),
    /// A heartbeat ping.
    Ping,
    /// The last frame: a close with this code and reason.
    Close(u16, &'static str),
}

/// One of the socket's in-flight slots, held from reading a frame until its answer is written.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _counted: InFlight,
}

/// A frame's answer, ready to be written once every earlier frame's is.
struct Answered {
    text: Utf8Bytes,
    slot: Slot,
    frame: u64,
    users: Vec<UserId>,
}

/// Why the reader stopped.
#[derive(Debug)]
enum End {
    /// The publisher closed the socket or the connection dropped.
    Gone,
    /// The server closes with this code.
    Close(u16, &'static str),
}

struct Reader<'m> {
    state: Arc<AppState>,
    key: usize,
    slots: Arc<Semaphore>,
    pending: FuturesOrdered<BoxFuture<'static, Answered>>,
    order: UserOrder,
    frames: u64,
    metrics: &'m PublisherSocket,
}

impl<'m> Reader<'m> {
    fn new(state: Arc<AppState>, key: usize, metrics: &'m PublisherSocket) -> Self {
        let slots = Arc::new(Semaphore::new(state.config.publish_max_in_flight));
        Self {
            state,
            key,
            slots,
            pending: FuturesOrdered::new(),
            order: UserOrder::default(),
            frames: 0,
            metrics,
        }
    }

    /// Reads frames while a slot is free, answers them in order, and on the way out answers
    /// everything read. Returns how many frames were read and why it stopped.
    async fn run(mut self, mut stream: SplitStream<WebSocket>, tx: mpsc::UnboundedSender<Out>) -> (u64, End) {
        let shutdown = self.state.shutdown.clone();
        let every = self.state.config.heartbeat;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unanswered_pings = 0u32;
        let mut slot: Option<Slot> = None;
        let mut end: Option<End> = None;
        while end.is_none() || !self.pending.is_empty() {
            let reading = end.is_none();
            tokio::select! {
                biased;
                Some(answered) = self.pending.next(), if !self.pending.is_empty() => {
                    self.order.finished(answered.frame, &answered.users);
                    if tx.send(Out::Answer(answered.text, answered.slot)).is_err() {
                        return (self.frames, End::Gone);
                    }
                }
                () = shutdown.cancelled(), if reading => {
                    end = Some(End::Close(CloseCode::GOING_AWAY, "server shutting down"));
                }
                _ = heartbeat.tick(), if reading => {
                    if unanswered_pings >= 2 {
                        end = Some(End::Close(CloseCode::HEARTBEAT_TIMEOUT, "heartbeat timeout"));
                    } else {
                        unanswered_pings += 1;
                        let _ = tx.send(Out::Ping);
                    }
                }
                permit = self.slots.clone().acquire_owned(), if reading && slot.is_none() => {
                    let permit = permit.expect("the semaphore is never closed");
                    slot = Some(Slot { _permit: permit, _counted: self.metrics.in_flight() });
                }
                message = stream.next(), if reading && slot.is_some() => match message.inspect(|_| unanswered_pings = 0) {
                    Some(Ok(Message::Text(text))) => {
                        let slot = slot.take().expect("read only with a slot");
                        self.frame(text.as_str(), slot);
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let slot = slot.take().expect("read only with a slot");
                        let failure = ApiFailure::bad_request(
                            "invalid_json",
                            "binary frames are not read; send each frame as JSON text",
                        );
                        self.answer_now(None, error(&failure, None), slot);
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => end = Some(End::Gone),
                    Some(Err(e)) => {
                        debug!("read error: {e}");
                        end = Some(match super::read_error::close_for(&e) {
                            Some((CloseCode::MESSAGE_TOO_BIG, _)) => End::Close(
                                CloseCode::MESSAGE_TOO_BIG,
                                "frame over twice max_body_bytes: split the batch",
                            ),
                            Some((code, reason)) => End::Close(code, reason),
                            None => End::Gone,
                        });
                    }
                },
            }
        }
        let end = end.unwrap_or(End::Gone);
        if let End::Close(code, reason) = end {
            let _ = tx.send(Out::Close(code, reason));
        }
        (self.frames, end)
    }

    /// Starts one text frame: refused at once, or appended after the frames it must follow.
    fn frame(&mut self, text: &str, slot: Slot) {
        let config = &self.state.config;
        if text.len() > config.max_body_bytes {
            let failure = ApiFailure::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "frame is {} bytes; the limit is max_body_bytes = {}: split the batch",
                    text.len(),
                    config.max_body_bytes
                ),
            );
            return self.answer_now(salvage_ref(text), error(&failure, None), slot);
        }
        let frame = match PublishFrame::parse(text, config.max_batch) {
            Ok(frame) => frame,
            Err(refused) => {
                let failure = ApiFailure::from(refused.error);
                return self.answer_now(refused.reference, error(&failure, None), slot);
            }
        };
        if let Err(limited) = self.state.limits.publish(self.key) {
            let retry_after = limited.retry_after;
            let failure = ApiFailure::from(limited);
            return self.answer_now(frame.reference, error(&failure, retry_after), slot);
        }
        let single = matches!(frame.body, PublishBody::Single(_));
        let mut users: Vec<UserId> = Vec::with_capacity(1);
        for event in frame.body.events() {
            if !users.contains(&event.user_id) {
                users.push(event.user_id.clone());
            }
        }
        let number = self.next_number();
        let (before, done) = self.order.chain(number, &users);
        let state = self.state.clone();
        let reference = frame.reference;
        let body = frame.body;
        let ok = self.metrics.ok();
        self.pending.push_back(
            async move {
                for earlier in before {
                    let _ = earlier.await;
                }
                let result = events::append(&state, body).await;
                drop(done);
                let outcome = match result {
                    Ok(receipts) => {
                        ok.increment(1);
                        receipts_outcome(receipts, single)
                    }
                    Err(failure) => error(&failure, None),
                };
                let text = PublishAnswer { reference, outcome }.to_json().into();
                Answered { text, slot, frame: number, users }
            }
            .boxed(),
        );
    }

    /// Queues an answer that needs no append, behind the answers of earlier frames.
    fn answer_now(
        &mut self,
        reference: herald_protocol::publish_socket::FrameRef,
        outcome: Outcome,
        slot: Slot,
    ) {
        let frame = self.next_number();
        let text = PublishAnswer { reference, outcome }.to_json().into();
        self.pending.push_back(
            futures_util::future::ready(Answered { text, slot, frame, users: Vec::new() }).boxed(),
        );
    }

    fn next_number(&mut self) -> u64 {
        self.frames += 1;
        self.frames
    }
}

/// The outcome of an append that succeeded.
fn receipts_outcome(mut receipts: Vec<Receipt>, single: bool) -> Outcome {
    if single && receipts.len() == 1 {
        Outcome::Receipt(receipts.remove(0))
    } else {
        Outcome::Receipts(receipts)
    }
}

/// The error answer for `failure`: the HTTP API's code and message.
fn error(failure: &ApiFailure, retry_after: Option<Duration>) -> Outcome {
    let body = failure.error();
    crate::metrics::publish_frame_refused(&body.code);
    Outcome::Error(AnswerError {
        code: body.code.clone(),
        message: body.message.clone(),
        retry_after_ms: retry_after.map(|d| d.as_millis().max(1) as u64),
    })
}

/// Writes answers as they come, flushing once per burst; a frame's slot is freed only when its
/// answer is in the kernel, so a publisher that does not read stops being read.
async fn write(mut sink: SplitSink<WebSocket, Message>, mut rx: mpsc::UnboundedReceiver<Out>) {
    let mut written = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Out::Answer(text, slot) => {
                    if sink.feed(Message::Text(text)).await.is_err() {
                        return;
                    }
                    written.push(slot);
                }
                Out::Ping => {
                    if sink.feed(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
                Out::Close(code, reason) => {
                    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
        written.clear();
    }
}

/// A frame's completion, awaited by the next frame of the same user.
type Done = Shared<oneshot::Receiver<()>>;

/// For each user with a frame in flight, the last such frame: a new frame for that user waits
/// for it, so appends per user happen in the order the frames were read.
#[derive(Default)]
struct UserOrder {
    last: HashMap<UserId, (u64, Done)>,
}

impl UserOrder {
    /// Registers frame `number` for `users`; returns the frames it must wait for and the sender
    /// to drop when it is appended.
    fn chain(&mut self, number: u64, users: &[UserId]) -> (Vec<Done>, oneshot::Sender<()>) {
        let (done, rx) = oneshot::channel();
        let rx = rx.shared();
        let mut before = Vec::new();
        for user in users {
            if let Some((_, earlier)) = self.last.insert(user.clone(), (number, rx.clone()))
                && earlier.peek().is_none()
            {
                before.push(earlier);
            }
        }
        (before, done)
    }

    /// Forgets frame `number` where no later frame replaced it.
    fn finished(&mut self, number: u64, users: &[UserId]) {
        for user in users {
            if self.last.get(user).is_some_and(|(n, _)| *n == number) {
                self.last.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn frames_of_one_user_wait_for_each_other_and_others_do_not() {
        let mut order = UserOrder::default();
        let (a, b) = (user("a"), user("b"));
        let (before, done1) = order.chain(1, std::slice::from_ref(&a));
        assert!(before.is_empty());
        let (before, _done2) = order.chain(2, std::slice::from_ref(&b));
        assert!(before.is_empty(), "another user does not wait");
        let (before, _done3) = order.chain(3, &[a.clone(), b.clone()]);
        assert_eq!(before.len(), 2, "a batch over both users waits for both");
        drop(done1);
        order.finished(1, std::slice::from_ref(&a));
        assert_eq!(order.last[&a].0, 3, "a later frame is not forgotten by an earlier one's end");
        let (before, _) = order.chain(4, std::slice::from_ref(&a));
        assert_eq!(before.len(), 1);
    }
}
