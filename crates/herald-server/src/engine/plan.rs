//! Batch planning, shared by every engine: which events of a batch are appended, which are
//! duplicates (and of what), and what the run states become — decided from what the engine read,
//! with no I/O, so the memory and Redis engines cannot disagree about a batch.
//!
//! A batch is split into one [`Part`] per user (a user's ids and runs never affect another's).
//! An engine reads, for each part, which of its ids are already in the log and the current states
//! of the runs it touches, then calls [`Part::plan`]; it appends the planned events and builds the
//! receipts with [`Part::receipts`]. A broken run rule anywhere refuses the whole batch:
//! [`first_error`] picks the one with the lowest batch index, whatever the order parts were
//! planned in.

use super::{AppendError, new_event_id};
use foldhash::{HashMap, HashMapExt};
use herald_protocol::{EventInput, Receipt, RunRuleError, RunState, UserId};

/// One user's share of a batch, in batch order, with every event's id (given or generated).
#[derive(Debug)]
pub struct Part<'a> {
    /// The user.
    pub user: &'a UserId,
    /// The events with their position in the whole batch.
    pub events: Vec<(usize, &'a EventInput)>,
    /// Each event's id: the publisher's, or a generated one.
    pub ids: Vec<String>,
    /// The runs the part touches, sorted and distinct.
    pub runs: Vec<&'a str>,
}

/// What one event of a part becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Appended with the next seq.
    Append,
    /// Its id is already in the log at this seq: not appended again.
    DuplicateOfLog(u64),
    /// Its id appeared earlier in the same part, at this position: same receipt.
    DuplicateInBatch(usize),
}

/// A planned part: each event's step and each run's state after the part.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// One step per event of the part.
    pub steps: Vec<Step>,
    /// The state of each run of [`Part::runs`] after the part (`None`: no state, e.g. a `custom`
    /// event of an unknown run).
    pub after: Vec<Option<RunState>>,
}

/// What the engine wrote for a part, for its receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The log's epoch.
    pub epoch: String,
    /// Connections (memory) or subscribed nodes (Redis) that will deliver the events.
    pub connections: usize,
    /// Seq of the first appended event; the others follow without gaps.
    pub first_seq: u64,
}

/// Splits a batch by user (in user-id order), generating the ids publishers left out.
pub fn split(events: &[EventInput]) -> Vec<Part<'_>> {
    // Sorted, not a map: most batches hold one event, or few users (a stable sort keeps each
    // user's events in batch order).
    let mut order: Vec<(usize, &EventInput)> = events.iter().enumerate().collect();
    order.sort_by(|a, b| a.1.user_id.cmp(&b.1.user_id));
    let mut parts: Vec<Part<'_>> = Vec::new();
    for (i, event) in order {
        match parts.last_mut() {
            Some(part) if *part.user == event.user_id => part.events.push((i, event)),
            _ => parts.push(Part {
                user: &event.user_id,
                events: vec![(i, event)],
                ids: Vec::new(),
                runs: Vec::new(),
            }),
        }
    }
    for part in &mut parts {
        part.ids = part.events.iter().map(|(_, e)| e.id.clone().unwrap_or_else(new_event_id)).collect();
        part.runs = part.events.iter().filter_map(|(_, e)| e.run_id.as_deref()).collect();
        part.runs.sort_unstable();
        part.runs.dedup();
    }
    parts
}

/// Of several parts' planning errors, the one at the lowest batch index (what a publisher is told).
pub fn first_error(errors: impl IntoIterator<Item = AppendError>) -> Option<AppendError> {
    errors.into_iter().min_by_key(|e| match e {
        AppendError::RunRule { index, .. } => index.unwrap_or(0),
        AppendError::Engine(_) => usize::MAX,
    })
}

impl Part<'_> {
    /// True when the event at `k` carries the publisher's id (only those can be duplicates, so only
    /// those need an idempotency record).
    pub fn keyed(&self, k: usize) -> bool {
        self.events[k].1.id.is_some()
    }

    /// Plans the part from what the engine read: `known[k]` is the seq of event `k`'s id when the
    /// log already has it (always `None` for generated ids), `before[r]` the state of run `r` of
    /// [`Part::runs`]. `numbered`: the batch has more than one event, so errors carry an index.
    pub fn plan(
        &self,
        known: &[Option<u64>],
        before: &[Option<RunState>],
        numbered: bool,
    ) -> Result<Planned, AppendError> {
        let mut states: HashMap<&str, Option<RunState>> =
            self.runs.iter().copied().zip(before.iter().cloned()).collect();
        let mut first_in_part: HashMap<&str, usize> = HashMap::new();
        let mut steps = Vec::with_capacity(self.events.len());
        for (k, (index, event)) in self.events.iter().enumerate() {
            if let Some(seq) = known.get(k).copied().flatten() {
                steps.push(Step::DuplicateOfLog(seq));
                continue;
            }
            if self.keyed(k) {
                if let Some(&first) = first_in_part.get(self.ids[k].as_str()) {
                    steps.push(Step::DuplicateInBatch(first));
                    continue;
                }
                first_in_part.insert(&self.ids[k], k);
            }
            if let Some(run) = event.run_id.as_deref() {
                let state = states.entry(run).or_default();
                RunState::apply(state, run, event.kind, &event.data).map_err(|source: RunRuleError| {
                    AppendError::RunRule { index: numbered.then_some(*index), source }
                })?;
            }
            steps.push(Step::Append);
        }
        let after = self.runs.iter().map(|run| states.remove(run).flatten()).collect();
        Ok(Planned { steps, after })
    }

    /// Positions of the events `planned` appends, in order.
    pub fn fresh<'p>(&self, planned: &'p Planned) -> impl Iterator<Item = usize> + 'p {
        planned.steps.iter().enumerate().filter(|(_, s)| **s == Step::Append).map(|(k, _)| k)
    }

    /// The receipts of the part, in part order: appended events get consecutive seqs from
    /// `written.first_seq`; duplicates point at the first event with their id.
    pub fn receipts(&self, planned: &Planned, written: &Written) -> Vec<Receipt> {
        let mut next = written.first_seq;
        let mut receipts: Vec<Receipt> = Vec::with_capacity(self.events.len());
        for (k, step) in planned.steps.iter().enumerate() {
            let receipt = match *step {
                Step::Append => {
                    next += 1;
                    self.receipt(k, next - 1, false, written)
                }
                Step::DuplicateOfLog(seq) => self.receipt(k, seq, true, written),
                Step::DuplicateInBatch(first) => Receipt { duplicate: true, ..receipts[first].clone() },
            };
            receipts.push(receipt);
        }
        receipts
    }

    fn receipt(&self, k: usize, seq: u64, duplicate: bool, written: &Written) -> Receipt {
        Receipt {
            id: self.ids[k].clone(),
            seq,
            epoch: written.epoch.clone(),
            connections: written.connections,
            duplicate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::EventKind;

    fn event(user: &str, kind: EventKind, run: Option<&str>, id: Option<&str>) -> EventInput {
        EventInput {
            user_id: UserId::parse(user).unwrap(),
            kind,
            run_id: run.map(str::to_owned),
            thread_id: None,
            data: Default::default(),
            id: id.map(str::to_owned),
        }
    }

    fn written() -> Written {
        Written { epoch: "e".into(), connections: 2, first_seq: 10 }
    }

    #[test]
    fn split_groups_by_user_in_user_order_and_generates_missing_ids() {
        let batch = vec![
            event("b", EventKind::AgentStarted, Some("r2"), Some("x")),
            event("a", EventKind::AgentStarted, Some("r1"), None),
            event("b", EventKind::AgentThinking, Some("r2"), None),
            event("b", EventKind::Custom, Some("r0"), None),
        ];
        let parts = split(&batch);
        assert_eq!(parts.iter().map(|p| p.user.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(parts[1].events.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 2, 3]);
        assert_eq!(parts[1].runs, ["r0", "r2"]);
        assert_eq!(parts[1].ids[0], "x");
        assert!(!parts[1].ids[1].is_empty() && parts[1].ids[1] != parts[1].ids[2]);
        assert!(parts[1].keyed(0) && !parts[1].keyed(1));
    }

    #[test]
    fn duplicates_of_the_log_and_of_the_batch_get_the_first_receipt() {
        let batch = vec![
            event("u", EventKind::AgentStarted, Some("r"), Some("a")),
            event("u", EventKind::AgentThinking, Some("r"), Some("old")),
            event("u", EventKind::AgentStarted, Some("r"), Some("a")),
            event("u", EventKind::AgentThinking, Some("r"), None),
        ];
        let parts = split(&batch);
        let planned = parts[0].plan(&[None, Some(3), None, None], &[None], true).unwrap();
        assert_eq!(
            planned.steps,
            [Step::Append, Step::DuplicateOfLog(3), Step::DuplicateInBatch(0), Step::Append]
        );
        assert_eq!(parts[0].fresh(&planned).collect::<Vec<_>>(), [0, 3]);
        let receipts = parts[0].receipts(&planned, &written());
        let seqs: Vec<(u64, bool)> = receipts.iter().map(|r| (r.seq, r.duplicate)).collect();
        assert_eq!(seqs, [(10, false), (3, true), (10, true), (11, false)]);
        assert_eq!(receipts[2].id, "a");
        assert!(receipts.iter().all(|r| r.epoch == "e" && r.connections == 2));
        assert!(planned.after[0].as_ref().is_some_and(|s| !s.is_ended()));
    }

    #[test]
    fn a_broken_rule_names_its_batch_index_and_the_lowest_wins() {
        let batch = vec![
            event("b", EventKind::AgentThinking, Some("r"), None),
            event("a", EventKind::AgentStarted, Some("r"), None),
            event("a", EventKind::AgentStarted, Some("r"), None),
        ];
        let parts = split(&batch);
        let errors: Vec<AppendError> =
            parts.iter().filter_map(|p| p.plan(&[None, None], &[None], true).err()).collect();
        assert_eq!(errors.len(), 2);
        match first_error(errors) {
            Some(AppendError::RunRule { index: Some(0), source }) => assert_eq!(source.rule(), "not_started"),
            other => panic!("expected events[0] not_started, got {other:?}"),
        }
        let single = vec![event("u", EventKind::AgentCompleted, Some("r"), None)];
        let error = split(&single)[0].plan(&[None], &[None], false).unwrap_err();
        assert!(matches!(error, AppendError::RunRule { index: None, .. }), "{error:?}");
    }

    #[test]
    fn run_states_follow_the_part_and_a_custom_event_of_an_unknown_run_creates_none() {
        let batch = vec![
            event("u", EventKind::Custom, Some("loose"), None),
            event("u", EventKind::AgentCompleted, Some("r"), None),
        ];
        let parts = split(&batch);
        let mut started = None;
        RunState::apply(&mut started, "r", EventKind::AgentStarted, &serde_json::Map::new()).unwrap();
        let planned = parts[0].plan(&[None, None], &[None, started], true).unwrap();
        assert_eq!(parts[0].runs, ["loose", "r"]);
        assert_eq!(planned.after[0], None);
        assert!(planned.after[1].as_ref().unwrap().is_ended());
    }
}
