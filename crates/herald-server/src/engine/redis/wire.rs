//! The one codec between this engine and Redis: the append script's arguments and reply, the
//! stream entries it writes, the entries of active runs' lists and the pub/sub messages it
//! publishes. `append.lua` is the other half; what one side writes the other reads here, and the
//! tests hold both to it.
//!
//! Variable fields travel as netstring-like `<byte length>:<bytes>` fields, so ids, run ids and
//! frames may contain any byte (a newline in an id cannot shift a field). An event's record —
//! appended ms, id, run id, kind, and its frame after the seq — is built here, by the node, and
//! stored by the script as it is: the stream entry's single field `e`, whose entry id `<seq>-0`
//! gives the seq. A run's list entry (an event that left the stream while its run was active) is
//! the seq, a space and the record; a published message is a
//! line `<first seq> <count> <epoch>`, then the records, so one PUBLISH carries every event of
//! one user's batch and the script builds no string per event but the seq. A decoded event's
//! frame is the head, its seq and the record's tail; every local connection shares it.
//!
//! Records written before the tail-only form held the whole frame; they decode too.
//!
//! Decoding never panics: a malformed reply or message is a [`WireError`].

use crate::engine::FRAME_HEAD;
use crate::frame::Frame;
use bytes::Bytes;
use herald_protocol::EventKind;
use redis::Value;
use std::borrow::Cow;

/// Something Redis sent that is not what the append script or this codec writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A field ended before its declared length, or is missing.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A field is there but does not parse.
    #[error("bad {what}: {value:?}")]
    Bad {
        /// Which field.
        what: &'static str,
        /// What it held (shortened).
        value: String,
    },
    /// A script reply of the wrong shape.
    #[error("unexpected script reply: {0}")]
    Reply(String),
}

fn bad(what: &'static str, value: &[u8]) -> WireError {
    let shown = String::from_utf8_lossy(&value[..value.len().min(64)]).into_owned();
    WireError::Bad { what, value: shown }
}

/// Appends one `<len>:<bytes>` field (what the script's `ns()` writes).
pub fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(field.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(field);
}

/// The record of one event as the node sends it to the script: appended ms (the node's clock),
/// id, run id or "", kind, and the frame after its seq (see [`FRAME_HEAD`]).
pub fn encode_record(appended_ms: u64, id: &str, run_id: &str, kind: &str, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tail.len() + id.len() + run_id.len() + 48);
    put(&mut out, appended_ms.to_string().as_bytes());
    put(&mut out, id.as_bytes());
    put(&mut out, run_id.as_bytes());
    put(&mut out, kind.as_bytes());
    put(&mut out, tail);
    out
}

/// Reads `<len>:<bytes>` fields off a shared buffer; fields are zero-copy slices of it.
struct Fields {
    buf: Bytes,
    at: usize,
}

impl Fields {
    fn new(buf: Bytes) -> Self {
        Self { buf, at: 0 }
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes, WireError> {
        let rest = &self.buf[self.at..];
        let colon = rest.iter().take(21).position(|&b| b == b':').ok_or(WireError::Truncated(what))?;
        let len: usize = std::str::from_utf8(&rest[..colon])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(what, &rest[..colon]))?;
        let start = self.at + colon + 1;
        let end =
            start.checked_add(len).filter(|&e| e <= self.buf.len()).ok_or(WireError::Truncated(what))?;
        self.at = end;
        Ok(self.buf.slice(start..end))
    }

    fn text(&mut self, what: &'static str) -> Result<String, WireError> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad(what, &b))
    }

    fn number<T: std::str::FromStr>(&mut self, what: &'static str) -> Result<T, WireError> {
        let b = self.bytes(what)?;
        std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()).ok_or_else(|| bad(what, &b))
    }

    fn end(&self) -> Result<(), WireError> {
        if self.at == self.buf.len() { Ok(()) } else { Err(bad("trailing bytes", &self.buf[self.at..])) }
    }

    fn record(&mut self, seq: u64) -> Result<WireEvent, WireError> {
        let appended_ms = self.number("appended ms")?;
        let id = self.text("id")?;
        let run_id = Some(self.text("run id")?).filter(|r| !r.is_empty());
        let kind_bytes = self.bytes("kind")?;
        let kind = std::str::from_utf8(&kind_bytes)
            .ok()
            .and_then(EventKind::from_name)
            .ok_or_else(|| bad("kind", &kind_bytes))?;
        let frame_bytes = self.bytes("frame")?;
        let frame = if frame_bytes.starts_with(FRAME_HEAD.as_bytes()) {
            // A whole frame: a record written before records held the tail only.
            Frame::new(std::str::from_utf8(&frame_bytes).map_err(|_| bad("frame", &frame_bytes))?)
        } else {
            let tail = std::str::from_utf8(&frame_bytes).map_err(|_| bad("frame", &frame_bytes))?;
            Frame::from_parts(&[FRAME_HEAD, itoa::Buffer::new().format(seq), tail])
        };
        Ok(WireEvent { seq, appended_ms, id, run_id, kind, frame })
    }
}

/// One event as stored in a user's stream or published on its channel.
#[derive(Debug, Clone, PartialEq)]
pub struct WireEvent {
    /// Its seq.
    pub seq: u64,
    /// When it was appended (the appending node's clock, ms since the epoch).
    pub appended_ms: u64,
    /// Its id.
    pub id: String,
    /// Its run.
    pub run_id: Option<String>,
    /// Its kind.
    pub kind: EventKind,
    /// The complete `{"type":"event",…}` frame.
    pub frame: Frame,
}

/// One message on a user's channel: every event of one user's batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The log's epoch.
    pub epoch: String,
    /// The events, in seq order.
    pub events: Vec<WireEvent>,
}

/// Decodes a message the append script published: a line `<first seq> <count> <epoch>`, then
/// the records.
pub fn decode_published(payload: Bytes) -> Result<Published, WireError> {
    let newline =
        payload.iter().take(128).position(|&b| b == b'\n').ok_or(WireError::Truncated("message header"))?;
    let header =
        std::str::from_utf8(&payload[..newline]).map_err(|_| bad("message header", &payload[..newline]))?;
    let mut words = header.splitn(3, ' ');
    let (Some(first), Some(count), Some(epoch)) = (words.next(), words.next(), words.next()) else {
        return Err(bad("message header", header.as_bytes()));
    };
    let (Ok(first), Ok(count)) = (first.parse::<u64>(), count.parse::<u64>()) else {
        return Err(bad("message header", header.as_bytes()));
    };
    let epoch = epoch.to_owned();
    let mut fields = Fields::new(payload.slice(newline + 1..));
    let mut events = Vec::with_capacity(count.min(1024) as usize);
    for seq in first..first.saturating_add(count) {
        events.push(fields.record(seq)?);
    }
    fields.end()?;
    Ok(Published { epoch, events })
}

/// One entry of an active run's list (see `compact.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunEntry {
    /// The event's seq; for a compacted frame, the seq it carries (its last event's).
    pub seq: u64,
    /// The frame.
    pub frame: Frame,
    /// A frame a node wrote back when it compacted the list, not an event the script moved out
    /// of the stream (its seq, a space, its record).
    pub compacted: bool,
}

/// Decodes one entry of an active run's list.
pub fn decode_run_entry(entry: &[u8]) -> Result<RunEntry, WireError> {
    if entry.starts_with(b"{") {
        #[derive(serde::Deserialize)]
        struct Seq {
            seq: u64,
        }
        let seq = serde_json::from_slice::<Seq>(entry).map_err(|_| bad("run frame", entry))?.seq;
        let frame = Frame::new(std::str::from_utf8(entry).map_err(|_| bad("run frame", entry))?);
        return Ok(RunEntry { seq, frame, compacted: true });
    }
    let space = entry.iter().take(21).position(|&b| b == b' ').ok_or(WireError::Truncated("run entry"))?;
    let seq = std::str::from_utf8(&entry[..space])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("run entry seq", &entry[..space]))?;
    let mut fields = Fields::new(Bytes::copy_from_slice(&entry[space + 1..]));
    let event = fields.record(seq)?;
    fields.end()?;
    Ok(RunEntry { seq, frame: event.frame, compacted: false })
}

/// Decodes one stream entry: its id `<seq>-0` and its field `e`.
pub fn decode_entry(entry_id: &str, record: Bytes) -> Result<WireEvent, WireError> {
    let seq = entry_id
        .strip_suffix("-0")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("stream entry id", entry_id.as_bytes()))?;
    let mut fields = Fields::new(record);
    let event = fields.record(seq)?;
    fields.end()?;
    Ok(event)
}

/// Decodes an `XRANGE` reply into events (entries without a readable record are an error: the
/// stream is written only by the append script).
pub fn decode_range(reply: Value) -> Result<Vec<WireEvent>, WireError> {
    let Value::Array(entries) = reply else { return Err(WireError::Reply(format!("XRANGE gave {reply:?}"))) };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(pair) = entry else { return Err(WireError::Reply("stream entry".into())) };
            let mut pair = pair.into_iter();
            let (Some(Value::BulkString(id)), Some(fields)) = (pair.next(), pair.next()) else {
                return Err(WireError::Reply("stream entry".into()));
            };
            let id = String::from_utf8(id).map_err(|e| bad("stream entry id", e.as_bytes()))?;
            let record = match fields {
                Value::Array(kv) => match &kv[..] {
                    [Value::BulkString(k), Value::BulkString(v)] if k == b"e" => Bytes::from(v.clone()),
                    _ => return Err(WireError::Reply(format!("stream entry {id} has no record"))),
                },
                Value::Map(kv) => match &kv[..] {
                    [(Value::BulkString(k), Value::BulkString(v))] if k == b"e" => Bytes::from(v.clone()),
                    _ => return Err(WireError::Reply(format!("stream entry {id} has no record"))),
                },
                other => return Err(WireError::Reply(format!("stream entry {id}: {other:?}"))),
            };
            decode_entry(&id, record)
        })
        .collect()
}

/// What the read script returned: the log's state and the entries after a seq.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRead {
    /// The log's epoch; `None` when the user has no log in Redis.
    pub epoch: Option<String>,
    /// Seq of the last appended event (0 without a log).
    pub seq: u64,
    /// Seq of the oldest retained event (the head + 1 when none is retained; `None` from an old
    /// read script when none is).
    pub first_retained: Option<u64>,
    /// The entries read, oldest first.
    pub events: Vec<WireEvent>,
}

/// Decodes the read script's reply.
pub fn decode_read(reply: Value) -> Result<LogRead, WireError> {
    let Value::Array(items) = reply else { return Err(WireError::Reply(format!("read gave {reply:?}"))) };
    let mut items = items.into_iter();
    let (Some(epoch), Some(Value::Int(seq)), Some(Value::Int(first)), Some(range), None) =
        (items.next(), items.next(), items.next(), items.next(), items.next())
    else {
        return Err(WireError::Reply("read reply of the wrong shape".into()));
    };
    let epoch = match epoch {
        Value::BulkString(b) => String::from_utf8(b).map_err(|e| bad("epoch", e.as_bytes()))?,
        other => return Err(WireError::Reply(format!("epoch: {other:?}"))),
    };
    let (Ok(seq), Ok(first)) = (u64::try_from(seq), u64::try_from(first)) else {
        return Err(WireError::Reply(format!("negative seq {seq} or oldest {first}")));
    };
    Ok(LogRead {
        epoch: Some(epoch).filter(|e| !e.is_empty()),
        seq,
        first_retained: Some(first).filter(|&f| f > 0),
        events: decode_range(range)?,
    })
}

/// One user's section of an append script call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCall {
    /// The user's keys: meta, log, ids, runs, live (hash-tagged by the user: one cluster slot).
    pub keys: [String; 5],
    /// The epoch to create if the log is gone.
    pub new_epoch: String,
    /// The user's channel.
    pub channel: String,
    /// The version of the user's run states the events were validated against
    /// ([`runs_version`]); `None` when they touch no run (nothing to compare).
    pub runs_version: Option<String>,
    /// Runs whose state changes: (run id, new state or "" for none).
    pub runs: Vec<(String, String)>,
    /// Events to append.
    pub events: Vec<EventCall>,
}

/// One event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCall {
    /// Its publisher's id, checked and recorded for idempotency; "" for a generated id (the
    /// record holds it).
    pub id: String,
    /// True for a publisher's id. Generated ids are neither checked nor recorded.
    pub keyed: bool,
    /// Its run when it starts or ends one (the script keeps the set of active runs), else "".
    pub run_id: String,
    /// Its kind's name.
    pub kind: &'static str,
    /// Its record ([`encode_record`]).
    pub record: Vec<u8>,
}

/// A whole append script call: settings, then the users' sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendCall {
    /// Most events kept per user.
    pub max_events: usize,
    /// How long events are kept, ms.
    pub ttl_ms: u64,
    /// `PUBLISH` or `SPUBLISH` (sharded pub/sub on Redis Cluster).
    pub publish: &'static str,
    /// The node's clock, ms since the epoch: for retention by age and the keys' TTL refresh.
    pub now_ms: u64,
    /// One section per user.
    pub users: Vec<UserCall>,
}

impl AppendCall {
    /// KEYS and ARGV of the script call, in the order `append.lua` reads them.
    pub fn encode(&self) -> (Vec<&str>, Vec<Cow<'_, [u8]>>) {
        let mut keys = Vec::with_capacity(self.users.len() * 5);
        let number = |n: u64| Cow::Owned(n.to_string().into_bytes());
        let mut args: Vec<Cow<'_, [u8]>> = vec![
            number(self.max_events as u64),
            number(self.ttl_ms),
            Cow::Borrowed(self.publish.as_bytes()),
            number(self.now_ms),
            number(self.users.len() as u64),
        ];
        for user in &self.users {
            keys.extend(user.keys.iter().map(String::as_str));
            args.push(Cow::Borrowed(user.new_epoch.as_bytes()));
            args.push(Cow::Borrowed(user.channel.as_bytes()));
            args.push(Cow::Borrowed(user.runs_version.as_deref().unwrap_or_default().as_bytes()));
            args.push(number(user.runs.len() as u64));
            for (run, after) in &user.runs {
                args.extend([run, after].map(|s| Cow::Borrowed(s.as_bytes())));
            }
            args.push(number(user.events.len() as u64));
            for e in &user.events {
                args.push(Cow::Borrowed(e.id.as_bytes()));
                args.push(Cow::Borrowed(if e.keyed { b"1" } else { b"0" }));
                args.push(Cow::Borrowed(e.run_id.as_bytes()));
                args.push(Cow::Borrowed(e.kind.as_bytes()));
            }
            args.extend(user.events.iter().map(|e| Cow::Borrowed(&e.record[..])));
        }
        (keys, args)
    }
}

/// What one user's section of a successful call wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserWritten {
    /// The log's epoch.
    pub epoch: String,
    /// Subscribers the message reached (nodes serving the user).
    pub receivers: usize,
    /// Seq of the first event; the others follow.
    pub first_seq: u64,
    /// Events appended.
    pub count: usize,
    /// The version of the user's run states now ([`runs_version`]).
    pub runs_version: String,
}

/// The version of a user's run states the script compares: its epoch (so that keys created
/// again never bring an old count back) and how many times its run states changed.
pub fn runs_version(epoch: &str, changes: u64) -> String {
    format!("{epoch}:{changes}")
}

/// The script's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendReply {
    /// Everything was written; one entry per user section, in call order.
    Ok(Vec<UserWritten>),
    /// A run state or id changed since validation (what, for the log): nothing was written.
    Conflict(String),
}

/// Decodes the script's reply to a call of `users` sections: `{"ok", lines}` with one line per
/// section, `<receivers> <first seq> <count> <runs version> <epoch>`, or `{"conflict", why}`.
pub fn decode_reply(reply: Value, users: usize) -> Result<AppendReply, WireError> {
    let Value::Array(items) = reply else { return Err(WireError::Reply(format!("{reply:?}"))) };
    let text = |v: &Value, what: &'static str| -> Result<String, WireError> {
        match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| bad(what, b)),
            Value::SimpleString(s) => Ok(s.clone()),
            other => Err(WireError::Reply(format!("{what}: {other:?}"))),
        }
    };
    match items.first().map(|v| text(v, "status")).transpose()?.as_deref() {
        Some("conflict") => {
            Ok(AppendReply::Conflict(items.get(1).map(|v| text(v, "why")).transpose()?.unwrap_or_default()))
        }
        Some("ok") if items.len() == 2 => {
            let Value::BulkString(lines) = &items[1] else {
                return Err(WireError::Reply(format!("sections: {:?}", items[1])));
            };
            let written: Vec<UserWritten> =
                lines.split_inclusive(|&b| b == b'\n').map(decode_written).collect::<Result<_, _>>()?;
            if written.len() != users {
                return Err(WireError::Reply(format!("{} sections for {users} users", written.len())));
            }
            Ok(AppendReply::Ok(written))
        }
        _ => Err(WireError::Reply(format!("{items:?}"))),
    }
}

/// One section's line of the script's reply (see [`decode_reply`]).
fn decode_written(line: &[u8]) -> Result<UserWritten, WireError> {
    let what = "reply section";
    let text =
        line.strip_suffix(b"\n").and_then(|l| std::str::from_utf8(l).ok()).ok_or_else(|| bad(what, line))?;
    let mut words = text.splitn(5, ' ');
    let mut number = || -> Result<u64, WireError> {
        words.next().and_then(|w| w.parse().ok()).ok_or_else(|| bad(what, line))
    };
    let (receivers, first_seq, count, changes) = (number()?, number()?, number()?, number()?);
    let epoch = words.next().ok_or_else(|| bad(what, line))?.to_owned();
    Ok(UserWritten {
        runs_version: runs_version(&epoch, changes),
        epoch,
        receivers: receivers as usize,
        first_seq,
        count: count as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tail every sample frame has after its seq.
    const TAIL: &str = r#","id":"x:y\n"}"#;

    /// The record the node sends for `e` (whose frame is the head, its seq and [`TAIL`]).
    fn record(out: &mut Vec<u8>, e: &WireEvent) {
        let run = e.run_id.as_deref().unwrap_or("");
        out.extend(encode_record(e.appended_ms, &e.id, run, e.kind.as_str(), TAIL.as_bytes()));
    }

    fn sample(seq: u64, id: &str, run: Option<&str>) -> WireEvent {
        WireEvent {
            seq,
            appended_ms: 1_700_000_000_123,
            id: id.into(),
            run_id: run.map(str::to_owned),
            kind: EventKind::AgentThinking,
            frame: format!("{FRAME_HEAD}{seq}{TAIL}").into(),
        }
    }

    /// What `append.lua` publishes for one user's events (the test's mirror of its message).
    fn message(epoch: &str, events: &[WireEvent]) -> Vec<u8> {
        let mut out = format!("{} {} {epoch}\n", events[0].seq, events.len()).into_bytes();
        for e in events {
            record(&mut out, e);
        }
        out
    }

    #[test]
    fn published_messages_round_trip_with_any_bytes_in_ids() {
        let message_sent = Published {
            epoch: "0123456789abcdef".into(),
            events: vec![sample(7, "id with\nnewline and 12:colons", Some("r")), sample(8, "é", None)],
        };
        let out = message(&message_sent.epoch, &message_sent.events);
        assert_eq!(decode_published(out.into()).unwrap(), message_sent);
    }

    #[test]
    fn run_list_entries_decode_pushed_events_and_compacted_frames() {
        let event = sample(12, "a", Some("r"));
        let mut entry = b"12 ".to_vec();
        record(&mut entry, &event);
        assert_eq!(
            decode_run_entry(&entry).unwrap(),
            RunEntry { seq: 12, frame: event.frame, compacted: false }
        );
        let compacted = format!("{FRAME_HEAD}40{TAIL}");
        assert_eq!(
            decode_run_entry(compacted.as_bytes()).unwrap(),
            RunEntry { seq: 40, frame: compacted.clone().into(), compacted: true }
        );
        for bad in [&b""[..], b"2:12", b"12 ", b"x y", b"\xff{", b"{\"seq\":\"x\"}"] {
            assert!(decode_run_entry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn records_holding_a_whole_frame_still_decode() {
        let event = sample(3, "old", None);
        let mut old = Vec::new();
        put(&mut old, event.appended_ms.to_string().as_bytes());
        put(&mut old, b"old");
        put(&mut old, b"");
        put(&mut old, event.kind.as_str().as_bytes());
        put(&mut old, event.frame.text());
        assert_eq!(decode_entry("3-0", old.into()).unwrap(), event);
    }

    #[test]
    fn stream_entries_round_trip() {
        let event = sample(42, "a", Some("run"));
        let mut out = Vec::new();
        record(&mut out, &event);
        assert_eq!(decode_entry("42-0", out.clone().into()).unwrap(), event);
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"42-0".to_vec()),
            Value::Array(vec![Value::BulkString(b"e".to_vec()), Value::BulkString(out)]),
        ])]);
        assert_eq!(decode_range(reply).unwrap(), vec![event]);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let good = message("epoch", &[sample(1, "a", None)]);
        for cut in 0..good.len() {
            assert!(decode_published(Bytes::copy_from_slice(&good[..cut])).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(b'x');
        assert!(decode_published(trailing.into()).is_err());
        for bad in
            [&b"99999999999999999999999 1 e\n"[..], b"-1 1 e\n", b"1 1\n", b"1 x e\n", b"\xff\xff", b""]
        {
            assert!(decode_published(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
        let mut unknown_kind = Vec::new();
        put(&mut unknown_kind, b"1");
        put(&mut unknown_kind, b"id");
        put(&mut unknown_kind, b"");
        put(&mut unknown_kind, b"no_such_event");
        put(&mut unknown_kind, b"{}");
        assert!(matches!(decode_entry("1-0", unknown_kind.into()), Err(WireError::Bad { what: "kind", .. })));
        assert!(decode_entry("x-0", Bytes::new()).is_err());
        assert!(decode_range(Value::Int(3)).is_err());
        assert!(decode_range(Value::Array(vec![Value::Nil])).is_err());
    }

    #[test]
    fn script_replies_decode_and_malformed_ones_are_errors() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let ok = |lines: &str| Value::Array(vec![bulk("ok"), bulk(lines)]);
        let written = |epoch: &str, receivers, first_seq, count, version: &str| UserWritten {
            epoch: epoch.into(),
            receivers,
            first_seq,
            count,
            runs_version: version.into(),
        };
        assert_eq!(
            decode_reply(ok("2 5 3 7 ep\n"), 1).unwrap(),
            AppendReply::Ok(vec![written("ep", 2, 5, 3, "ep:7")])
        );
        assert_eq!(
            decode_reply(ok("2 5 3 7 ep\n0 1 1 0 other epoch\n"), 2).unwrap(),
            AppendReply::Ok(vec![
                written("ep", 2, 5, 3, "ep:7"),
                written("other epoch", 0, 1, 1, "other epoch:0")
            ]),
            "the epoch is the rest of its line"
        );
        assert!(decode_reply(ok("2 5 3 7 ep\n"), 2).is_err(), "one section short");
        assert_eq!(
            decode_reply(Value::Array(vec![bulk("conflict"), bulk("run r")]), 3).unwrap(),
            AppendReply::Conflict("run r".into())
        );
        for bad in [
            Value::Nil,
            Value::Array(vec![]),
            ok("x 5 3 7 ep\n"),
            ok("-1 5 3 7 ep\n"),
            ok("2 5 3 ep\n"),
            ok("2 5 3 7\n"),
            ok("2 5 3 7 ep"),
            ok(""),
            Value::Array(vec![bulk("ok"), Value::Int(1)]),
            Value::Array(vec![
                bulk("ok"),
                bulk("ep"),
                Value::Int(2),
                Value::Int(5),
                Value::Int(3),
                Value::Int(7),
            ]),
            Value::Array(vec![bulk("what")]),
        ] {
            assert!(decode_reply(bad.clone(), 1).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn read_replies_decode_and_malformed_ones_are_errors() {
        let event = sample(4, "a", None);
        let mut record_bytes = Vec::new();
        record(&mut record_bytes, &event);
        let entry = Value::Array(vec![
            Value::BulkString(b"4-0".to_vec()),
            Value::Array(vec![Value::BulkString(b"e".to_vec()), Value::BulkString(record_bytes)]),
        ]);
        let reply = |epoch: &str, seq, first, entries: Vec<Value>| {
            Value::Array(vec![
                Value::BulkString(epoch.as_bytes().to_vec()),
                Value::Int(seq),
                Value::Int(first),
                Value::Array(entries),
            ])
        };
        assert_eq!(
            decode_read(reply("ep", 4, 2, vec![entry.clone()])).unwrap(),
            LogRead { epoch: Some("ep".into()), seq: 4, first_retained: Some(2), events: vec![event] }
        );
        let empty = decode_read(reply("", 0, 0, vec![])).unwrap();
        assert_eq!((empty.epoch, empty.first_retained), (None, None));
        for bad in [
            Value::Nil,
            Value::Array(vec![]),
            reply("ep", -1, 0, vec![]),
            reply("ep", 1, 0, vec![Value::Int(1)]),
            Value::Array(vec![Value::Int(1), Value::Int(1), Value::Int(1), Value::Array(vec![])]),
        ] {
            assert!(decode_read(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn calls_encode_in_script_order() {
        let call = AppendCall {
            max_events: 100,
            ttl_ms: 9000,
            publish: "PUBLISH",
            now_ms: 1234,
            users: vec![UserCall {
                keys: ["m".into(), "l".into(), "i".into(), "r".into(), "a".into()],
                new_epoch: "ep".into(),
                channel: "ch".into(),
                runs_version: Some("ep:3".into()),
                runs: vec![("run".into(), "{}".into())],
                events: vec![EventCall {
                    id: "a".into(),
                    keyed: true,
                    run_id: "run".into(),
                    kind: "agent_started",
                    record: b"the record".to_vec(),
                }],
            }],
        };
        let (keys, args) = call.encode();
        assert_eq!(keys, ["m", "l", "i", "r", "a"]);
        let args: Vec<String> =
            args.into_iter().map(|a| String::from_utf8(a.into_owned()).unwrap()).collect();
        assert_eq!(
            args,
            [
                "100",
                "9000",
                "PUBLISH",
                "1234",
                "1",
                "ep",
                "ch",
                "ep:3",
                "1",
                "run",
                "{}",
                "1",
                "a",
                "1",
                "run",
                "agent_started",
                "the record"
            ]
        );
    }
}
