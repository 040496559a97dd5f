//! The Redis engine's share of per-run compaction ([`herald_protocol::compact`]).
//!
//! A run's events are in the user's stream while they are in the history window; the ones that
//! leave it while the run is active are kept in a list `{prefix}:{user}:runs:<run_id>`, under
//! the user's hash tag (one cluster slot with the log). The append script keeps it in the same
//! atomic step as the log: an active run is in the user's `live` set (with the seq of its
//! `agent_started`) until its terminal event, which also deletes its list; trimming the stream
//! first pushes the trimmed events of live runs to their lists (an entry is the event's seq and
//! record, see [`super::wire`]); lists expire with the user's keys. A run that ends within the
//! window — most runs — never writes its events twice.
//!
//! So a run's whole history is its list, then its events still in the stream — or a compacted
//! prefix of that, because compaction is done on read:
//!
//! - a node that loads a user (its first connection there) reads every run's list and, when a
//!   run is active, the stream, with the log's seq, in one script ([`SEED`]), and rebuilds the
//!   log's compacted runs from them; from then on the node folds live events itself, like the
//!   memory engine;
//! - whenever a list is noticeably longer than its compacted form (at load, or after
//!   [`COMPACT_EVERY`] events appended through this node), the node writes the compacted frames
//!   back in place of the prefix it read ([`REPLACE`]), compare-and-set on the last entry it
//!   read, so Redis holds about one compacted run plus the events since, not every delta.
//!
//! A list may then hold frames of events that are still in the stream, and an event moved out of
//! the stream later is pushed after them: readers skip every entry and stream event at or below
//! the highest seq already taken ([`seed_frames`]). Lists written by earlier builds, which held
//! every event of the run, read the same way.
//!
//! Compaction is associative (a compactor seeded with compacted frames, then fed the rest, equals
//! one fed everything; property-tested in the protocol crate), which is what makes the prefix
//! replacement safe while publishers keep appending.

use super::RedisEngine;
use super::wire::{RunEntry, WireEvent};
use crate::engine::EngineError;
use crate::engine::plan::Part;
use crate::log::UserLog;
use foldhash::{HashMap, HashMapExt};
use herald_protocol::UserId;
use herald_protocol::compact::{Compactor, Limits};
use parking_lot::Mutex;
use redis::Value;
use std::sync::LazyLock;
use tracing::{debug, warn};

static SEED_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SEED));
static REPLACE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REPLACE));

/// Events appended through this node to one run between two compactions of its list.
pub const COMPACT_EVERY: u32 = 512;

/// A list is rewritten when it is at least this many entries longer than its compacted form.
const WORTH_IT: usize = 64;

/// Reads the epoch, the seq, every run's list and, when a run is active, the stream of one user,
/// atomically. KEYS: meta, runs, log, live.
/// Returns `{epoch or "", seq, XRANGE of the stream or {}, run_1, {entries…}, run_2, …}`.
pub const SEED: &str = r"
local out = {redis.call('HGET', KEYS[1], 'epoch') or '', redis.call('HGET', KEYS[1], 'seq') or '0', {}}
for _, run in ipairs(redis.call('HKEYS', KEYS[2])) do
  local entries = redis.call('LRANGE', KEYS[2] .. ':' .. run, 0, -1)
  if #entries > 0 then out[#out + 1] = run; out[#out + 1] = entries end
end
if #out > 3 or redis.call('ZCARD', KEYS[4]) > 0 then out[3] = redis.call('XRANGE', KEYS[3], '-', '+') end
return out
";

/// Replaces the first `n` entries of a run's list by compacted frames if its `n`-th entry is
/// still the one read (else the run ended, or another node compacted first: nothing happens).
/// KEYS: the list. ARGV: n, the n-th entry as read, then the compacted frames. Returns 1 or 0.
pub const REPLACE: &str = r"
local n = tonumber(ARGV[1])
if redis.call('LINDEX', KEYS[1], n - 1) ~= ARGV[2] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('LTRIM', KEYS[1], n, -1)
for i = #ARGV, 3, -1 do redis.call('LPUSH', KEYS[1], ARGV[i]) end
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
";

/// Counts events appended through this node per run, to compact long lists now and then.
#[derive(Debug, Default)]
pub struct Appended(Mutex<HashMap<(UserId, String), u32>>);

impl Appended {
    /// Records `n` events of `run`; true when the run's list is due for compaction. Forgets the
    /// run when `ended`.
    pub fn note(&self, user: &UserId, run: &str, n: u32, ended: bool) -> bool {
        let mut counts = self.0.lock();
        let key = (user.clone(), run.to_owned());
        if ended {
            counts.remove(&key);
            return false;
        }
        if counts.len() > 100_000 {
            counts.clear(); // runs that never ended: start counting again
        }
        let count = counts.entry(key).or_default();
        *count += n;
        if *count >= COMPACT_EVERY {
            *count = 0;
            return true;
        }
        false
    }
}

impl RedisEngine {
    /// Counts the events just appended (`fresh`: their indexes in `part`) per run and compacts,
    /// in the background, the lists of runs that got [`COMPACT_EVERY`] more through this node.
    pub(super) fn compact_long_runs(&self, part: &Part<'_>, fresh: impl Iterator<Item = usize>) {
        let mut per_run: HashMap<&str, (u32, bool)> = HashMap::new();
        for k in fresh {
            let event = part.events[k].1;
            if let Some(run) = event.run_id.as_deref() {
                let entry = per_run.entry(run).or_default();
                entry.0 += 1;
                entry.1 |= event.kind.is_terminal();
            }
        }
        let due: Vec<String> = per_run
            .into_iter()
            .filter(|(run, (n, ended))| self.appended.note(part.user, run, *n, *ended))
            .map(|(run, _)| run.to_owned())
            .collect();
        if due.is_empty() {
            return;
        }
        let Some(engine) = self.me.upgrade() else { return };
        let user = part.user.clone();
        tokio::spawn(async move {
            for run in due {
                engine.compact_run(&user, &run).await;
            }
        });
    }

    /// The list holding the frames of `run` of `user`.
    pub(super) fn run_key(&self, user: &UserId, run: &str) -> String {
        format!("{}:{run}", self.key(user, "runs"))
    }

    /// Rebuilds `log`'s compacted runs from Redis (call before the log receives live events), and
    /// compacts the lists that are worth it.
    pub(super) async fn seed_runs(&self, user: &UserId, log: &UserLog) -> Result<(), EngineError> {
        let mut con = self.commands.clone();
        let reply: Vec<Value> = SEED_SCRIPT
            .key(self.key(user, "meta"))
            .key(self.key(user, "runs"))
            .key(self.key(user, "log"))
            .key(self.key(user, "live"))
            .invoke_async(&mut con)
            .await
            .map_err(super::engine_error)?;
        let text = |v: &Value| redis::from_redis_value_ref::<String>(v).map_err(super::engine_error);
        let [epoch, seq, stream, lists @ ..] = &reply[..] else {
            return Err(EngineError::new("redis: short answer to the seed script"));
        };
        if text(epoch)? != log.epoch() {
            return Ok(()); // the log was replaced meanwhile: the node retires this copy anyway
        }
        let seq: u64 = text(seq)?.parse().map_err(super::engine_error)?;
        let stream = super::wire::decode_range(stream.clone()).map_err(super::engine_error)?;
        let mut runs: Vec<(String, Vec<String>)> = Vec::new();
        for pair in lists.chunks(2) {
            let [run, entries] = pair else { break };
            let entries: Vec<String> = redis::from_redis_value_ref(entries).map_err(super::engine_error)?;
            runs.push((text(run)?, entries));
        }
        let frames = seed_frames(&runs, &stream);
        let skipped = log.seed_runs(frames.iter().map(String::as_str), seq);
        if skipped > 0 {
            warn!(%user, skipped, "frames of active runs in redis are not event frames; skipped");
        }
        for (run, entries) in &runs {
            let (_, compacted) = log.snapshot(Some(run));
            let compacted: Vec<String> = compacted.into_iter().map(|f| f.frame).collect();
            self.replace_prefix(user, run, entries, &compacted).await;
        }
        Ok(())
    }

    /// Reads `run`'s list and writes its compacted form back when that is worth it. Best effort:
    /// a failure leaves the list as it was (correct, only longer).
    pub(super) async fn compact_run(&self, user: &UserId, run: &str) {
        let mut con = self.commands.clone();
        let frames: Vec<String> =
            match redis::AsyncCommands::lrange(&mut con, self.run_key(user, run), 0, -1).await {
                Ok(frames) => frames,
                Err(e) => return debug!(%user, run, "run list not compacted: {e}"),
            };
        let compacted = compact(&frames);
        self.replace_prefix(user, run, &frames, &compacted).await;
    }

    async fn replace_prefix(&self, user: &UserId, run: &str, read: &[String], compacted: &[String]) {
        let Some(last) = read.last() else { return };
        if compacted.is_empty() || compacted.len() + WORTH_IT > read.len() {
            return;
        }
        let mut con = self.commands.clone();
        let mut invocation = REPLACE_SCRIPT.prepare_invoke();
        invocation.key(self.run_key(user, run)).arg(read.len()).arg(last);
        for frame in compacted {
            invocation.arg(frame);
        }
        match invocation.invoke_async::<u8>(&mut con).await {
            Ok(1) => debug!(%user, run, from = read.len(), to = compacted.len(), "run list compacted"),
            Ok(_) => debug!(%user, run, "run list changed meanwhile; compaction skipped"),
            Err(e) => debug!(%user, run, "run list not compacted: {e}"),
        }
    }
}

/// The frames a log's compacted runs are rebuilt from: each run's list (`lists`), then the
/// events of `stream` — of a listed run only those after what its list holds (a list may hold a
/// compacted run that reaches into the stream); runs without a list are all in the stream.
pub fn seed_frames(lists: &[(String, Vec<String>)], stream: &[WireEvent]) -> Vec<String> {
    let mut through: HashMap<&str, u64> = HashMap::new();
    let mut frames = Vec::new();
    for (run, entries) in lists {
        through.insert(run, list_frames(entries, &mut frames));
    }
    for event in stream {
        let Some(run) = event.run_id.as_deref() else { continue };
        if event.seq > through.get(run).copied().unwrap_or(0) {
            frames.push(event.frame.as_str().to_owned());
        }
    }
    frames
}

/// Appends the frames of a run's list `entries` to `frames`, oldest first, and returns the
/// highest seq they hold. An event at or below a seq already taken is skipped (events moved out
/// of the stream after a node wrote back a compacted run that reached that far); compacted frames
/// are taken as they are (they carry their own order). An entry that does not decode is passed
/// on as it is, for the compactor to skip and count.
fn list_frames(entries: &[String], frames: &mut Vec<String>) -> u64 {
    let mut through = 0;
    for entry in entries {
        match super::wire::decode_run_entry(entry.as_bytes()) {
            Ok(RunEntry { seq, frame, compacted }) => {
                if compacted || seq > through {
                    through = through.max(seq);
                    frames.push(frame.as_str().to_owned());
                }
            }
            Err(_) => frames.push(entry.clone()),
        }
    }
    through
}

/// The compacted frames of one run's list (its entries in order: events the script moved out of
/// the stream, or frames compacted earlier).
pub fn compact(entries: &[String]) -> Vec<String> {
    let mut compactor = Compactor::new(Limits::default());
    let mut frames = Vec::with_capacity(entries.len());
    list_frames(entries, &mut frames);
    for frame in &frames {
        // A frame that is not an event frame of a run cannot be folded; it is dropped here, as
        // seeding a log drops it.
        let _ = compactor.seed(frame, 0);
    }
    compactor.snapshot(None).into_iter().map(|f| f.frame).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, event: &str, data: &str) -> String {
        format!(
            r#"{{"type":"event","seq":{seq},"id":"i{seq}","user_id":"u","thread_id":null,"run_id":"r","event":"{event}","data":{data},"ts":"t"}}"#
        )
    }

    #[test]
    fn a_list_compacts_to_the_runs_snapshot_and_compacting_again_changes_nothing() {
        let mut list = vec![frame(1, "agent_started", "{}")];
        list.extend((2..=700).map(|s| frame(s, "agent_text", &format!(r#"{{"delta":"{s} "}}"#))));
        list.push("not a frame".to_owned());
        let once = compact(&list);
        assert_eq!(once.len(), 2);
        let text: String = (2..=700).map(|s| format!("{s} ")).collect();
        assert!(once[1].contains(&format!(r#""delta":"{text}""#)), "{}", once[1]);
        assert_eq!(compact(&once), once);
        // The rest of a run appended after a compaction folds onto it.
        let mut more = once.clone();
        more.push(frame(701, "agent_text", r#"{"delta":"end"}"#));
        assert!(compact(&more)[1].contains(&format!(r#""delta":"{text}end""#)));
    }

    /// A list entry for an event moved out of the stream: its seq, a space, its record.
    fn moved(seq: u64, delta: &str) -> String {
        let tail = format!(
            r#","id":"i{seq}","user_id":"u","thread_id":null,"run_id":"r","event":"agent_text","data":{{"delta":"{delta}"}},"ts":"t"}}"#
        );
        let record = crate::engine::redis::wire::encode_record(
            1,
            &format!("i{seq}"),
            "r",
            "agent_text",
            tail.as_bytes(),
        );
        format!("{seq} {}", String::from_utf8(record).unwrap())
    }

    fn streamed(seq: u64, run: &str, delta: &str) -> WireEvent {
        WireEvent {
            seq,
            appended_ms: 1,
            id: format!("i{seq}"),
            run_id: Some(run.to_owned()),
            kind: herald_protocol::EventKind::AgentText,
            frame: frame(seq, "agent_text", &format!(r#"{{"delta":"{delta}"}}"#)).into(),
        }
    }

    #[test]
    fn a_runs_frames_are_its_list_then_its_events_still_in_the_stream_each_once() {
        // A compacted run through seq 5, then events moved out of the stream after it was
        // written back (4 and 5 again, then 6), then the stream: 5 again, 7 of a run without a
        // list (all its events are in the stream), 8, and 9 outside runs.
        let compacted = frame(5, "agent_text", r#"{"delta":"a b c "}"#);
        let list =
            vec![frame(1, "agent_started", "{}"), compacted, moved(4, "c "), moved(5, "c "), moved(6, "d ")];
        let mut outside = streamed(9, "r", "z ");
        outside.run_id = None;
        let stream = [streamed(5, "r", "c "), streamed(7, "other", "x "), streamed(8, "r", "e "), outside];
        let frames = seed_frames(&[("r".to_owned(), list)], &stream);
        let seqs: Vec<&str> = frames
            .iter()
            .map(|f| &f[f.find(r#""seq":"#).unwrap() + 6..f.find(r#","id""#).unwrap()])
            .collect();
        assert_eq!(seqs, ["1", "5", "6", "7", "8"]);
        let text = compact(&[frames[..3].to_vec(), vec![frames[4].clone()]].concat());
        assert!(text[1].contains(r#""delta":"a b c d e ""#), "{}", text[1]);
    }

    #[test]
    fn runs_are_due_every_so_many_events_and_forgotten_when_they_end() {
        let appended = Appended::default();
        let user = UserId::parse("u").unwrap();
        let due: Vec<bool> = (0..6).map(|_| appended.note(&user, "r", COMPACT_EVERY / 2, false)).collect();
        assert_eq!(due, [false, true, false, true, false, true]);
        assert!(!appended.note(&user, "r", COMPACT_EVERY, true), "an ended run is not compacted");
        assert!(appended.0.lock().is_empty());
    }
}
