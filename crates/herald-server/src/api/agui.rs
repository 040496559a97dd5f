//! The AG-UI bridge's HTTP side (docs/agui.md): `GET /v1/agui/stream` and `POST /v1/agui/events`.
//!
//! The translation itself is [`herald_protocol::agui`]; this module only encodes. The stream is a
//! [`Session`], like a WebSocket connection ([`crate::ws::connection`]): it reads batches from the
//! shared log when hyper asks for the next chunk, so a client that stops reading costs nothing but
//! the retained log, and it holds no events of its own.
//!
//! Resume: every Herald event ends with one SSE message whose `id:` is `<epoch>:<seq>` (earlier
//! AG-UI events of the same Herald event carry no id, so a stream cut inside a group replays the
//! whole group rather than losing its tail). `Last-Event-ID` (or `?after=`) takes that form, or a
//! bare `<seq>` (then trusted to be of the current epoch). A cursor that cannot be honoured gets
//! a reset first (a run of its own holding `CUSTOM herald.reset`), then the active runs' events, as a
//! WebSocket gets `reset`. A resumed stream first re-opens the run and message open at the cursor.

use crate::AppState;
use crate::api::{Accepting, ApiFailure, Body, Publisher};
use crate::engine::AppendError;
use crate::limits::PeerAddr;
use crate::log::LogEntry;
use crate::registry::UserContext;
use crate::stream::{Cursor, Next, Refused, Session, Stop};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_protocol::agui::{Context, IdempotencyKey, InboundBody, InboundError, Outbound, reset_sequence};
use herald_protocol::frame::EventFrame;
use herald_protocol::{EventKind, Receipts, Recovery, ServerFrame, UserId};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::{debug, info};

/// A comment line is sent when the stream was idle this long, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Bytes of SSE text built per chunk (one write).
const CHUNK_BYTES: usize = 64 * 1024;

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// Handles `GET /v1/agui/stream`: the user's events as AG-UI Server-Sent Events.
///
/// `POST` is served the same way (its body, an AG-UI `RunAgentInput`, is ignored) so that
/// `@ag-ui/client`'s HttpAgent, which always POSTs, can be pointed at the stream unchanged — but
/// a POST stream is one run, as HttpAgent expects: it ends after the terminal event
/// (`RUN_FINISHED`/`RUN_ERROR`) of the first run it carries, so `runAgent()` resolves.
/// Query: `ticket` (instead of a JWT header), `after` (+ `epoch`) to resume when the client cannot
/// send `Last-Event-ID`, `thread_id` to follow one thread only.
#[utoipa::path(
    get,
    path = "/v1/agui/stream",
    tag = "stream",
    operation_id = "agui_stream",
    params(
        ("Last-Event-ID" = Option<String>, Header, description = "Resume cursor `<epoch>:<seq>` (or `<seq>`), as EventSource sends it."),
        ("after" = Option<String>, Query, description = "Resume cursor when `Last-Event-ID` cannot be sent: `<epoch>:<seq>` or `<seq>`."),
        ("epoch" = Option<String>, Query, description = "The epoch of a bare `<seq>` cursor."),
        ("thread_id" = Option<String>, Query, description = "Follow this thread only."),
    ),
    security(("jwt" = []), ("ticket" = [])),
    responses(
        (status = 200, description = "An endless `text/event-stream` of AG-UI events (one JSON object per `data:` line); \
the last message of each Herald event carries `id: <epoch>:<seq>`. The schema describes one message.",
            body = SseMessage, content_type = "text/event-stream"),
        crate::api::responses::StreamRefused,
    )
)]
pub async fn stream(
    State(state): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    PeerAddr(peer): PeerAddr,
    _: Accepting,
) -> Result<Response, ApiFailure> {
    let ip_slot = state.limits.connect_ip(peer.map(|p| p.ip()))?;
    state.auth.origin(&headers)?;
    let identity = crate::ws::authenticate(&state, &headers, &query).await?;
    let cursor = parse_cursor(&headers, &query)?;
    let manager = state.registry.manager(&UserContext::from_user(identity.user.clone()));
    let max_pending = state.config.max_pending_bytes as u64;
    let shutdown = state.shutdown.clone();
    let started = Session::start(&manager, cursor.as_ref(), max_pending, identity.expires_at, shutdown).await;
    let mut session = started.map_err(|e| match e {
        Refused::TooManyConnections(e) => ApiFailure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            format!("{e}: close another tab"),
        ),
        Refused::Engine(e) => e.into(),
    })?;
    let retained = session.log().oldest(usize::MAX);
    let epoch = session.log().epoch().to_owned();
    let opening = session.open(cursor.as_ref());
    let mut mapper = Outbound::new(query.get("thread_id").cloned());
    let mut preamble = String::new();
    match opening.recovery {
        // Rebuild the open-message state the client had at its cursor, so the stream continues
        // exactly where the previous one stopped.
        Recovery::Replayed => {
            let after = cursor.as_ref().map_or(0, |c| c.after);
            for entry in retained.iter().take_while(|e| e.seq <= after) {
                if let Some(frame) = event_frame(entry.frame.as_str()) {
                    mapper.prime(&frame);
                }
            }
            for event in mapper.reopen() {
                push_message(&mut preamble, &event, None);
            }
        }
        Recovery::Reset => {
            let reason = "the cursor is too old or from another epoch: drop your state";
            for event in reset_sequence(&epoch, opening.head, reason) {
                push_message(&mut preamble, &event, None);
            }
        }
        Recovery::None => {}
    }
    drop(retained);
    info!(user = %identity.user, recovery = ?opening.recovery, "agui stream opened");

    let mut keep_alive = tokio::time::interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let reader = Reader {
        _ip_slot: ip_slot,
        session,
        backlog: opening.backlog.into(),
        snapshot: opening.snapshot,
        preamble,
        mapper,
        epoch,
        keep_alive,
        one_run: (method == Method::POST).then(OneRun::default),
        done: false,
    };
    let body = futures_util::stream::unfold(reader, |mut r| async move {
        let chunk = r.next_chunk().await?;
        Some((Ok::<_, Infallible>(bytes::Bytes::from(chunk)), r))
    });
    let mut response = axum::body::Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    cors(&headers, h);
    Ok(response)
}

/// The AG-UI stream for `@ag-ui/client`'s HttpAgent, which always POSTs.
///
/// Served exactly as `GET /v1/agui/stream`; the body (an AG-UI `RunAgentInput`) is ignored.
#[utoipa::path(
    post,
    path = "/v1/agui/stream",
    tag = "stream",
    operation_id = "agui_stream_post",
    params(
        ("Last-Event-ID" = Option<String>, Header, description = "Resume cursor `<epoch>:<seq>` (or `<seq>`)."),
        ("after" = Option<String>, Query, description = "Resume cursor when `Last-Event-ID` cannot be sent: `<epoch>:<seq>` or `<seq>`."),
        ("epoch" = Option<String>, Query, description = "The epoch of a bare `<seq>` cursor."),
        ("thread_id" = Option<String>, Query, description = "Follow this thread only."),
    ),
    security(("jwt" = []), ("ticket" = [])),
    responses(
        (status = 200, description = "The same stream as `GET /v1/agui/stream`; the schema describes one message.",
            body = SseMessage, content_type = "text/event-stream"),
        crate::api::responses::StreamRefused,
    )
)]
pub async fn stream_post(
    state: State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    query: Query<HashMap<String, String>>,
    peer: PeerAddr,
    accepting: Accepting,
) -> Result<Response, ApiFailure> {
    stream(state, method, headers, query, peer, accepting).await
}

/// Answers a CORS preflight for the stream: browsers send one before a `fetch` with an
/// `Authorization` header (as `@ag-ui/client`'s HttpAgent does) from another origin.
#[utoipa::path(
    options,
    path = "/v1/agui/stream",
    tag = "stream",
    operation_id = "agui_stream_preflight",
    responses(
        (status = 204, description = "The origin may call the stream (CORS headers set)."),
        (status = 403, response = crate::api::responses::Forbidden),
    )
)]
pub async fn preflight(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    state.auth.origin(&headers)?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    cors(&headers, h);
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, last-event-id, accept, cache-control, content-type"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    Ok(response)
}

/// Echoes an allowed Origin (the origin policy was checked by the caller).
fn cors(request: &HeaderMap, response: &mut HeaderMap) {
    if let Some(origin) = request.get(header::ORIGIN) {
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        response.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// `Last-Event-ID` (preferred: EventSource sends the newest one on reconnect) or `?after=`, as
/// `<epoch>:<seq>` or a bare `<seq>` (with `?epoch=` if given).
fn parse_cursor(headers: &HeaderMap, query: &HashMap<String, String>) -> Result<Option<Cursor>, ApiFailure> {
    let header = headers.get(LAST_EVENT_ID).and_then(|v| v.to_str().ok()).map(str::trim);
    let Some(raw) = header.filter(|v| !v.is_empty()).or(query.get("after").map(String::as_str)) else {
        return Ok(None);
    };
    let (epoch, seq) = match raw.rsplit_once(':') {
        Some((epoch, seq)) => (Some(epoch.to_owned()), seq),
        None => (query.get("epoch").cloned(), raw),
    };
    let seq = seq.parse::<u64>().map_err(|_| {
        ApiFailure::bad_request(
            "invalid_cursor",
            format!("cursor {raw:?} must be <epoch>:<seq> or <seq> (a non-negative integer)"),
        )
    })?;
    Ok(Some(Cursor { after: seq, epoch }))
}

/// The Herald event a frame holds (a log entry's, or a snapshot's), if it holds one.
fn event_frame(frame: &str) -> Option<EventFrame> {
    match serde_json::from_str::<ServerFrame>(frame) {
        Ok(ServerFrame::Event(frame)) => Some(frame),
        _ => None,
    }
}

/// Appends one AG-UI event as an SSE message (`id:` when given).
fn push_message(buf: &mut String, event: &Value, id: Option<&str>) {
    SseMessage { data: &event.to_string(), id, event: None }.write_to(buf);
}

/// One Server-Sent Events message of `/v1/agui/stream`, as an SSE parser yields it.
#[derive(utoipa::ToSchema)]
pub struct SseMessage<'a> {
    /// One AG-UI event as compact JSON (`{"type":"RUN_STARTED",…}`, camelCase fields).
    #[schema(content_media_type = "application/json")]
    pub data: &'a str,
    /// `<epoch>:<seq>` on the last message of each Herald event: send it back as `Last-Event-ID`.
    pub id: Option<&'a str>,
    /// Always the default, `message`.
    pub event: Option<&'a str>,
}

impl SseMessage<'_> {
    /// Appends the message as SSE text: `event:` and `id:` lines when set, then one `data:` line
    /// (`data` is compact JSON, so it holds no newline).
    fn write_to(&self, buf: &mut String) {
        for (field, value) in [("event", self.event), ("id", self.id)] {
            if let Some(value) = value {
                buf.push_str(field);
                buf.push_str(": ");
                buf.push_str(value);
                buf.push('\n');
            }
        }
        buf.push_str("data: ");
        buf.push_str(self.data);
        buf.push_str("\n\n");
    }
}

/// One stream's session and mapping state; polled for the next chunk of SSE text.
struct Reader {
    /// The per-IP slot, held for the stream's life.
    _ip_slot: crate::limits::IpSlot,
    session: Session,
    backlog: VecDeque<Arc<LogEntry>>,
    /// The backlog is the active runs' snapshot: its messages carry no `id:` (a resume point
    /// inside a snapshot would skip the rest of it); the first live event carries the next one.
    snapshot: bool,
    preamble: String,
    mapper: Outbound,
    epoch: String,
    keep_alive: Interval,
    /// A POST stream (HttpAgent's run): ends after its first run's terminal event.
    one_run: Option<OneRun>,
    done: bool,
}

/// The run a POST stream carries: the first run it writes an event of.
#[derive(Default)]
struct OneRun {
    run: Option<String>,
    ended: bool,
}

impl OneRun {
    /// Notes an event written to the stream; true once the stream's run has ended.
    fn saw(&mut self, entry: &LogEntry) -> bool {
        if let Some(run) = &entry.run_id {
            let mine = self.run.get_or_insert_with(|| run.clone());
            self.ended |= mine == run && entry.kind.is_terminal();
        }
        self.ended
    }
}

impl Reader {
    /// The next chunk of SSE text, or `None` when the stream ends (the client then resumes).
    async fn next_chunk(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        if self.one_run.as_ref().is_some_and(|r| r.ended) {
            debug!(cursor = self.session.cursor(), "agui POST stream ends: its run ended");
            self.done = true;
            return None;
        }
        let mut buf = std::mem::take(&mut self.preamble);
        if !self.backlog.is_empty() {
            let mut sent = 0;
            while buf.len() < CHUNK_BYTES
                && !self.one_run.as_ref().is_some_and(|r| r.ended)
                && let Some(entry) = self.backlog.pop_front()
            {
                self.write(&mut buf, &entry, !self.snapshot);
                sent += 1;
            }
            crate::metrics::delivered(sent);
            return Some(buf);
        }
        if !buf.is_empty() {
            return Some(buf);
        }
        match self.session.next(CHUNK_BYTES, None, self.keep_alive.tick()).await {
            Next::Batch(batch) => {
                // Once live, a reader this far behind is cut off, like a WebSocket with 4008.
                if self.session.is_live() && self.session.is_too_far_behind() {
                    crate::metrics::slow_consumer_closed();
                    return self.end(Stop::SlowConsumer);
                }
                // A POST stream stops at its run's terminal event; what follows it is not sent.
                let mut batch = batch;
                for (i, entry) in batch.iter().enumerate() {
                    self.write(&mut buf, entry, true);
                    if self.one_run.as_ref().is_some_and(|r| r.ended) {
                        batch.truncate(i + 1);
                        break;
                    }
                }
                crate::metrics::delivered(batch.len());
                self.session.advance(batch);
                Some(buf)
            }
            Next::Stop(stop) => self.end(stop),
            Next::Other(_) => Some(": keep-alive\n\n".to_owned()),
        }
    }

    /// The AG-UI events of one Herald event; the last one carries the resume id (`with_id`).
    fn write(&mut self, buf: &mut String, entry: &LogEntry, with_id: bool) {
        let Some(frame) = event_frame(entry.frame.as_str()) else {
            return;
        };
        let events = self.mapper.map(&frame);
        if let Some(one_run) = &mut self.one_run {
            one_run.saw(entry);
        }
        let id = format!("{}:{}", self.epoch, entry.seq);
        let last = events.len().saturating_sub(1);
        for (i, event) in events.iter().enumerate() {
            push_message(buf, event, (with_id && i == last).then_some(id.as_str()));
        }
    }

    /// The stream's last chunk: an SSE comment saying why it ends.
    fn end(&mut self, stop: Stop) -> Option<String> {
        let why = match stop {
            Stop::Reset => "history was reset: reconnect with Last-Event-ID",
            Stop::SlowConsumer => "too far behind: reconnect with Last-Event-ID",
            Stop::Shutdown => "server shutting down",
            Stop::TokenExpired => "token expired: reconnect with a fresh token",
            Stop::Disconnected => "disconnected by an operator: do not reconnect on your own",
        };
        debug!(cursor = self.session.cursor(), "agui stream ends: {why}");
        self.done = true;
        Some(format!(": {why}\n\n"))
    }
}

/// Handles `POST /v1/agui/events`: an AG-UI agent's events, appended as Herald events, all or
/// nothing.
#[utoipa::path(
    post,
    path = "/v1/agui/events",
    tag = "publish",
    operation_id = "agui_publish",
    security(("api_key" = [])),
    request_body(
        content = herald_protocol::agui::InboundBody,
        example = json!({"user_id": "user-42", "thread_id": "thread-7", "events": [
            {"type": "RUN_STARTED", "threadId": "thread-7", "runId": "run-9"},
            {"type": "TEXT_MESSAGE_START", "messageId": "m1", "role": "assistant"},
            {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1", "delta": "Hello"},
            {"type": "TEXT_MESSAGE_END", "messageId": "m1"},
            {"type": "RUN_FINISHED", "threadId": "thread-7", "runId": "run-9"}
        ]})
    ),
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 100, pattern = "^[!-~]+$", description = "Makes a retry safe: 1 to 100 visible ASCII characters (e.g. a UUID), one per request and the same when it is retried. The events get the ids `{key}:{n}`, so a retried request gets the first one's receipts instead of appending twice or a 409 for its second `RUN_STARTED`."),
    ),
    responses(
        (status = 200, description = "Appended: one receipt per Herald event the AG-UI events mapped to.", body = Receipts),
        crate::api::responses::AppendRefused,
    )
)]
pub async fn publish(
    State(state): State<Arc<AppState>>,
    _: Publisher,
    _: Accepting,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiFailure> {
    let key = headers.get("idempotency-key").map(|v| IdempotencyKey::parse(v.as_bytes()));
    let key = key.transpose().map_err(inbound_failure)?;
    let parsed = InboundBody::parse(&body, state.config.max_batch).map_err(inbound_failure)?;
    let context =
        if parsed.needs_context() { thread_context(&state, &parsed).await? } else { Context::default() };
    let mapped = parsed.to_herald(&context).map_err(inbound_failure)?;
    let mapped = match &key {
        Some(key) => mapped.keyed(key),
        None => mapped,
    };
    if mapped.events.is_empty() {
        return Ok(Json(Receipts { results: Vec::new() }).into_response());
    }
    match super::events::append_counted(&state, mapped.events).await {
        Ok(receipts) => {
            super::events::let_deliveries_run().await;
            Ok(Json(Receipts { results: receipts }).into_response())
        }
        Err(AppendError::RunRule { index, source }) => {
            crate::metrics::run_rejected(source.rule());
            let at = mapped.sources.get(index.unwrap_or(0)).copied().unwrap_or(0);
            let kind = parsed.events[at].get("type").and_then(Value::as_str).unwrap_or_default();
            Err(ApiFailure::new(
                StatusCode::CONFLICT,
                "run_state",
                format!("events[{at}] ({kind}): {source} (rule {})", source.rule()),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

fn inbound_failure(e: InboundError) -> ApiFailure {
    match &e {
        InboundError::InvalidJson(_) => ApiFailure::bad_request("invalid_json", e.to_string()),
        InboundError::Invalid { .. } => ApiFailure::bad_request("invalid_event", e.to_string()),
        InboundError::NoRun { .. } => {
            crate::metrics::run_rejected("not_started");
            ApiFailure::new(StatusCode::CONFLICT, "run_state", format!("{e} (rule not_started)"))
        }
        InboundError::TooMany { .. } => {
            ApiFailure::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        InboundError::BadKey => ApiFailure::bad_request("invalid_request", e.to_string()),
    }
}

/// The run a batch continues and its tool names: the run the body names, else the thread's
/// latest active run (AG-UI events after RUN_STARTED carry no run id).
///
/// From the active runs' snapshot, of the frames it needs only (the runs' starts and tool
/// calls): a run's text, merged into one frame as it streams, is neither rendered nor parsed,
/// so an agent posting its deltas one request each pays the same at the first and the
/// thousandth.
async fn thread_context(state: &AppState, body: &InboundBody) -> Result<Context, ApiFailure> {
    let user = UserId::parse(&body.user_id)
        .map_err(|e| ApiFailure::bad_request("invalid_event", format!("user_id: {e}")))?;
    let log = state.engine.open_log(&user).await?;
    let (_, active) =
        log.snapshot_of(body.run_id.as_deref(), &[EventKind::AgentStarted, EventKind::ToolExecuting]);
    let run_id = match &body.run_id {
        Some(run) => Some(run.clone()),
        None => active
            .iter()
            .rev()
            .filter(|f| f.kind == EventKind::AgentStarted)
            .filter_map(|f| event_frame(&f.frame))
            .find(|f| body.thread_id.is_none() || f.thread_id == body.thread_id)
            .and_then(|f| f.run_id),
    };
    let tool_names = active
        .iter()
        .filter(|f| f.kind == EventKind::ToolExecuting && Some(&f.run_id) == run_id.as_ref())
        .filter_map(|f| event_frame(&f.frame))
        .filter_map(|f| {
            let call = f.data.get("tool_call_id")?.as_str()?;
            let name = f.data.get("tool_name")?.as_str()?;
            Some((call.to_owned(), name.to_owned()))
        })
        .collect();
    Ok(Context { run_id, tool_names })
}
