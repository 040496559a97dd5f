//! The AG-UI bridge's mapping (docs/agui.md): Herald events ⇄ AG-UI events, in one place.
//!
//! AG-UI (<https://docs.ag-ui.com>) is the event protocol agent frameworks and frontends such as
//! CopilotKit speak. Herald stores its own events; this module translates both ways, and nothing
//! else in Herald knows AG-UI field names. It is pure, so the translation is unit-tested here and
//! the server only moves bytes.
//!
//! | Herald event | AG-UI events out | AG-UI events in |
//! |---|---|---|
//! | `agent_started` | `RUN_STARTED{threadId,runId,parentRunId?}` | `RUN_STARTED` |
//! | `agent_text {delta,message_id?}` | `TEXT_MESSAGE_START` (once per message), `TEXT_MESSAGE_CONTENT` | `TEXT_MESSAGE_CONTENT`, `TEXT_MESSAGE_CHUNK` (START/END carry no data) |
//! | `agent_thinking {text,message_id?}` | `REASONING_START`, `REASONING_MESSAGE_START` (once), `REASONING_MESSAGE_CONTENT` | `REASONING_MESSAGE_CONTENT`, `REASONING_MESSAGE_CHUNK`, `THINKING_TEXT_MESSAGE_CONTENT` |
//! | `tool_executing {tool_name,tool_call_id,parameters}` | `TOOL_CALL_START`, `TOOL_CALL_ARGS`, `TOOL_CALL_END` | `TOOL_CALL_START` + `TOOL_CALL_ARGS`… + `TOOL_CALL_END` (or `TOOL_CALL_CHUNK`s), one Herald event at the end |
//! | `tool_completed {tool_call_id,content}` | `TOOL_CALL_RESULT{messageId,toolCallId,content,role:"tool"}` | `TOOL_CALL_RESULT` |
//! | `agent_completed {result?}` | (open message/reasoning ended), `RUN_FINISHED{threadId,runId,result?}` | `RUN_FINISHED` |
//! | `agent_cancelled` | `RUN_FINISHED{…,outcome:{type:"cancelled"}}` | `RUN_FINISHED` with `outcome.type == "cancelled"` |
//! | `agent_error {message,code?}` | `RUN_ERROR{message,code?}` | `RUN_ERROR` |
//! | `progress` | `CUSTOM{name:"herald.progress",value:data}` | — |
//! | `run_stalled` | `CUSTOM{name:"herald.run_stalled",value:data}` | — |
//! | `custom {name,value}` | `CUSTOM{name,value}` | `CUSTOM` |
//! | `custom {name:T,agui:{type:T,…}}` | the AG-UI event `agui`, verbatim | any other type `T` (`STATE_SNAPSHOT`, `STEP_STARTED`, …) |
//!
//! Every outbound event carries `timestamp` (ms since the Unix epoch, from Herald's `ts`).
//! A message or reasoning block stays open while its run sends more of the same kind, and is
//! ended before any other event of that run, so the stream obeys AG-UI's ordering rules.

use crate::EventKind;
use crate::frame::EventFrame;
use crate::publish::{EventInput, FieldError};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, VecDeque};

/// Name of the CUSTOM event that tells an AG-UI client its cursor could not be honoured.
pub const RESET_EVENT: &str = "herald.reset";

/// Most runs whose open message/tool state one stream remembers; the oldest is forgotten past it,
/// so a stream's memory is bounded even when runs never end.
const MAX_RUNS: usize = 1024;

/// AG-UI event types the outbound mapping produces itself; a `custom` event's embedded `agui`
/// object of one of these types is not replayed verbatim (it could break the stream's order).
const STRUCTURAL: [&str; 5] = ["RUN_", "TEXT_MESSAGE_", "TOOL_CALL_", "REASONING_", "THINKING_"];

/// What one outbound stream remembers per run: which message, reasoning block and tool calls are
/// open. It is a function of the run's own events, so a resumed stream rebuilds it exactly by
/// feeding the events up to its cursor through [`Outbound::prime`].
#[derive(Debug, Default)]
pub struct Outbound {
    thread: Option<String>,
    runs: HashMap<String, RunView>,
    order: VecDeque<String>,
}

#[derive(Debug, Default)]
struct RunView {
    thread_id: String,
    text: Option<String>,
    reasoning: Option<(String, String)>,
    tools: Vec<(String, String)>,
}

impl Outbound {
    /// A mapper for a stream of every thread (`None`) or of one thread.
    pub fn new(thread: Option<String>) -> Self {
        Self { thread, ..Self::default() }
    }

    /// Updates the state with an event the client already has, emitting nothing.
    pub fn prime(&mut self, event: &EventFrame) {
        self.map(event);
    }

    /// The AG-UI events for one Herald event, in order (empty when the thread filter drops it).
    pub fn map(&mut self, e: &EventFrame) -> Vec<Value> {
        let thread = e
            .thread_id
            .clone()
            .or_else(|| e.run_id.as_ref().and_then(|r| self.runs.get(r)).map(|r| r.thread_id.clone()));
        let out = self.translate(e);
        match &self.thread {
            Some(wanted) if thread.as_deref() != Some(wanted.as_str()) => Vec::new(),
            _ => out,
        }
    }

    fn translate(&mut self, e: &EventFrame) -> Vec<Value> {
        let ts = timestamp_ms(&e.ts);
        let data = e.data.as_object().cloned().unwrap_or_default();
        let mut out = Vec::new();
        let kind = EventKind::from_name(&e.event);
        let run_id = match (&e.run_id, kind) {
            (Some(run), Some(k)) if k != EventKind::Custom => run.clone(),
            _ => {
                // Stand-alone custom events (or an unknown name): no run state involved.
                if let Some(run) = e.run_id.as_ref().and_then(|r| self.runs.get_mut(r)) {
                    run.close_blocks(&mut out);
                }
                out.push(custom(&e.event, &data));
                return stamp(out, ts);
            }
        };
        let kind = kind.expect("matched above");
        if kind == EventKind::AgentStarted {
            self.forget(&run_id);
            let thread_id = e.thread_id.clone().unwrap_or_else(|| run_id.clone());
            out.push(run_started(&thread_id, &run_id, &data));
            self.remember(run_id, RunView { thread_id, ..RunView::default() });
            return stamp(out, ts);
        }
        if !self.runs.contains_key(&run_id) {
            // A run whose start this stream never saw (trimmed from history): start it, so the
            // stream stays valid AG-UI.
            let thread_id = e.thread_id.clone().unwrap_or_else(|| run_id.clone());
            out.push(run_started(&thread_id, &run_id, &Map::new()));
            self.remember(run_id.clone(), RunView { thread_id, ..RunView::default() });
        }
        let run = self.runs.get_mut(&run_id).expect("remembered above");
        match kind {
            EventKind::AgentText => {
                if let Some((phase, message)) = run.reasoning.take() {
                    end_reasoning(&mut out, phase, message);
                }
                let wanted = str_of(&data, "message_id").map(str::to_owned);
                let id = match (&run.text, wanted) {
                    (Some(open), None) => open.clone(),
                    (Some(open), Some(w)) if *open == w => w,
                    (_, wanted) => {
                        if let Some(open) = run.text.take() {
                            out.push(json!({"type": "TEXT_MESSAGE_END", "messageId": open}));
                        }
                        let id = wanted.unwrap_or_else(|| e.id.clone());
                        let role =
                            str_of(&data, "role").filter(|r| TEXT_ROLES.contains(r)).unwrap_or("assistant");
                        out.push(json!({"type": "TEXT_MESSAGE_START", "messageId": id, "role": role}));
                        run.text = Some(id.clone());
                        id
                    }
                };
                let delta = str_of(&data, "delta").or_else(|| str_of(&data, "text")).unwrap_or_default();
                out.push(json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": id, "delta": delta}));
            }
            EventKind::AgentThinking => {
                if let Some(open) = run.text.take() {
                    out.push(json!({"type": "TEXT_MESSAGE_END", "messageId": open}));
                }
                let wanted = str_of(&data, "message_id").map(str::to_owned);
                let message = match (&run.reasoning, wanted) {
                    (Some((_, open)), None) => open.clone(),
                    (Some((_, open)), Some(w)) if *open == w => w,
                    (_, wanted) => {
                        if let Some((phase, message)) = run.reasoning.take() {
                            end_reasoning(&mut out, phase, message);
                        }
                        let message = wanted.unwrap_or_else(|| e.id.clone());
                        let phase =
                            str_of(&data, "reasoning_id").map_or_else(|| message.clone(), str::to_owned);
                        out.push(json!({"type": "REASONING_START", "messageId": phase}));
                        out.push(json!({"type": "REASONING_MESSAGE_START", "messageId": message, "role": "reasoning"}));
                        run.reasoning = Some((phase, message.clone()));
                        message
                    }
                };
                let delta = str_of(&data, "text").or_else(|| str_of(&data, "delta")).unwrap_or_default();
                out.push(json!({"type": "REASONING_MESSAGE_CONTENT", "messageId": message, "delta": delta}));
            }
            EventKind::ToolExecuting => {
                run.close_blocks(&mut out);
                let name = str_of(&data, "tool_name").unwrap_or_default().to_owned();
                let call = str_of(&data, "tool_call_id").map_or_else(|| e.id.clone(), str::to_owned);
                let mut start = json!({"type": "TOOL_CALL_START", "toolCallId": call, "toolCallName": name});
                if let Some(parent) = str_of(&data, "parent_message_id") {
                    start["parentMessageId"] = parent.into();
                }
                out.push(start);
                let args = match (data.get("arguments"), data.get("parameters")) {
                    (Some(Value::String(raw)), _) => Some(raw.clone()),
                    (_, Some(p)) => Some(p.to_string()),
                    _ => None,
                };
                if let Some(delta) = args {
                    out.push(json!({"type": "TOOL_CALL_ARGS", "toolCallId": call, "delta": delta}));
                }
                out.push(json!({"type": "TOOL_CALL_END", "toolCallId": call}));
                run.tools.push((call, name));
            }
            EventKind::ToolCompleted => {
                run.close_blocks(&mut out);
                let call = match str_of(&data, "tool_call_id") {
                    Some(id) => {
                        run.tools.retain(|(c, _)| c != id);
                        id.to_owned()
                    }
                    None => {
                        let name = str_of(&data, "tool_name").unwrap_or_default();
                        match run.tools.iter().position(|(_, n)| n == name) {
                            Some(i) => run.tools.remove(i).0,
                            None => e.id.clone(),
                        }
                    }
                };
                let message = str_of(&data, "message_id").map_or_else(|| e.id.clone(), str::to_owned);
                out.push(json!({
                    "type": "TOOL_CALL_RESULT",
                    "messageId": message,
                    "toolCallId": call,
                    "content": tool_content(&data),
                    "role": "tool",
                }));
            }
            EventKind::AgentCompleted | EventKind::AgentCancelled => {
                run.close_blocks(&mut out);
                let mut finished =
                    json!({"type": "RUN_FINISHED", "threadId": run.thread_id, "runId": run_id});
                if let Some(result) = data.get("result") {
                    finished["result"] = result.clone();
                }
                if kind == EventKind::AgentCancelled {
                    finished["outcome"] = json!({"type": "cancelled"});
                } else if let Some(outcome) = data.get("outcome").filter(|o| o.get("type").is_some()) {
                    finished["outcome"] = outcome.clone();
                }
                out.push(finished);
                self.forget(&run_id);
            }
            EventKind::AgentError => {
                run.close_blocks(&mut out);
                let mut error =
                    json!({"type": "RUN_ERROR", "message": str_of(&data, "message").unwrap_or_default()});
                if let Some(code) = str_of(&data, "code") {
                    error["code"] = code.into();
                }
                out.push(error);
                self.forget(&run_id);
            }
            EventKind::Progress | EventKind::RunStalled => {
                run.close_blocks(&mut out);
                out.push(json!({"type": "CUSTOM", "name": format!("herald.{}", kind), "value": data}));
            }
            EventKind::AgentStarted | EventKind::Custom => unreachable!("handled above"),
        }
        stamp(out, ts)
    }

    /// The events that re-open, for a resumed stream, what the client had open at its cursor:
    /// `RUN_STARTED` of each run in progress, then its open reasoning block and text message. A
    /// continuation then reads as a valid AG-UI sequence on its own (the client's verifier sees
    /// every stream from its first event), and the ids are the same, so the client appends the
    /// continuation to the message it already has.
    pub fn reopen(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for run_id in &self.order {
            let Some(run) = self.runs.get(run_id) else { continue };
            if self.thread.as_ref().is_some_and(|t| *t != run.thread_id) {
                continue;
            }
            out.push(run_started(&run.thread_id, run_id, &Map::new()));
            if let Some((phase, message)) = &run.reasoning {
                out.push(json!({"type": "REASONING_START", "messageId": phase}));
                out.push(
                    json!({"type": "REASONING_MESSAGE_START", "messageId": message, "role": "reasoning"}),
                );
            }
            if let Some(message) = &run.text {
                out.push(json!({"type": "TEXT_MESSAGE_START", "messageId": message, "role": "assistant"}));
            }
        }
        out
    }

    fn remember(&mut self, run_id: String, view: RunView) {
        if self.runs.len() >= MAX_RUNS
            && let Some(oldest) = self.order.pop_front()
        {
            self.runs.remove(&oldest);
        }
        self.order.push_back(run_id.clone());
        self.runs.insert(run_id, view);
    }

    fn forget(&mut self, run_id: &str) {
        if self.runs.remove(run_id).is_some() {
            self.order.retain(|r| r != run_id);
        }
    }
}

impl RunView {
    /// Ends an open text message or reasoning block before an event of another kind.
    fn close_blocks(&mut self, out: &mut Vec<Value>) {
        if let Some(open) = self.text.take() {
            out.push(json!({"type": "TEXT_MESSAGE_END", "messageId": open}));
        }
        if let Some((phase, message)) = self.reasoning.take() {
            end_reasoning(out, phase, message);
        }
    }
}

/// Roles AG-UI allows on a streamed text message.
const TEXT_ROLES: [&str; 4] = ["assistant", "developer", "system", "user"];

fn end_reasoning(out: &mut Vec<Value>, phase: String, message: String) {
    out.push(json!({"type": "REASONING_MESSAGE_END", "messageId": message}));
    out.push(json!({"type": "REASONING_END", "messageId": phase}));
}

fn run_started(thread_id: &str, run_id: &str, data: &Map<String, Value>) -> Value {
    let mut started = json!({"type": "RUN_STARTED", "threadId": thread_id, "runId": run_id});
    if let Some(parent) = str_of(data, "parent_run_id") {
        started["parentRunId"] = parent.into();
    }
    started
}

/// A `custom` event: its embedded AG-UI event verbatim when it carries a non-structural one,
/// else `CUSTOM{name, value}` (`value` is `data.value`, or the rest of `data`).
fn custom(event: &str, data: &Map<String, Value>) -> Value {
    if let Some(Value::Object(agui)) = data.get("agui")
        && let Some(t) = agui.get("type").and_then(Value::as_str)
        && !STRUCTURAL.iter().any(|p| t.starts_with(p))
    {
        return Value::Object(agui.clone());
    }
    let (name, value) = match EventKind::from_name(event) {
        Some(EventKind::Custom) => {
            let name = str_of(data, "name").unwrap_or("custom").to_owned();
            let value = data.get("value").cloned().unwrap_or_else(|| {
                let mut rest = data.clone();
                rest.remove("name");
                Value::Object(rest)
            });
            (name, value)
        }
        _ => (format!("herald.{event}"), Value::Object(data.clone())),
    };
    json!({"type": "CUSTOM", "name": name, "value": value})
}

/// `TOOL_CALL_RESULT.content`: `content`, else `result`/`output` (JSON text unless a string), else
/// the rest of the data as JSON text.
fn tool_content(data: &Map<String, Value>) -> Value {
    match data.get("content") {
        Some(c @ (Value::String(_) | Value::Array(_))) => return c.clone(),
        Some(other) => return other.to_string().into(),
        None => {}
    }
    for key in ["result", "output"] {
        match data.get(key) {
            Some(Value::String(s)) => return s.clone().into(),
            Some(other) => return other.to_string().into(),
            None => {}
        }
    }
    let mut rest = data.clone();
    for key in ["tool_name", "tool_call_id", "message_id"] {
        rest.remove(key);
    }
    if rest.is_empty() { Value::String(String::new()) } else { Value::Object(rest).to_string().into() }
}

fn stamp(mut events: Vec<Value>, ts: Option<i64>) -> Vec<Value> {
    if let Some(ts) = ts {
        for e in &mut events {
            if e.get("timestamp").is_none() {
                e["timestamp"] = ts.into();
            }
        }
    }
    events
}

/// The CUSTOM event sent first when a stream's cursor cannot be honoured: the client must drop
/// its state; the active runs' events follow.
pub fn reset_event(epoch: &str, seq: u64, reason: &str) -> Value {
    json!({
        "type": "CUSTOM",
        "name": RESET_EVENT,
        "value": {"epoch": epoch, "seq": seq, "reason": reason},
    })
}

/// A reset as a valid AG-UI sequence of its own: a run of Herald's (`runId` `herald-reset-<epoch>-<seq>`,
/// `threadId` `herald`) holding only the [`reset_event`]. AG-UI clients check that a stream starts
/// with `RUN_STARTED` and that runs do not overlap, so the reset cannot come bare or inside a run.
pub fn reset_sequence(epoch: &str, seq: u64, reason: &str) -> Vec<Value> {
    let run_id = format!("herald-reset-{epoch}-{seq}");
    vec![
        json!({"type": "RUN_STARTED", "threadId": "herald", "runId": run_id}),
        reset_event(epoch, seq, reason),
        json!({"type": "RUN_FINISHED", "threadId": "herald", "runId": run_id}),
    ]
}

fn str_of<'a>(data: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    data.get(key).and_then(Value::as_str)
}

/// Milliseconds since the Unix epoch of Herald's `ts` (`YYYY-MM-DDTHH:MM:SS[.fff]Z`).
pub fn timestamp_ms(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !ts.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = &ts[19..ts.len() - 1];
    let ms = match frac.strip_prefix('.') {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) => {
            let padded = format!("{digits:0<3}");
            padded[..3].parse::<i64>().ok()?
        }
        None if frac.is_empty() => 0,
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms)
}

// ---------------------------------------------------------------------------------------------
// Inbound: AG-UI events → Herald events.

/// A parsed `POST /v1/agui/events` body.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = AguiPublish))]
pub struct InboundBody {
    /// Owner of the events.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::UserId))]
    pub user_id: String,
    /// The thread; defaults to `RUN_STARTED.threadId`.
    pub thread_id: Option<String>,
    /// The run of a batch that does not start with `RUN_STARTED` (continuing a run).
    pub run_id: Option<String>,
    /// The AG-UI events, in order: objects with a `type` (`RUN_STARTED`, `TEXT_MESSAGE_*`,
    /// `TOOL_CALL_*`, `RUN_FINISHED`, `RUN_ERROR`, …) and camelCase fields as the AG-UI spec has them.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>, min_items = 1))]
    pub events: Vec<Value>,
}

/// What the server knows about the thread's active run, for a batch that continues it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Context {
    /// The thread's active run, if any.
    pub run_id: Option<String>,
    /// Tool names of that run's calls by `tool_call_id` (a result needs the name).
    pub tool_names: HashMap<String, String>,
}

/// An AG-UI event's `type`, if it has one.
fn event_type(event: &Value) -> Option<&str> {
    event.get("type").and_then(Value::as_str)
}

/// Why an inbound body was refused; nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// Not JSON, or not the body's shape.
    #[error("{0}")]
    InvalidJson(String),
    /// An AG-UI event is malformed (or a tool call is not complete in this request).
    #[error("{}{message}", index.map(|i| format!("events[{i}]: ")).unwrap_or_default())]
    Invalid {
        /// Position in `events`.
        index: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A run-scoped event with no run: `RUN_STARTED` must come first.
    #[error("events[{index}]: {message}")]
    NoRun {
        /// Position in `events`.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// More events than the batch limit.
    #[error("batch has {len} events; the limit is {max} per request, split it")]
    TooMany {
        /// Events sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The `Idempotency-Key` header is not 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII
    /// characters.
    #[error(
        "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters (e.g. a UUID), \
         one per request and the same when the request is retried"
    )]
    BadKey,
}

/// Longest `Idempotency-Key` accepted: with `:` and the event's position it stays within an
/// event id's limit ([`crate::publish::MAX_KEY_LEN`]).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 100;

/// A request's `Idempotency-Key`: AG-UI events carry no ids, so this is what makes a retried
/// request safe (see [`Mapped::keyed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks the header's bytes: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII characters.
    pub fn parse(raw: &[u8]) -> Result<Self, InboundError> {
        let visible = raw.iter().all(|b| b.is_ascii_graphic());
        if raw.is_empty() || raw.len() > MAX_IDEMPOTENCY_KEY_LEN || !visible {
            return Err(InboundError::BadKey);
        }
        Ok(Self(String::from_utf8_lossy(raw).into_owned()))
    }
}

/// Herald events made from an inbound body, with the AG-UI index each came from (so a run rule
/// broken by Herald event `i` is reported at `sources[i]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Mapped {
    /// The events to append, in order.
    pub events: Vec<EventInput>,
    /// For each event, the index of the AG-UI event it came from.
    pub sources: Vec<usize>,
}

impl Mapped {
    /// Gives each event the id `{key}:{n}` (`n` its position among the Herald events), so a
    /// request retried with the same key maps to the same ids: Herald's idempotency then answers
    /// the first request's receipts instead of appending twice (or refusing a second
    /// `RUN_STARTED`).
    pub fn keyed(mut self, key: &IdempotencyKey) -> Self {
        for (n, event) in self.events.iter_mut().enumerate() {
            event.id = Some(format!("{}:{n}", key.0));
        }
        self
    }
}

/// A tool call being assembled from START/ARGS (or CHUNKs) until its END.
#[derive(Debug)]
struct PendingCall {
    index: usize,
    id: String,
    name: String,
    parent: Option<String>,
    args: String,
    chunked: bool,
}

impl InboundBody {
    /// Parses `{"user_id","thread_id"?,"run_id"?,"events":[…]}` with up to `max` events.
    pub fn parse(body: &[u8], max: usize) -> Result<Self, InboundError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| InboundError::InvalidJson(format!("body is not valid JSON: {e}")))?;
        let Value::Object(mut obj) = value else {
            return Err(invalid(None, "the body must be {\"user_id\",\"thread_id\",\"events\":[…]}"));
        };
        let mut key = |k: &str| -> Result<Option<String>, InboundError> {
            match obj.remove(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(invalid(None, format!("{k} must be a string"))),
            }
        };
        let user_id = key("user_id")?.ok_or_else(|| invalid(None, "user_id is required"))?;
        crate::UserId::parse(&user_id).map_err(|e| invalid(None, e.to_string()))?;
        let thread_id = key("thread_id")?;
        let run_id = key("run_id")?;
        let events = match obj.remove("events") {
            Some(Value::Array(events)) if !events.is_empty() => events,
            Some(Value::Array(_)) => return Err(invalid(None, "events must not be empty")),
            _ => return Err(invalid(None, "events must be an array of AG-UI events")),
        };
        if let Some(extra) = obj.keys().next() {
            return Err(invalid(
                None,
                format!(
                    "unknown field {extra:?}; the body is {{\"user_id\",\"thread_id\",\"run_id\",\"events\"}}"
                ),
            ));
        }
        if events.len() > max {
            return Err(InboundError::TooMany { len: events.len(), max });
        }
        Ok(Self { user_id, thread_id, run_id, events })
    }

    /// True when the server must look up the run the batch continues and pass it as
    /// [`Context`]: the batch continues a run it does not name (the thread's active run is
    /// meant), or it holds a `TOOL_CALL_RESULT` for a call started in an earlier request (the
    /// result needs the call's tool name, which only the run knows).
    pub fn needs_context(&self) -> bool {
        let unnamed_run =
            self.run_id.is_none() && self.events.iter().find_map(event_type) != Some("RUN_STARTED");
        unnamed_run || self.results_of_earlier_calls()
    }

    /// True when a `TOOL_CALL_RESULT` names a call no `TOOL_CALL_START` of this batch started.
    fn results_of_earlier_calls(&self) -> bool {
        let calls = |kind: &'static str| {
            self.events
                .iter()
                .filter(move |e| event_type(e) == Some(kind))
                .filter_map(|e| e.get("toolCallId").and_then(Value::as_str))
        };
        let started: Vec<&str> = calls("TOOL_CALL_START").collect();
        calls("TOOL_CALL_RESULT").any(|id| !started.contains(&id))
    }

    /// Maps the AG-UI events to Herald events (field rules checked; run rules are the engine's).
    pub fn to_herald(&self, ctx: &Context) -> Result<Mapped, InboundError> {
        let mut m = Inbound {
            body: self,
            run: self.run_id.clone().or_else(|| ctx.run_id.clone()),
            thread: self.thread_id.clone(),
            tool_names: ctx.tool_names.clone(),
            pending: Vec::new(),
            text_roles: HashMap::new(),
            last_text: None,
            last_reasoning: None,
            reasoning_phase: None,
            out: Mapped { events: Vec::new(), sources: Vec::new() },
        };
        for (index, event) in self.events.iter().enumerate() {
            m.event(index, event)?;
        }
        m.flush_chunks()?;
        if let Some(call) = m.pending.first() {
            return Err(invalid(
                Some(call.index),
                format!(
                    "TOOL_CALL_START for toolCallId {:?} has no TOOL_CALL_END in this request: send a tool call's START, ARGS and END together",
                    call.id
                ),
            ));
        }
        Ok(m.out)
    }
}

struct Inbound<'a> {
    body: &'a InboundBody,
    run: Option<String>,
    thread: Option<String>,
    tool_names: HashMap<String, String>,
    pending: Vec<PendingCall>,
    text_roles: HashMap<String, String>,
    last_text: Option<String>,
    last_reasoning: Option<String>,
    reasoning_phase: Option<String>,
    out: Mapped,
}

impl Inbound<'_> {
    fn event(&mut self, index: usize, event: &Value) -> Result<(), InboundError> {
        let Some(obj) = event.as_object() else {
            return Err(invalid(Some(index), "an AG-UI event must be a JSON object"));
        };
        let Some(kind) = obj.get("type").and_then(Value::as_str) else {
            return Err(invalid(Some(index), "type is required (an AG-UI event type such as RUN_STARTED)"));
        };
        if kind != "TOOL_CALL_CHUNK" {
            self.flush_chunks()?;
        }
        let field = |name: &str| -> Result<String, InboundError> {
            match obj.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(invalid(Some(index), format!("{kind} needs {name} (a string)"))),
            }
        };
        let opt = |name: &str| obj.get(name).and_then(Value::as_str).map(str::to_owned);
        match kind {
            "RUN_STARTED" => {
                let thread = field("threadId")?;
                let run = field("runId")?;
                self.thread = Some(self.body.thread_id.clone().unwrap_or(thread));
                self.run = Some(run);
                let mut data = Map::new();
                if let Some(parent) = opt("parentRunId") {
                    data.insert("parent_run_id".into(), parent.into());
                }
                self.push(index, "agent_started", data)?;
            }
            "RUN_FINISHED" => {
                let outcome = obj.get("outcome").filter(|o| o.is_object());
                let cancelled =
                    outcome.and_then(|o| o.get("type")).and_then(Value::as_str) == Some("cancelled");
                let mut data = Map::new();
                if let Some(result) = obj.get("result").filter(|r| !r.is_null()) {
                    data.insert("result".into(), result.clone());
                }
                if let (false, Some(o)) = (cancelled, outcome) {
                    data.insert("outcome".into(), o.clone());
                }
                self.push(index, if cancelled { "agent_cancelled" } else { "agent_completed" }, data)?;
            }
            "RUN_ERROR" => {
                let mut data = Map::new();
                data.insert("message".into(), field("message")?.into());
                if let Some(code) = opt("code") {
                    data.insert("code".into(), code.into());
                }
                self.push(index, "agent_error", data)?;
            }
            "TEXT_MESSAGE_START" => {
                let id = field("messageId")?;
                if let Some(role) = opt("role") {
                    self.text_roles.insert(id.clone(), role);
                }
                self.last_text = Some(id);
            }
            "TEXT_MESSAGE_END" => {}
            "TEXT_MESSAGE_CONTENT" | "TEXT_MESSAGE_CHUNK" => {
                let chunk = kind == "TEXT_MESSAGE_CHUNK";
                let id = if chunk {
                    opt("messageId").or_else(|| self.last_text.clone())
                } else {
                    Some(field("messageId")?)
                };
                let Some(id) = id else {
                    return Err(invalid(
                        Some(index),
                        "TEXT_MESSAGE_CHUNK needs messageId on the first chunk",
                    ));
                };
                if let (true, Some(role)) = (chunk, opt("role")) {
                    self.text_roles.insert(id.clone(), role);
                }
                self.last_text = Some(id.clone());
                let delta = if chunk { opt("delta") } else { Some(field("delta")?) };
                if let Some(delta) = delta {
                    let mut data = Map::new();
                    data.insert("delta".into(), delta.into());
                    data.insert("message_id".into(), id.clone().into());
                    if let Some(role) = self.text_roles.get(&id).filter(|r| *r != "assistant") {
                        data.insert("role".into(), role.clone().into());
                    }
                    self.push(index, "agent_text", data)?;
                }
            }
            "REASONING_START" | "THINKING_START" => self.reasoning_phase = opt("messageId"),
            "REASONING_MESSAGE_START" => self.last_reasoning = Some(field("messageId")?),
            "REASONING_MESSAGE_END"
            | "REASONING_END"
            | "THINKING_END"
            | "THINKING_TEXT_MESSAGE_START"
            | "THINKING_TEXT_MESSAGE_END" => {}
            "REASONING_MESSAGE_CONTENT" | "REASONING_MESSAGE_CHUNK" | "THINKING_TEXT_MESSAGE_CONTENT" => {
                let id = match kind {
                    "REASONING_MESSAGE_CONTENT" => Some(field("messageId")?),
                    _ => opt("messageId").or_else(|| self.last_reasoning.clone()),
                };
                self.last_reasoning = id.clone();
                let delta =
                    if kind == "REASONING_MESSAGE_CHUNK" { opt("delta") } else { Some(field("delta")?) };
                if let Some(delta) = delta {
                    let mut data = Map::new();
                    data.insert("text".into(), delta.into());
                    if let Some(id) = id {
                        data.insert("message_id".into(), id.into());
                    }
                    if let Some(phase) = self.reasoning_phase.clone() {
                        data.insert("reasoning_id".into(), phase.into());
                    }
                    self.push(index, "agent_thinking", data)?;
                }
            }
            "TOOL_CALL_START" => {
                let id = field("toolCallId")?;
                let name = field("toolCallName")?;
                self.pending.push(PendingCall {
                    index,
                    id,
                    name,
                    parent: opt("parentMessageId"),
                    args: String::new(),
                    chunked: false,
                });
            }
            "TOOL_CALL_ARGS" => {
                let id = field("toolCallId")?;
                let delta = field("delta")?;
                let Some(call) = self.pending.iter_mut().find(|c| c.id == id) else {
                    return Err(invalid(
                        Some(index),
                        format!(
                            "TOOL_CALL_ARGS for toolCallId {id:?} without its TOOL_CALL_START in this request"
                        ),
                    ));
                };
                call.args.push_str(&delta);
            }
            "TOOL_CALL_END" => {
                let id = field("toolCallId")?;
                let Some(pos) = self.pending.iter().position(|c| c.id == id) else {
                    return Err(invalid(
                        Some(index),
                        format!(
                            "TOOL_CALL_END for toolCallId {id:?} without its TOOL_CALL_START in this request"
                        ),
                    ));
                };
                let call = self.pending.remove(pos);
                self.push_call(call)?;
            }
            "TOOL_CALL_CHUNK" => {
                let id = opt("toolCallId")
                    .or_else(|| self.pending.last().filter(|c| c.chunked).map(|c| c.id.clone()));
                let Some(id) = id else {
                    return Err(invalid(Some(index), "TOOL_CALL_CHUNK needs toolCallId on the first chunk"));
                };
                if !self.pending.iter().any(|c| c.id == id) {
                    self.flush_chunks()?;
                    let name = opt("toolCallName").ok_or_else(|| {
                        invalid(Some(index), "TOOL_CALL_CHUNK needs toolCallName on the first chunk")
                    })?;
                    self.pending.push(PendingCall {
                        index,
                        id: id.clone(),
                        name,
                        parent: opt("parentMessageId"),
                        args: String::new(),
                        chunked: true,
                    });
                }
                if let (Some(delta), Some(call)) =
                    (opt("delta"), self.pending.iter_mut().find(|c| c.id == id))
                {
                    call.args.push_str(&delta);
                }
            }
            "TOOL_CALL_RESULT" => {
                let call = field("toolCallId")?;
                if let Some(pos) = self.pending.iter().position(|c| c.id == call) {
                    let pending = self.pending.remove(pos);
                    self.push_call(pending)?;
                }
                let mut data = Map::new();
                let name = self.tool_names.get(&call).cloned().unwrap_or_else(|| "unknown".into());
                data.insert("tool_name".into(), name.into());
                data.insert("tool_call_id".into(), call.into());
                data.insert("content".into(), obj.get("content").cloned().unwrap_or_else(|| "".into()));
                if let Some(message) = opt("messageId") {
                    data.insert("message_id".into(), message.into());
                }
                self.push(index, "tool_completed", data)?;
            }
            "CUSTOM" => {
                let mut data = Map::new();
                data.insert("name".into(), field("name")?.into());
                data.insert("value".into(), obj.get("value").cloned().unwrap_or(Value::Null));
                self.push_custom(index, data)?;
            }
            other => {
                let mut data = Map::new();
                data.insert("name".into(), other.into());
                data.insert("agui".into(), event.clone());
                self.push_custom(index, data)?;
            }
        }
        Ok(())
    }

    /// Ends chunk-built tool calls: a non-chunk event (or the end of the batch) closes them.
    fn flush_chunks(&mut self) -> Result<(), InboundError> {
        while let Some(pos) = self.pending.iter().position(|c| c.chunked) {
            let call = self.pending.remove(pos);
            self.push_call(call)?;
        }
        Ok(())
    }

    fn push_call(&mut self, call: PendingCall) -> Result<(), InboundError> {
        let mut data = Map::new();
        data.insert("tool_name".into(), call.name.clone().into());
        data.insert("tool_call_id".into(), call.id.clone().into());
        if !call.args.is_empty() {
            match serde_json::from_str::<Value>(&call.args) {
                Ok(parameters) => data.insert("parameters".into(), parameters),
                Err(_) => data.insert("arguments".into(), call.args.into()),
            };
        }
        if let Some(parent) = call.parent {
            data.insert("parent_message_id".into(), parent.into());
        }
        self.tool_names.insert(call.id, call.name);
        self.push(call.index, "tool_executing", data)
    }

    fn push_custom(&mut self, index: usize, data: Map<String, Value>) -> Result<(), InboundError> {
        let run = self.run.clone();
        self.append(index, "custom", run, data)
    }

    fn push(&mut self, index: usize, event: &str, data: Map<String, Value>) -> Result<(), InboundError> {
        let Some(run) = self.run.clone() else {
            let kind = self.body.events[index].get("type").and_then(Value::as_str).unwrap_or_default();
            return Err(InboundError::NoRun {
                index,
                message: format!(
                    "{kind} has no run: RUN_STARTED must come first (or name run_id in the body, or continue a thread with an active run)"
                ),
            });
        };
        self.append(index, event, Some(run), data)
    }

    fn append(
        &mut self,
        index: usize,
        event: &str,
        run: Option<String>,
        data: Map<String, Value>,
    ) -> Result<(), InboundError> {
        let mut wire = json!({"user_id": self.body.user_id, "event": event, "data": data});
        if let Some(run) = run {
            wire["run_id"] = run.into();
        }
        if let Some(thread) = &self.thread {
            wire["thread_id"] = thread.clone().into();
        }
        let input =
            EventInput::from_value(wire).map_err(|FieldError { message }| invalid(Some(index), message))?;
        self.out.events.push(input);
        self.out.sources.push(index);
        Ok(())
    }
}

fn invalid(index: Option<usize>, message: impl Into<String>) -> InboundError {
    InboundError::Invalid { index, message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, run: Option<&str>, event: &str, data: Value) -> EventFrame {
        EventFrame {
            seq,
            id: format!("e{seq}"),
            user_id: "u".into(),
            thread_id: Some("t1".into()),
            run_id: run.map(str::to_owned),
            event: event.into(),
            data,
            ts: "2025-01-02T03:04:05.678Z".into(),
            snapshot: false,
            first_seq: None,
            truncated: false,
        }
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    /// Text, reasoning and two tool calls, as Herald events.
    fn golden() -> Vec<EventFrame> {
        let r = Some("r1");
        vec![
            frame(1, r, "agent_started", json!({})),
            frame(2, r, "agent_thinking", json!({"text": "Let me "})),
            frame(3, r, "agent_thinking", json!({"text": "think."})),
            frame(
                4,
                r,
                "tool_executing",
                json!({"tool_name": "search", "tool_call_id": "c1", "parameters": {"q": "x"}}),
            ),
            frame(
                5,
                r,
                "tool_executing",
                json!({"tool_name": "calc", "tool_call_id": "c2", "parameters": {"e": "1+1"}}),
            ),
            frame(
                6,
                r,
                "tool_completed",
                json!({"tool_name": "search", "tool_call_id": "c1", "result": "found"}),
            ),
            frame(7, r, "tool_completed", json!({"tool_name": "calc", "result": 2})),
            frame(8, r, "agent_text", json!({"delta": "Hello "})),
            frame(9, r, "agent_text", json!({"delta": "world"})),
            frame(10, r, "agent_completed", json!({"result": {"ok": true}})),
        ]
    }

    #[test]
    fn golden_path_maps_in_agui_order() {
        let mut out = Outbound::new(None);
        let all: Vec<Value> = golden().iter().flat_map(|e| out.map(e)).collect();
        assert_eq!(
            types(&all),
            [
                "RUN_STARTED",
                "REASONING_START",
                "REASONING_MESSAGE_START",
                "REASONING_MESSAGE_CONTENT",
                "REASONING_MESSAGE_CONTENT",
                "REASONING_MESSAGE_END",
                "REASONING_END",
                "TOOL_CALL_START",
                "TOOL_CALL_ARGS",
                "TOOL_CALL_END",
                "TOOL_CALL_START",
                "TOOL_CALL_ARGS",
                "TOOL_CALL_END",
                "TOOL_CALL_RESULT",
                "TOOL_CALL_RESULT",
                "TEXT_MESSAGE_START",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_END",
                "RUN_FINISHED",
            ]
        );
        assert_eq!(
            all[0],
            json!({"type": "RUN_STARTED", "threadId": "t1", "runId": "r1", "timestamp": 1_735_787_045_678i64})
        );
        assert_eq!(all[8]["delta"], r#"{"q":"x"}"#);
        // tool_completed without tool_call_id finds the open call by name.
        assert_eq!(all[14]["toolCallId"], "c2");
        assert_eq!(all[14]["content"], "2");
        assert_eq!(all[14]["role"], "tool");
        assert_eq!(all[15]["messageId"], "e8");
        assert_eq!(all[17]["messageId"], "e8");
        assert_eq!(all[19]["result"], json!({"ok": true}));
    }

    #[test]
    fn priming_makes_a_resumed_stream_continue_exactly() {
        let events = golden();
        let mut whole = Outbound::new(None);
        let expected: Vec<Vec<Value>> = events.iter().map(|e| whole.map(e)).collect();
        for cut in 0..events.len() {
            let mut resumed = Outbound::new(None);
            events[..cut].iter().for_each(|e| resumed.prime(e));
            let rest: Vec<Vec<Value>> = events[cut..].iter().map(|e| resumed.map(e)).collect();
            assert_eq!(rest, expected[cut..], "resume after seq {cut}");
        }
    }

    #[test]
    fn terminal_kinds_and_others() {
        let mut out = Outbound::new(None);
        out.map(&frame(1, Some("r"), "agent_started", json!({})));
        let e = out.map(&frame(2, Some("r"), "agent_cancelled", json!({})));
        assert_eq!(e[0]["outcome"], json!({"type": "cancelled"}));
        out.map(&frame(3, Some("s"), "agent_started", json!({})));
        out.map(&frame(4, Some("s"), "agent_text", json!({"delta": "x"})));
        let e = out.map(&frame(5, Some("s"), "agent_error", json!({"message": "boom", "code": "E1"})));
        assert_eq!(types(&e), ["TEXT_MESSAGE_END", "RUN_ERROR"]);
        assert_eq!(e[1]["code"], "E1");
        let e = out.map(&frame(6, None, "custom", json!({"name": "n", "value": [1]})));
        assert_eq!(
            e[0],
            json!({"type": "CUSTOM", "name": "n", "value": [1], "timestamp": 1_735_787_045_678i64})
        );
        // An event of a run whose start was never seen starts it.
        let e = out.map(&frame(7, Some("q"), "progress", json!({"pct": 5})));
        assert_eq!(types(&e), ["RUN_STARTED", "CUSTOM"]);
        assert_eq!(e[1]["name"], "herald.progress");
        // The thread filter drops other threads' events.
        let mut only = Outbound::new(Some("t2".into()));
        assert!(only.map(&frame(1, Some("r"), "agent_started", json!({}))).is_empty());
    }

    #[test]
    fn timestamps_parse() {
        assert_eq!(timestamp_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(timestamp_ms("2000-03-01T00:00:01.5Z"), Some(951_868_801_500));
        assert_eq!(timestamp_ms("2000-03-01T00:00:01Z"), Some(951_868_801_000));
        assert_eq!(timestamp_ms("nope"), None);
    }

    fn body(events: Value) -> InboundBody {
        let text = json!({"user_id": "u", "thread_id": "t1", "events": events}).to_string();
        InboundBody::parse(text.as_bytes(), 100).unwrap()
    }

    fn agui_run() -> Value {
        json!([
            {"type": "RUN_STARTED", "threadId": "t1", "runId": "r1"},
            {"type": "REASONING_START", "messageId": "p1"},
            {"type": "REASONING_MESSAGE_START", "messageId": "m0", "role": "reasoning"},
            {"type": "REASONING_MESSAGE_CONTENT", "messageId": "m0", "delta": "hmm"},
            {"type": "REASONING_MESSAGE_END", "messageId": "m0"},
            {"type": "REASONING_END", "messageId": "p1"},
            {"type": "TOOL_CALL_START", "toolCallId": "c1", "toolCallName": "search", "parentMessageId": "m1"},
            {"type": "TOOL_CALL_ARGS", "toolCallId": "c1", "delta": "{\"q\":"},
            {"type": "TOOL_CALL_ARGS", "toolCallId": "c1", "delta": "\"x\"}"},
            {"type": "TOOL_CALL_END", "toolCallId": "c1"},
            {"type": "TOOL_CALL_RESULT", "messageId": "m2", "toolCallId": "c1", "content": "found", "role": "tool"},
            {"type": "TEXT_MESSAGE_START", "messageId": "m3", "role": "assistant"},
            {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m3", "delta": "Hi"},
            {"type": "TEXT_MESSAGE_END", "messageId": "m3"},
            {"type": "STATE_SNAPSHOT", "snapshot": {"k": 1}},
            {"type": "CUSTOM", "name": "x", "value": 1},
            {"type": "RUN_FINISHED", "threadId": "t1", "runId": "r1", "result": "done"},
        ])
    }

    #[test]
    fn inbound_run_maps_to_herald_events() {
        let mapped = body(agui_run()).to_herald(&Context::default()).unwrap();
        let kinds: Vec<&str> = mapped.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "agent_started",
                "agent_thinking",
                "tool_executing",
                "tool_completed",
                "agent_text",
                "custom",
                "custom",
                "agent_completed"
            ]
        );
        assert_eq!(mapped.sources, [0, 3, 6, 10, 12, 14, 15, 16]);
        assert_eq!(mapped.events[2].data["parameters"], json!({"q": "x"}));
        assert_eq!(mapped.events[3].data["tool_name"], "search");
        assert!(mapped.events.iter().all(|e| e.run_id.as_deref() == Some("r1")));
        assert!(mapped.events.iter().all(|e| e.thread_id.as_deref() == Some("t1")));
    }

    #[test]
    fn round_trip_preserves_ids_names_deltas_results() {
        let input = agui_run();
        let mapped = body(input.clone()).to_herald(&Context::default()).unwrap();
        let mut out = Outbound::new(None);
        let back: Vec<Value> = mapped
            .events
            .iter()
            .enumerate()
            .flat_map(|(i, e)| {
                let frame = EventFrame {
                    seq: i as u64 + 1,
                    id: format!("h{i}"),
                    user_id: "u".into(),
                    thread_id: e.thread_id.clone(),
                    run_id: e.run_id.clone(),
                    event: e.kind.as_str().into(),
                    data: Value::Object(e.data.fields().clone()),
                    ts: "2025-01-02T03:04:05.678Z".into(),
                    snapshot: false,
                    first_seq: None,
                    truncated: false,
                };
                out.map(&frame)
            })
            .map(|mut v| {
                v.as_object_mut().unwrap().remove("timestamp");
                v
            })
            .collect();
        // The two TOOL_CALL_ARGS deltas come back as one delta with the same concatenation.
        let mut expected = input.as_array().unwrap().clone();
        expected
            .splice(7..9, [json!({"type": "TOOL_CALL_ARGS", "toolCallId": "c1", "delta": "{\"q\":\"x\"}"})]);
        assert_eq!(back, expected);
    }

    #[test]
    fn inbound_errors_name_the_event() {
        let e = body(json!([{"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "x"}]))
            .to_herald(&Context::default())
            .unwrap_err();
        assert!(matches!(e, InboundError::NoRun { index: 0, .. }), "{e}");
        assert!(e.to_string().contains("RUN_STARTED must come first"), "{e}");
        let e = body(json!([{"type": "RUN_STARTED", "threadId": "t"}]))
            .to_herald(&Context::default())
            .unwrap_err();
        assert_eq!(e.to_string(), "events[0]: RUN_STARTED needs runId (a string)");
        let e = body(json!([
            {"type": "RUN_STARTED", "threadId": "t", "runId": "r"},
            {"type": "TOOL_CALL_START", "toolCallId": "c", "toolCallName": "n"},
        ]))
        .to_herald(&Context::default())
        .unwrap_err();
        assert!(
            e.to_string().starts_with("events[1]: TOOL_CALL_START for toolCallId \"c\" has no TOOL_CALL_END"),
            "{e}"
        );
        // A continuing batch takes the run (and tool names) from the context.
        let b = body(
            json!([{"type": "TOOL_CALL_RESULT", "messageId": "m", "toolCallId": "c9", "content": "ok"}]),
        );
        assert!(b.needs_context());
        // So does a result of an earlier request's call in a batch that names its run; a result
        // of a call this batch starts needs nothing.
        let named = |events: Value| InboundBody { run_id: Some("r".into()), ..body(events) };
        assert!(
            named(
                json!([{"type": "TOOL_CALL_RESULT", "messageId": "m", "toolCallId": "c9", "content": "ok"}])
            )
            .needs_context()
        );
        assert!(
            !named(json!([
                {"type": "TOOL_CALL_START", "toolCallId": "c1", "toolCallName": "n"},
                {"type": "TOOL_CALL_END", "toolCallId": "c1"},
                {"type": "TOOL_CALL_RESULT", "messageId": "m", "toolCallId": "c1", "content": "ok"},
            ]))
            .needs_context()
        );
        let ctx = Context { run_id: Some("r".into()), tool_names: [("c9".into(), "calc".into())].into() };
        let mapped = b.to_herald(&ctx).unwrap();
        assert_eq!(mapped.events[0].data["tool_name"], "calc");
        assert_eq!(mapped.events[0].run_id.as_deref(), Some("r"));
        assert!(matches!(
            InboundBody::parse(b"{\"user_id\":\"u\",\"events\":[1,2]}", 1),
            Err(InboundError::TooMany { .. })
        ));
    }

    #[test]
    fn chunks_and_cancel_map() {
        let mapped = body(json!([
            {"type": "RUN_STARTED", "threadId": "t1", "runId": "r1"},
            {"type": "TOOL_CALL_CHUNK", "toolCallId": "c", "toolCallName": "n", "delta": "{\"a\""},
            {"type": "TOOL_CALL_CHUNK", "delta": ":1}"},
            {"type": "TEXT_MESSAGE_CHUNK", "messageId": "m", "delta": "x"},
            {"type": "TEXT_MESSAGE_CHUNK", "delta": "y"},
            {"type": "RUN_FINISHED", "threadId": "t1", "runId": "r1", "outcome": {"type": "cancelled"}},
        ]))
        .to_herald(&Context::default())
        .unwrap();
        let kinds: Vec<&str> = mapped.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["agent_started", "tool_executing", "agent_text", "agent_text", "agent_cancelled"]);
        assert_eq!(mapped.events[1].data["parameters"], json!({"a": 1}));
        assert_eq!(mapped.events[3].data["message_id"], "m");
    }
}
