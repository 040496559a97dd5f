//! How a check verifies what it receives: every event a check publishes carries an id that names
//! its owner (`<user>:<tag>`), and every socket verifies each frame it gets: owner, order, seq
//! continuity, no duplicates, nothing extra. An event seen by the wrong user is an *isolation
//! failure*, whatever scenario sees it.

use hdrhistogram::Histogram;
use herald_client::{ClientError, Connection};
use herald_protocol::ServerFrame;
use herald_protocol::frame::EventFrame;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A fresh random test user id, `check-<16 hex digits>`.
pub(super) fn random_user() -> String {
    format!("check-{:016x}", rand::random::<u64>())
}

/// The owner of an event id made by a check (`<user>:<tag>`), if it is one.
fn owner_of(id: &str) -> Option<&str> {
    id.starts_with("check-").then(|| id.split(':').next()).flatten()
}

/// Why a scenario failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// An event reached the wrong user.
    Isolation(String),
    /// Anything else.
    Other(String),
}

impl Failure {
    /// The same failure, saying which nodes it happened between.
    pub(super) fn on_nodes(self, from: &str, to: &str) -> Failure {
        let between = |d: String| format!("{from} -> {to}: {d}");
        match self {
            Failure::Isolation(d) => Failure::Isolation(between(d)),
            Failure::Other(d) => Failure::Other(between(d)),
        }
    }
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Other(s)
    }
}

pub(super) type Outcome = Result<String, Failure>;

/// Send and receive instants, matched by event id.
#[derive(Default)]
pub(super) struct Latency {
    pub(super) sent: HashMap<String, Instant>,
    pub(super) received: Vec<(String, Instant)>,
}

impl Latency {
    pub(super) fn percentiles(&self) -> (Option<f64>, Option<f64>) {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        for (id, at) in &self.received {
            if let Some(sent) = self.sent.get(id) {
                let us = at.saturating_duration_since(*sent).as_micros().max(1);
                hist.saturating_record(u64::try_from(us).unwrap_or(u64::MAX));
            }
        }
        if hist.is_empty() {
            return (None, None);
        }
        let ms = |q| hist.value_at_quantile(q) as f64 / 1000.0;
        (Some(ms(0.5)), Some(ms(0.99)))
    }
}

/// One event to publish: its id and body.
#[derive(Clone)]
pub(super) struct Planned {
    pub(super) id: String,
    pub(super) body: Value,
}

/// The five events of a golden run of `user`, with ids naming the owner.
pub(super) fn planned_run(user: &str, run: usize) -> Vec<Planned> {
    let run_id = format!("{user}:r{run}");
    herald_client::golden_run(user, &run_id)
        .into_iter()
        .enumerate()
        .map(|(i, mut body)| {
            let id = format!("{run_id}:{i}");
            body["id"] = json!(id);
            Planned { id, body }
        })
        .collect()
}

/// The last event a check publishes to a user: once it arrives, anything wrongly delivered
/// before it (to this socket) has been seen.
pub(super) fn sentinel(user: &str) -> Planned {
    let id = format!("{user}:end");
    let body = json!({"user_id": user, "event": "custom", "id": id, "data": {"name": "herald_check_end"}});
    Planned { id, body }
}

pub(super) fn event(user: &str, run_id: &str, id: &str, name: &str, data: Value) -> Planned {
    let body = json!({"user_id": user, "run_id": run_id, "event": name, "id": id, "data": data});
    Planned { id: id.to_owned(), body }
}

/// Verifies the events of one socket, one at a time: owner, seq continuity, expected order.
pub(super) struct Stream<'a> {
    pub(super) user: &'a str,
    pub(super) expected: &'a [String],
    pub(super) pos: usize,
    pub(super) last_seq: u64,
}

impl<'a> Stream<'a> {
    pub(super) fn new(user: &'a str, expected: &'a [String], last_seq: u64) -> Self {
        Stream { user, expected, pos: 0, last_seq }
    }

    pub(super) fn done(&self) -> bool {
        self.pos == self.expected.len()
    }

    /// Checks one event; `Ok(true)` when it was the next expected one, `Ok(false)` for an event
    /// Herald itself adds (`run_stalled`).
    pub(super) fn accept(&mut self, e: &EventFrame) -> Result<bool, Failure> {
        check_owner(self.user, e)?;
        if e.seq != self.last_seq + 1 {
            return Err(Failure::Other(if e.seq > self.last_seq {
                format!(
                    "{}: seq jumped from {} to {} at event {} ({}): {} event(s) never delivered",
                    self.user,
                    self.last_seq,
                    e.seq,
                    e.id,
                    e.event,
                    e.seq - self.last_seq - 1
                )
            } else {
                format!(
                    "{}: seq went back from {} to {} at event {} ({}): duplicate or out-of-order delivery",
                    self.user, self.last_seq, e.seq, e.id, e.event
                )
            }));
        }
        self.last_seq = e.seq;
        if e.event == "run_stalled" {
            return Ok(false);
        }
        match self.expected.get(self.pos) {
            None => Err(Failure::Other(format!(
                "{}: unexpected extra event {} ({}) after all {} expected events",
                self.user,
                e.id,
                e.event,
                self.expected.len()
            ))),
            Some(want) if *want != e.id => {
                let what = if self.expected[..self.pos].contains(&e.id) {
                    "a second delivery of"
                } else {
                    "unexpected event"
                };
                Err(Failure::Other(format!(
                    "{}: expected event {want} at position {}, got {what} {} ({})",
                    self.user, self.pos, e.id, e.event
                )))
            }
            Some(_) => {
                self.pos += 1;
                Ok(true)
            }
        }
    }
}

/// An event for another user is an isolation failure.
pub(super) fn check_owner(user: &str, e: &EventFrame) -> Result<(), Failure> {
    if e.user_id != user {
        return Err(Failure::Isolation(format!(
            "{user} received event {} ({}) of user {}",
            e.id, e.event, e.user_id
        )));
    }
    if let Some(owner) = owner_of(&e.id).filter(|o| *o != user) {
        return Err(Failure::Isolation(format!(
            "{user} received event {} ({}) published for {owner}",
            e.id, e.event
        )));
    }
    Ok(())
}

/// What a receiving socket saw.
pub(super) struct Received {
    pub(super) conn: Connection,
    pub(super) got: Vec<(String, Instant)>,
    pub(super) result: Result<(), Failure>,
}

/// Waits for a receiving socket once the publishing side finished with `outcome` (aborting the
/// receiver if publishing failed), records what it received, and hands back its connection when
/// it saw exactly what it expected.
pub(super) async fn collect<T>(
    receiver: tokio::task::JoinHandle<Received>,
    outcome: Result<T, Failure>,
    lat: &mut Latency,
) -> Result<(T, Connection), Failure> {
    let value = match outcome {
        Ok(value) => value,
        Err(e) => {
            receiver.abort();
            return Err(e);
        }
    };
    let received = receiver.await.map_err(|e| Failure::Other(format!("receiver: {e}")))?;
    lat.received.extend(received.got);
    received.result?;
    Ok((value, received.conn))
}

/// Reads `expected` (event ids, in order) live from `conn`, verifying each frame.
pub(super) async fn receive(
    mut conn: Connection,
    user: String,
    expected: Vec<String>,
    timeout: Duration,
) -> Received {
    let mut stream = Stream::new(&user, &expected, conn.last_seq);
    let mut got = Vec::with_capacity(expected.len());
    let result = loop {
        if stream.done() {
            break Ok(());
        }
        match conn.next_frame(timeout).await {
            Ok(ServerFrame::Event(e)) => {
                let at = Instant::now();
                match stream.accept(&e) {
                    Ok(true) => got.push((e.id, at)),
                    Ok(false) => {}
                    Err(f) => break Err(f),
                }
            }
            Ok(ServerFrame::Pong | ServerFrame::Ack { .. }) => {}
            Ok(other) => break Err(Failure::Other(format!("{user}: unexpected frame {other:?}"))),
            Err(ClientError::Timeout) => {
                break Err(Failure::Other(format!(
                    "{user}: no event {} within {timeout:?} ({} of {} expected events received)",
                    expected[stream.pos],
                    stream.pos,
                    expected.len()
                )));
            }
            Err(e) => {
                break Err(Failure::Other(format!(
                    "{user}: {e} ({} of {} expected events received)",
                    stream.pos,
                    expected.len()
                )));
            }
        }
    };
    Received { conn, got, result }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(user: &str, seq: u64, id: &str) -> EventFrame {
        EventFrame {
            seq,
            id: id.into(),
            user_id: user.into(),
            thread_id: None,
            run_id: None,
            event: "agent_thinking".into(),
            data: json!({}),
            ts: String::new(),
            snapshot: false,
            first_seq: None,
            truncated: false,
        }
    }

    #[test]
    fn stream_flags_gaps_leaks_duplicates_and_extras() {
        let u = "check-a";
        let expected = vec!["check-a:1".to_owned(), "check-a:2".to_owned()];
        let mut s = Stream::new(u, &expected, 0);
        assert!(s.accept(&frame(u, 1, "check-a:1")).unwrap());
        assert!(
            matches!(s.accept(&frame(u, 3, "check-a:2")), Err(Failure::Other(m)) if m.contains("jumped"))
        );
        let mut s = Stream::new(u, &expected, 0);
        assert!(matches!(s.accept(&frame("check-b", 1, "check-b:1")), Err(Failure::Isolation(_))));
        assert!(matches!(s.accept(&frame(u, 1, "check-b:1")), Err(Failure::Isolation(_))));
        assert!(s.accept(&frame(u, 1, "check-a:1")).unwrap());
        let mut dup = Stream { last_seq: 1, pos: 1, ..Stream::new(u, &expected, 0) };
        assert!(
            matches!(dup.accept(&frame(u, 2, "check-a:1")), Err(Failure::Other(m)) if m.contains("second delivery"))
        );
        assert!(s.accept(&frame(u, 2, "check-a:2")).unwrap());
        assert!(s.done());
        assert!(matches!(s.accept(&frame(u, 3, "check-a:9")), Err(Failure::Other(m)) if m.contains("extra")));
    }

    #[test]
    fn latency_is_matched_by_id() {
        let mut lat = Latency::default();
        assert_eq!(lat.percentiles(), (None, None));
        let t = Instant::now();
        lat.sent.insert("x".into(), t);
        lat.received.push(("x".into(), t + Duration::from_millis(3)));
        let (p50, p99) = lat.percentiles();
        assert!((p50.unwrap() - 3.0).abs() < 0.01 && (p99.unwrap() - 3.0).abs() < 0.01, "{p50:?} {p99:?}");
    }
}
