//! Per-run compaction: the few frames that draw an active run as it stands now.
//!
//! A token-streamed answer is thousands of `agent_text` deltas; the per-user log keeps only the
//! last `history_size` events, so a tab opened mid-answer cannot be drawn from the log alone.
//! Engines therefore fold every event of an active run into its [`Compactor`] beside the log,
//! and a socket with no usable cursor gets the compacted runs (the *snapshot*) before `synced`.
//!
//! Folding rules, per run:
//! - `agent_started` is kept as sent (always the run's first frame);
//! - consecutive `agent_text` events of the same message (same `data` apart from `delta`) become
//!   one event whose `delta` is the concatenation; `agent_thinking` likewise on `text`;
//! - `tool_executing` and `tool_completed` are kept as sent;
//! - only the latest `progress` is kept, and `run_stalled` only while it is the run's last event;
//! - `custom` events of the run are kept as sent, at most [`Limits::max_custom`] (oldest dropped);
//! - a terminal event drops the run: a finished run needs no snapshot.
//!
//! Every snapshot frame is an ordinary event frame plus `"snapshot":true`. Its `seq` is the seq of
//! the **last** event it covers and merged frames also carry `first_seq`, the first one; the
//! frames of a snapshot are in increasing `seq`, so a client that drops frames whose seq it has
//! already seen keeps working, and the connection's `synced.seq` follows the snapshot exactly.
//!
//! Bounded on its own (independent of history retention), see [`Limits`]: past `max_run_bytes` a
//! run loses its oldest frames (the oldest text first, never its `agent_started`) and its
//! `agent_started` frame then carries `"truncated":true`, so a client can say that earlier output
//! is not shown — it is never silently wrong. Past `max_runs` the run idle longest is dropped.
//!
//! Pure: no clocks or I/O; the caller passes times in milliseconds.

use crate::EventKind;
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;
use std::borrow::Cow;
// foldhash: `runs` is looked up for every event folded; its keys are run ids from authenticated
// publishers, so SipHash's flood resistance buys nothing here (seeded per process).
use foldhash::HashMap;
use std::collections::BTreeMap;

/// Bounds of one user's compacted runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most frame bytes kept per run (default 512 KiB: about 100,000 words of answer text).
    pub max_run_bytes: usize,
    /// Most runs compacted per user at once (default 64); past it, the run idle longest is dropped.
    pub max_runs: usize,
    /// Most `custom` events kept per run (default 100); past it, the oldest is dropped.
    pub max_custom: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_run_bytes: 512 * 1024, max_runs: 64, max_custom: 100 }
    }
}

/// One frame of a snapshot, with the metadata a log keeps beside its frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFrame {
    /// Seq of the last event the frame covers.
    pub seq: u64,
    /// Seq of the first event it covers (equal to `seq` unless merged).
    pub first_seq: u64,
    /// The id of the first event it covers.
    pub id: String,
    /// The run.
    pub run_id: String,
    /// The event kind.
    pub kind: EventKind,
    /// The frame text, `{"type":"event",…,"snapshot":true}`.
    pub frame: String,
}

/// The compacted state of one user's active runs. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Compactor {
    limits: Limits,
    runs: HashMap<String, Run>,
    through: u64,
    dropped_runs: u64,
    truncated_runs: u64,
}

#[derive(Clone, Debug)]
struct Run {
    /// `items[0]` is the run's `agent_started`.
    items: Vec<Item>,
    progress: Option<Plain>,
    stalled: Option<Plain>,
    bytes: usize,
    customs: usize,
    truncated: bool,
    last_ms: u64,
}

#[derive(Clone, Debug)]
enum Item {
    Plain(Plain),
    Merged(Merged),
}

/// An event kept as sent.
#[derive(Clone, Debug)]
struct Plain {
    seq: u64,
    id: String,
    kind: EventKind,
    /// The original frame text (without snapshot markers).
    frame: String,
}

/// Consecutive text (or thinking) events of one message.
#[derive(Clone, Debug)]
struct Merged {
    kind: EventKind,
    first_seq: u64,
    seq: u64,
    id: String,
    user_id: String,
    thread_id: Option<String>,
    run_id: String,
    /// `delta` or `text`: the data field that is concatenated.
    field: &'static str,
    /// The rest of `data` (keys sorted, values as JSON text), equal for every merged event.
    rest: Vec<(String, Box<RawValue>)>,
    text: String,
    ts: String,
    /// Bytes of the frame apart from `text`.
    overhead: usize,
}

/// The fields of an event frame that folding reads (a snapshot frame has the extra ones),
/// borrowed from the frame: a streamed delta costs one pass over its bytes, few allocations.
#[derive(serde::Deserialize)]
struct Parsed<'a> {
    seq: u64,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(default, borrow)]
    thread_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    run_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    data: BTreeMap<Key<'a>, &'a RawValue>,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(default)]
    first_seq: Option<u64>,
    #[serde(default)]
    truncated: bool,
}

/// A JSON string borrowed when it has no escapes.
#[derive(serde::Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// Why a frame could not be folded by [`Compactor::seed`].
#[derive(Debug, thiserror::Error)]
#[error("not an event frame of a run: {0}")]
pub struct NotAFrame(String);

/// The tail every snapshot frame ends with.
const SNAPSHOT_TAIL: &str = ",\"snapshot\":true}";

impl Compactor {
    /// An empty compactor with these limits.
    pub fn new(limits: Limits) -> Self {
        Self { limits, ..Self::default() }
    }

    /// Seq of the last event folded (or seeded through).
    pub fn through(&self) -> u64 {
        self.through
    }

    /// Runs currently compacted.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Frame bytes held over all runs (the memory the snapshot costs, give or take).
    pub fn bytes(&self) -> usize {
        self.runs.values().map(|r| r.bytes).sum()
    }

    /// Runs dropped since creation because more than `max_runs` were active.
    pub fn dropped_runs(&self) -> u64 {
        self.dropped_runs
    }

    /// Runs that became truncated (lost output past `max_run_bytes` or `max_custom`) since
    /// creation.
    pub fn truncated_runs(&self) -> u64 {
        self.truncated_runs
    }

    /// True when the run is compacted here.
    pub fn has_run(&self, run_id: &str) -> bool {
        self.runs.contains_key(run_id)
    }

    /// Folds the next event of the log. Events at or below [`Compactor::through`] are ignored (a
    /// duplicate delivery), as are events of runs not compacted here (started before this
    /// compactor or dropped past `max_runs`) and events without a run.
    pub fn apply(
        &mut self,
        seq: u64,
        id: &str,
        run_id: Option<&str>,
        kind: EventKind,
        frame: &str,
        now_ms: u64,
    ) {
        if seq <= self.through {
            return;
        }
        self.through = seq;
        let Some(run_id) = run_id else { return };
        if kind == EventKind::AgentStarted {
            self.start(
                run_id,
                Plain { seq, id: id.to_owned(), kind, frame: frame.to_owned() },
                false,
                now_ms,
            );
            return;
        }
        if kind.is_terminal() {
            self.runs.remove(run_id);
            return;
        }
        let Some(run) = self.runs.get_mut(run_id) else { return };
        run.last_ms = now_ms;
        match kind {
            EventKind::AgentText | EventKind::AgentThinking => match serde_json::from_str::<Parsed>(frame) {
                Ok(parsed) => run.text(kind, parsed, frame),
                Err(_) => {
                    run.push(Item::Plain(Plain { seq, id: id.to_owned(), kind, frame: frame.to_owned() }))
                }
            },
            _ => run.plain(Plain { seq, id: id.to_owned(), kind, frame: frame.to_owned() }),
        }
        if run.enforce(&self.limits) {
            self.truncated_runs += 1;
        }
    }

    /// Folds one frame of a stored compacted state or log (either a plain event frame or a
    /// snapshot frame), parsing what the log would otherwise tell. Used to rebuild a compactor
    /// from a shared store; [`Compactor::through`] is not moved (see [`Compactor::set_through`]).
    pub fn seed(&mut self, frame: &str, now_ms: u64) -> Result<(), NotAFrame> {
        let parsed: Parsed = serde_json::from_str(frame).map_err(|e| NotAFrame(e.to_string()))?;
        let kind = EventKind::from_name(&parsed.event).ok_or_else(|| NotAFrame(parsed.event.to_string()))?;
        let run_id = parsed.run_id.clone().ok_or_else(|| NotAFrame("no run_id".into()))?.into_owned();
        let plain =
            |p: &Parsed| Plain { seq: p.seq, id: p.id.to_string(), kind, frame: strip_markers(frame) };
        if kind == EventKind::AgentStarted {
            let truncated = parsed.truncated;
            self.start(&run_id, plain(&parsed), truncated, now_ms);
            return Ok(());
        }
        if kind.is_terminal() {
            self.runs.remove(&run_id);
            return Ok(());
        }
        let Some(run) = self.runs.get_mut(&run_id) else { return Ok(()) };
        run.last_ms = now_ms;
        match kind {
            EventKind::AgentText | EventKind::AgentThinking => run.text(kind, parsed, frame),
            _ => run.plain(plain(&parsed)),
        }
        if run.enforce(&self.limits) {
            self.truncated_runs += 1;
        }
        Ok(())
    }

    /// Declares the compactor current up to `seq` (after seeding from a store read at `seq`).
    pub fn set_through(&mut self, seq: u64) {
        self.through = seq;
    }

    /// Records activity of `run_id` at `now_ms` without folding an event (the event is kept
    /// elsewhere and folded later), so [`Compactor::expire`] does not take the run for silent.
    pub fn touch(&mut self, run_id: &str, now_ms: u64) {
        if let Some(run) = self.runs.get_mut(run_id) {
            run.last_ms = run.last_ms.max(now_ms);
        }
    }

    /// Forgets `run_id` now: its terminal event is known but folded later (folding it then
    /// changes nothing), so an ended run's state is freed at once.
    pub fn end(&mut self, run_id: &str) {
        self.runs.remove(run_id);
    }

    /// Keeps of every run only what draws it as started — its `agent_started` (then marked
    /// `truncated`), its latest `progress` and a pending stall — and drops its folded output.
    /// What a node's global memory cap takes from a user once the user's retained events are
    /// gone and the node is still over it: the run is drawn as truncated, never silently short.
    /// Returns the bytes freed and how many runs lost output.
    pub fn shed(&mut self) -> (usize, u64) {
        let mut freed = 0;
        let mut shed = 0;
        for run in self.runs.values_mut() {
            if run.items.len() < 2 {
                continue;
            }
            let (bytes, was_truncated) = (run.bytes, run.truncated);
            while run.items.len() > 1 {
                run.remove(run.items.len() - 1);
            }
            freed += bytes - run.bytes;
            shed += 1;
            self.truncated_runs += u64::from(!was_truncated);
        }
        (freed, shed)
    }

    /// Drops runs with no event since `cutoff_ms` (the engine forgot them too).
    pub fn expire(&mut self, cutoff_ms: u64) {
        self.runs.retain(|_, r| r.last_ms >= cutoff_ms);
    }

    /// The snapshot of every compacted run (or of `run` only), in increasing seq.
    pub fn snapshot(&self, run: Option<&str>) -> Vec<SnapshotFrame> {
        self.snapshot_of(run, &EventKind::ALL)
    }

    /// [`Compactor::snapshot`]'s frames of the events of `kinds` only: a caller that needs a
    /// run's start and tool calls does not pay for rendering its text, which grows with the run.
    pub fn snapshot_of(&self, run: Option<&str>, kinds: &[EventKind]) -> Vec<SnapshotFrame> {
        let mut out = Vec::new();
        for (run_id, state) in &self.runs {
            if run.is_some_and(|r| r != run_id) {
                continue;
            }
            for (i, item) in state.items.iter().enumerate() {
                if kinds.contains(&item.kind()) {
                    out.push(item.render(run_id, i == 0 && state.truncated));
                }
            }
            for slot in [&state.progress, &state.stalled].into_iter().flatten() {
                if kinds.contains(&slot.kind) {
                    out.push(Item::render_plain(slot, run_id, false));
                }
            }
        }
        out.sort_unstable_by_key(|f| f.seq);
        out
    }

    fn start(&mut self, run_id: &str, started: Plain, truncated: bool, now_ms: u64) {
        if !self.runs.contains_key(run_id)
            && self.runs.len() >= self.limits.max_runs.max(1)
            && let Some(idle) = self.runs.iter().min_by_key(|(_, r)| r.last_ms).map(|(k, _)| k.clone())
        {
            self.runs.remove(&idle);
            self.dropped_runs += 1;
        }
        let bytes = started.frame.len();
        let run = Run {
            items: vec![Item::Plain(started)],
            progress: None,
            stalled: None,
            bytes,
            customs: 0,
            truncated,
            last_ms: now_ms,
        };
        self.runs.insert(run_id.to_owned(), run);
    }
}

impl Run {
    fn push(&mut self, item: Item) {
        self.clear_stall();
        if matches!(&item, Item::Plain(p) if p.kind == EventKind::Custom) {
            self.customs += 1;
        }
        self.bytes += item.bytes();
        self.items.push(item);
    }

    fn clear_stall(&mut self) {
        if let Some(stalled) = self.stalled.take() {
            self.bytes -= stalled.frame.len();
        }
    }

    fn plain(&mut self, plain: Plain) {
        match plain.kind {
            EventKind::Progress => {
                self.clear_stall();
                self.bytes += plain.frame.len();
                if let Some(old) = self.progress.replace(plain) {
                    self.bytes -= old.frame.len();
                }
            }
            EventKind::RunStalled => {
                self.clear_stall();
                self.bytes += plain.frame.len();
                self.stalled = Some(plain);
            }
            _ => self.push(Item::Plain(plain)),
        }
    }

    /// Appends a text or thinking event to the run's last item when it continues the same
    /// message, else starts a new merged item.
    fn text(&mut self, kind: EventKind, mut parsed: Parsed<'_>, frame: &str) {
        let text = text_field(kind, &parsed.data).and_then(|field| {
            let raw = parsed.data.remove(&Key(Cow::Borrowed(field)))?;
            let Key(text) = serde_json::from_str::<Key<'_>>(raw.get()).ok()?;
            Some((field, text))
        });
        let Some((field, text)) = text else {
            // No text to merge (e.g. a thinking event with structured data): kept as sent.
            let plain =
                Plain { seq: parsed.seq, id: parsed.id.into_owned(), kind, frame: strip_markers(frame) };
            return self.push(Item::Plain(plain));
        };
        self.clear_stall();
        if let Some(Item::Merged(last)) = self.items.last_mut()
            && last.kind == kind
            && last.field == field
            && last.rest.len() == parsed.data.len()
            && last
                .rest
                .iter()
                .zip(&parsed.data)
                .all(|((k, v), (Key(pk), pv))| k == pk && v.get() == pv.get())
            && last.thread_id.as_deref() == parsed.thread_id.as_deref()
            && last.user_id == parsed.user_id
        {
            self.bytes += text.len();
            last.text.push_str(&text);
            last.seq = parsed.seq;
            last.ts = parsed.ts.into_owned();
            return;
        }
        let rest: Vec<(String, Box<RawValue>)> =
            parsed.data.iter().map(|(Key(k), v)| (k.to_string(), (*v).to_owned())).collect();
        let run_id = parsed.run_id.map(Cow::into_owned).unwrap_or_default();
        let overhead = 160
            + parsed.id.len()
            + parsed.user_id.len()
            + parsed.thread_id.as_ref().map_or(0, |t| t.len())
            + run_id.len()
            + rest.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>();
        let merged = Merged {
            kind,
            first_seq: parsed.first_seq.unwrap_or(parsed.seq),
            seq: parsed.seq,
            id: parsed.id.into_owned(),
            user_id: parsed.user_id.into_owned(),
            thread_id: parsed.thread_id.map(Cow::into_owned),
            run_id,
            field,
            rest,
            text: text.into_owned(),
            ts: parsed.ts.into_owned(),
            overhead,
        };
        self.push(Item::Merged(merged));
    }

    /// Keeps the run within its limits, dropping the oldest content first (never `agent_started`).
    /// True when this made the run truncated (it was not before).
    fn enforce(&mut self, limits: &Limits) -> bool {
        let was = self.truncated;
        while self.customs > limits.max_custom {
            let Some(i) =
                self.items.iter().position(|i| matches!(i, Item::Plain(p) if p.kind == EventKind::Custom))
            else {
                break;
            };
            self.remove(i);
        }
        while self.bytes > limits.max_run_bytes {
            if self.items.len() > 2 {
                self.remove(1);
                continue;
            }
            let over = self.bytes - limits.max_run_bytes;
            match self.items.get_mut(1) {
                Some(Item::Merged(m)) if m.text.len() > over => {
                    // Cut to three quarters of the budget, so a run streaming past its limit
                    // does not move its whole text for every delta.
                    let target = (over + limits.max_run_bytes / 4).min(m.text.len());
                    let cut =
                        (target..=m.text.len()).find(|&i| m.text.is_char_boundary(i)).unwrap_or(m.text.len());
                    m.text.drain(..cut);
                    self.bytes -= cut;
                    self.truncated = true;
                    break;
                }
                Some(_) => self.remove(1),
                None => break,
            }
        }
        self.truncated && !was
    }

    fn remove(&mut self, index: usize) {
        let item = self.items.remove(index);
        if matches!(&item, Item::Plain(p) if p.kind == EventKind::Custom) {
            self.customs -= 1;
        }
        self.bytes -= item.bytes();
        self.truncated = true;
    }
}

impl Item {
    fn kind(&self) -> EventKind {
        match self {
            Item::Plain(p) => p.kind,
            Item::Merged(m) => m.kind,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Item::Plain(p) => p.frame.len(),
            Item::Merged(m) => m.overhead + m.text.len(),
        }
    }

    fn render(&self, run_id: &str, truncated: bool) -> SnapshotFrame {
        match self {
            Item::Plain(p) => Self::render_plain(p, run_id, truncated),
            Item::Merged(m) => SnapshotFrame {
                seq: m.seq,
                first_seq: m.first_seq,
                id: m.id.clone(),
                run_id: run_id.to_owned(),
                kind: m.kind,
                frame: serde_json::to_string(&MergedFrame { m, truncated }).expect("frames serialize"),
            },
        }
    }

    fn render_plain(p: &Plain, run_id: &str, truncated: bool) -> SnapshotFrame {
        let body = p.frame.trim_end();
        let body = body.strip_suffix('}').unwrap_or(body);
        let mut frame = String::with_capacity(body.len() + 40);
        frame.push_str(body);
        if truncated {
            frame.push_str(",\"truncated\":true");
        }
        frame.push_str(SNAPSHOT_TAIL);
        SnapshotFrame {
            seq: p.seq,
            first_seq: p.seq,
            id: p.id.clone(),
            run_id: run_id.to_owned(),
            kind: p.kind,
            frame,
        }
    }
}

/// The data field a text event is merged on: `delta` for `agent_text` (`text` as fallback),
/// `text` for `agent_thinking` (`delta` as fallback) — as the AG-UI mapping reads them.
fn text_field(kind: EventKind, data: &BTreeMap<Key<'_>, &RawValue>) -> Option<&'static str> {
    let order: [&'static str; 2] =
        if kind == EventKind::AgentText { ["delta", "text"] } else { ["text", "delta"] };
    order.into_iter().find(|f| data.get(&Key(Cow::Borrowed(f))).is_some_and(|v| v.get().starts_with('"')))
}

/// A frame without the markers a snapshot added (`snapshot`, `first_seq`, `truncated`), so a
/// seeded frame renders the same as the event it came from.
fn strip_markers(frame: &str) -> String {
    let mut frame = frame.trim_end().to_owned();
    for marker in [SNAPSHOT_TAIL.trim_end_matches('}'), ",\"truncated\":true"] {
        if let Some(body) = frame.strip_suffix('}').and_then(|b| b.strip_suffix(marker)) {
            frame = format!("{body}}}");
        }
    }
    frame
}

/// A merged item as an event frame.
struct MergedFrame<'a> {
    m: &'a Merged,
    truncated: bool,
}

impl Serialize for MergedFrame<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.m;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("type", "event")?;
        map.serialize_entry("seq", &m.seq)?;
        map.serialize_entry("id", &m.id)?;
        map.serialize_entry("user_id", &m.user_id)?;
        map.serialize_entry("thread_id", &m.thread_id)?;
        map.serialize_entry("run_id", &m.run_id)?;
        map.serialize_entry("event", m.kind.as_str())?;
        map.serialize_entry("data", &MergedData(m))?;
        map.serialize_entry("ts", &m.ts)?;
        map.serialize_entry("first_seq", &m.first_seq)?;
        if self.truncated {
            map.serialize_entry("truncated", &true)?;
        }
        map.serialize_entry("snapshot", &true)?;
        map.end()
    }
}

struct MergedData<'a>(&'a Merged);

impl Serialize for MergedData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.rest.len() + 1))?;
        for (k, v) in &self.0.rest {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry(self.0.field, &self.0.text)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// A published event of run `r` (or `run`), as the log would hold it.
    #[derive(Clone, Debug)]
    struct Ev {
        seq: u64,
        run: String,
        kind: EventKind,
        data: Value,
    }

    impl Ev {
        fn frame(&self) -> String {
            json!({"type": "event", "seq": self.seq, "id": format!("id{}", self.seq), "user_id": "u",
                   "thread_id": "t", "run_id": self.run, "event": self.kind.as_str(), "data": self.data,
                   "ts": format!("2026-01-01T00:00:{:02}.000Z", self.seq % 60)})
            .to_string()
        }
    }

    fn apply_all(c: &mut Compactor, events: &[Ev]) {
        for e in events {
            c.apply(e.seq, &format!("id{}", e.seq), Some(&e.run), e.kind, &e.frame(), e.seq);
        }
    }

    fn parse(frame: &str) -> Value {
        serde_json::from_str(frame).unwrap()
    }

    /// What a client draws from a run's frames: text per message (deltas appended), the other
    /// events in order, and the latest progress.
    fn draw(frames: impl IntoIterator<Item = Value>) -> (Vec<String>, Option<Value>) {
        let mut blocks: Vec<String> = Vec::new();
        let mut progress = None;
        let mut last_text_key: Option<String> = None;
        for f in frames {
            let event = f["event"].as_str().unwrap().to_owned();
            match event.as_str() {
                "agent_text" | "agent_thinking" => {
                    let field = if event == "agent_text" { "delta" } else { "text" };
                    let key = format!("{event}/{}", f["data"]["message_id"]);
                    let text = f["data"][field].as_str().unwrap().to_owned();
                    if last_text_key.as_deref() == Some(key.as_str()) {
                        blocks.last_mut().unwrap().push_str(&text);
                    } else {
                        blocks.push(format!("{key}:{text}"));
                        last_text_key = Some(key);
                    }
                }
                "progress" => progress = Some(f["data"].clone()),
                "run_stalled" => {}
                _ => {
                    blocks.push(format!("{event}:{}", f["seq"]));
                    last_text_key = None;
                }
            }
        }
        (blocks, progress)
    }

    fn started(seq: u64, run: &str) -> Ev {
        Ev { seq, run: run.into(), kind: EventKind::AgentStarted, data: json!({}) }
    }

    fn text(seq: u64, run: &str, delta: &str) -> Ev {
        Ev { seq, run: run.into(), kind: EventKind::AgentText, data: json!({"delta": delta}) }
    }

    #[test]
    fn deltas_merge_into_one_frame_with_the_last_seq() {
        let mut c = Compactor::new(Limits::default());
        let mut events = vec![started(1, "r")];
        events.extend((2..=1501).map(|s| text(s, "r", "ab")));
        apply_all(&mut c, &events);
        let snap = c.snapshot(None);
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].seq, 1);
        let merged = parse(&snap[1].frame);
        assert_eq!(merged["seq"], 1501);
        assert_eq!(merged["first_seq"], 2);
        assert_eq!(merged["id"], "id2");
        assert_eq!(merged["snapshot"], true);
        assert_eq!(merged["data"]["delta"].as_str().unwrap(), "ab".repeat(1500));
        assert_eq!(parse(&snap[0].frame)["snapshot"], true);
        assert_eq!(parse(&snap[0].frame).get("truncated"), None);
    }

    #[test]
    fn messages_tools_progress_and_stalls_keep_their_shape() {
        let mut c = Compactor::new(Limits::default());
        let ev = |seq, kind, data| Ev { seq, run: "r".into(), kind, data };
        apply_all(
            &mut c,
            &[
                started(1, "r"),
                ev(2, EventKind::AgentThinking, json!({"text": "hm"})),
                ev(3, EventKind::AgentThinking, json!({"text": "m"})),
                ev(4, EventKind::Progress, json!({"pct": 10})),
                text(5, "r", "a"),
                ev(6, EventKind::ToolExecuting, json!({"tool_name": "s", "tool_call_id": "c"})),
                ev(7, EventKind::Progress, json!({"pct": 50})),
                ev(8, EventKind::ToolCompleted, json!({"tool_name": "s", "tool_call_id": "c"})),
                text(9, "r", "b"),
                ev(10, EventKind::AgentText, json!({"delta": "x", "message_id": "m2"})),
                ev(11, EventKind::RunStalled, json!({})),
            ],
        );
        let frames: Vec<Value> = c.snapshot(None).iter().map(|f| parse(&f.frame)).collect();
        let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, vec![1, 3, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(frames[1]["data"]["text"], "hmm");
        assert_eq!(frames[4]["data"]["pct"], 50);
        assert_eq!(frames[8]["event"], "run_stalled");
        // The next event of the run clears the stall.
        apply_all(&mut c, &[text(12, "r", "y")]);
        let last = parse(&c.snapshot(None).last().unwrap().frame);
        assert_eq!((last["event"].as_str(), last["data"]["delta"].as_str()), (Some("agent_text"), Some("y")));
    }

    #[test]
    fn a_terminal_event_drops_the_run_and_unknown_runs_are_ignored() {
        let mut c = Compactor::new(Limits::default());
        apply_all(&mut c, &[started(1, "a"), started(2, "b"), text(3, "ghost", "x"), text(4, "a", "x")]);
        apply_all(
            &mut c,
            &[Ev { seq: 5, run: "a".into(), kind: EventKind::AgentCompleted, data: json!({}) }],
        );
        assert_eq!(c.runs(), 1);
        assert!(c.snapshot(None).iter().all(|f| f.run_id == "b"));
        assert_eq!(c.through(), 5);
        // A duplicate delivery changes nothing.
        apply_all(&mut c, &[text(4, "b", "dup")]);
        assert_eq!(c.snapshot(None).len(), 1);
    }

    #[test]
    fn past_max_run_bytes_the_oldest_output_goes_and_the_run_says_truncated() {
        let limits = Limits { max_run_bytes: 4096, ..Limits::default() };
        let mut c = Compactor::new(limits);
        let mut events = vec![started(1, "r")];
        events.extend((2..=3001).map(|s| text(s, "r", &format!("{:04}", s))));
        apply_all(&mut c, &events);
        assert!(c.bytes() <= 4096, "{} bytes", c.bytes());
        assert_eq!(c.truncated_runs(), 1, "counted once, when it first lost output");
        let snap = c.snapshot(None);
        let first = parse(&snap[0].frame);
        assert_eq!(first["truncated"], true);
        let text = parse(&snap[1].frame)["data"]["delta"].as_str().unwrap().to_owned();
        assert!(text.ends_with("30003001"), "the newest text is kept");
        assert!(text.len() > 2000, "most of the budget is text: {}", text.len());
    }

    #[test]
    fn shed_keeps_each_run_drawn_as_started_and_truncated() {
        let mut c = Compactor::new(Limits::default());
        let progress = Ev { seq: 5, run: "a".into(), kind: EventKind::Progress, data: json!({"p": 1}) };
        apply_all(&mut c, &[started(1, "a"), text(2, "a", "hello "), text(3, "a", "world"), started(4, "b")]);
        apply_all(&mut c, &[progress]);
        let before = c.bytes();
        let (freed, shed) = c.shed();
        assert_eq!(shed, 1, "only run a had output to lose");
        assert_eq!(c.bytes(), before - freed);
        let snap = c.snapshot(None);
        let seqs: Vec<u64> = snap.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, vec![1, 4, 5], "both starts and a's latest progress stay");
        assert_eq!(parse(&snap[0].frame)["truncated"], true, "a says it lost output");
        assert!(parse(&snap[1].frame).get("truncated").is_none(), "b lost nothing");
        assert_eq!(c.truncated_runs(), 1);
        // The run goes on: new output is folded after the start as usual.
        apply_all(&mut c, &[text(6, "a", "again")]);
        let last = parse(&c.snapshot(Some("a")).last().unwrap().frame);
        assert_eq!(last["data"]["delta"], "again");
        let (_, shed) = c.shed();
        assert_eq!((shed, c.truncated_runs()), (1, 1), "a run truncated once is counted once");
        assert_eq!(c.shed(), (0, 0), "nothing left to shed");
    }

    #[test]
    fn custom_events_are_capped_oldest_first() {
        let mut c = Compactor::new(Limits { max_custom: 3, ..Limits::default() });
        let mut events = vec![started(1, "r")];
        events.extend((2..=10).map(|s| Ev {
            seq: s,
            run: "r".into(),
            kind: EventKind::Custom,
            data: json!({"name": "n"}),
        }));
        apply_all(&mut c, &events);
        let seqs: Vec<u64> = c.snapshot(None).iter().map(|f| f.seq).collect();
        assert_eq!(seqs, vec![1, 8, 9, 10]);
        assert_eq!(parse(&c.snapshot(None)[0].frame)["truncated"], true);
    }

    #[test]
    fn past_max_runs_the_run_idle_longest_is_dropped() {
        let mut c = Compactor::new(Limits { max_runs: 2, ..Limits::default() });
        apply_all(&mut c, &[started(1, "a"), started(2, "b"), text(3, "a", "x"), started(4, "c")]);
        assert_eq!(c.runs(), 2);
        assert!(c.has_run("a") && c.has_run("c") && !c.has_run("b"));
        assert_eq!((c.dropped_runs(), c.truncated_runs()), (1, 0));
        c.expire(4);
        assert_eq!(c.runs(), 1, "a was last active at 3");
    }

    #[test]
    fn frames_with_other_data_fields_are_not_merged() {
        let mut c = Compactor::new(Limits::default());
        let ev = |seq, data| Ev { seq, run: "r".into(), kind: EventKind::AgentText, data };
        apply_all(
            &mut c,
            &[
                started(1, "r"),
                ev(2, json!({"delta": "a", "message_id": "m1"})),
                ev(3, json!({"delta": "b", "message_id": "m1"})),
                ev(4, json!({"delta": "c", "message_id": "m2"})),
                ev(5, json!({"delta": "d", "message_id": "m2", "role": "user"})),
                ev(6, json!({"note": "no delta"})),
            ],
        );
        let texts: Vec<Value> =
            c.snapshot(None).iter().skip(1).map(|f| parse(&f.frame)["data"].clone()).collect();
        assert_eq!(
            texts,
            vec![
                json!({"delta": "ab", "message_id": "m1"}),
                json!({"delta": "c", "message_id": "m2"}),
                json!({"delta": "d", "message_id": "m2", "role": "user"}),
                json!({"note": "no delta"}),
            ]
        );
    }

    #[test]
    fn a_snapshot_of_some_kinds_is_the_snapshot_without_the_others() {
        let mut c = Compactor::new(Limits::default());
        let ev = |seq, kind, data| Ev { seq, run: "r".into(), kind, data };
        apply_all(
            &mut c,
            &[
                started(1, "r"),
                ev(2, EventKind::AgentText, json!({"delta": "a"})),
                ev(3, EventKind::ToolExecuting, json!({"tool_name": "t", "tool_call_id": "c"})),
                ev(4, EventKind::AgentText, json!({"delta": "b"})),
                ev(5, EventKind::Progress, json!({"pct": 50})),
            ],
        );
        let kinds = [EventKind::AgentStarted, EventKind::ToolExecuting, EventKind::Progress];
        let all: Vec<(u64, String)> = c
            .snapshot(None)
            .into_iter()
            .filter(|f| kinds.contains(&f.kind))
            .map(|f| (f.seq, f.frame))
            .collect();
        let some: Vec<(u64, String)> =
            c.snapshot_of(None, &kinds).into_iter().map(|f| (f.seq, f.frame)).collect();
        assert_eq!(some, all);
        assert_eq!(some.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 3, 5]);
    }

    #[test]
    fn seeding_rejects_what_is_not_a_run_frame() {
        let mut c = Compactor::new(Limits::default());
        assert!(c.seed("not json", 0).is_err());
        assert!(
            c.seed(r#"{"type":"event","seq":1,"id":"i","user_id":"u","event":"nope","data":{},"ts":"x"}"#, 0)
                .is_err()
        );
        assert!(
            c.seed(
                r#"{"type":"event","seq":1,"id":"i","user_id":"u","event":"custom","data":{},"ts":"x"}"#,
                0
            )
            .is_err()
        );
        assert_eq!(c.runs(), 0);
    }

    fn arb_events() -> impl Strategy<Value = Vec<Ev>> {
        // (run index, kind selector, text, message id) per event; runs start on their first event.
        prop::collection::vec((0..3usize, 0..10u8, "[a-zé ]{0,4}", 0..2u8), 1..120).prop_map(|raw| {
            let mut out = Vec::new();
            let mut started = [false; 3];
            let mut open_tool = [false; 3];
            for (i, (r, k, t, m)) in raw.into_iter().enumerate() {
                let run = format!("run{r}");
                let seq = i as u64 + 1;
                let (kind, data) = if !started[r] {
                    started[r] = true;
                    (EventKind::AgentStarted, json!({}))
                } else {
                    match k {
                        0..=3 => (EventKind::AgentText, json!({"delta": t, "message_id": format!("m{m}")})),
                        4 => (EventKind::AgentThinking, json!({"text": t})),
                        5 if !open_tool[r] => {
                            open_tool[r] = true;
                            (EventKind::ToolExecuting, json!({"tool_name": "s"}))
                        }
                        5 => {
                            open_tool[r] = false;
                            (EventKind::ToolCompleted, json!({"tool_name": "s"}))
                        }
                        6 => (EventKind::Progress, json!({"p": t})),
                        7 => (EventKind::Custom, json!({"name": t})),
                        8 => (EventKind::RunStalled, json!({})),
                        _ => (EventKind::AgentText, json!({"delta": t})),
                    }
                };
                out.push(Ev { seq, run, kind, data });
            }
            out
        })
    }

    proptest! {
        /// A client drawing the snapshot draws exactly what it would have drawn from every event.
        #[test]
        fn the_snapshot_draws_like_the_events(events in arb_events()) {
            let mut c = Compactor::new(Limits::default());
            apply_all(&mut c, &events);
            let snap = c.snapshot(None);
            prop_assert!(snap.windows(2).all(|w| w[0].seq < w[1].seq), "increasing seqs");
            for r in 0..3 {
                let run = format!("run{r}");
                let original: Vec<Value> = events.iter().filter(|e| e.run == run).map(|e| parse(&e.frame())).collect();
                let compact: Vec<Value> = snap.iter().filter(|f| f.run_id == run).map(|f| parse(&f.frame)).collect();
                prop_assert_eq!(draw(original), draw(compact.clone()));
                prop_assert!(compact.iter().all(|f| f["snapshot"] == true));
                if let Some(last) = events.iter().rfind(|e| e.run == run && e.kind != EventKind::RunStalled) {
                    // The run's newest non-stall event is covered by the snapshot's last frames.
                    prop_assert!(compact.iter().any(|f| f["seq"] == last.seq));
                }
            }
        }

        /// A compactor rebuilt from a snapshot, then fed the rest, equals one fed everything: what
        /// lets a store keep the compacted frames instead of every event.
        #[test]
        fn seeding_from_a_snapshot_then_continuing_is_the_same(events in arb_events(), cut in 0..120usize) {
            let cut = cut.min(events.len());
            let mut whole = Compactor::new(Limits::default());
            apply_all(&mut whole, &events);
            let mut head = Compactor::new(Limits::default());
            apply_all(&mut head, &events[..cut]);
            let mut seeded = Compactor::new(Limits::default());
            for f in head.snapshot(None) {
                seeded.seed(&f.frame, 0).unwrap();
            }
            seeded.set_through(head.through());
            apply_all(&mut seeded, &events[cut..]);
            prop_assert_eq!(seeded.snapshot(None), whole.snapshot(None));
        }

        /// Small budgets hold: bytes stay under the limit and loss is always flagged.
        #[test]
        fn limits_hold_and_loss_is_flagged(events in arb_events(), budget in 300..2000usize) {
            let limits = Limits { max_run_bytes: budget, max_runs: 2, max_custom: 2 };
            let mut c = Compactor::new(limits);
            apply_all(&mut c, &events);
            prop_assert!(c.runs() <= 2);
            let mut unbounded = Compactor::new(Limits::default());
            apply_all(&mut unbounded, &events);
            for f in c.snapshot(None).iter().filter(|f| f.kind == EventKind::AgentStarted) {
                let bounded: Vec<_> = c.snapshot(Some(&f.run_id));
                let full: Vec<_> = unbounded.snapshot(Some(&f.run_id));
                let flagged = parse(&f.frame)["truncated"] == true;
                let lost = bounded.iter().map(|f| parse(&f.frame)).map(|mut v| { v.as_object_mut().unwrap().remove("truncated"); v }).collect::<Vec<_>>()
                    != full.iter().map(|f| parse(&f.frame)).collect::<Vec<_>>();
                prop_assert_eq!(flagged, lost);
                let bytes: usize = bounded.iter().skip(1).map(|f| f.frame.len()).sum();
                prop_assert!(bytes <= budget + 64 * bounded.len(), "{} bytes over {}", bytes, budget);
            }
        }
    }
}
