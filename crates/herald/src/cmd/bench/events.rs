//! The events the bench publishes: runs of `agent_text` events with a send timestamp in `data`,
//! round-robin over a publisher's users, following the run rules (started … completed).

use std::fmt::Write as _;

/// Events per run: `agent_started`, `RUN_LEN - 2` × `agent_text`, `agent_completed`.
pub(super) const RUN_LEN: u64 = 100;

/// `len` random hex digits.
pub(super) fn random_hex(len: usize) -> String {
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        let _ = write!(s, "{:x}", rand::random::<u8>() & 0xf);
    }
    s
}

/// Builds the JSON of one event: `data` is `{"t":<µs>,"delta":"xxx…"}`, about `payload` bytes.
pub(super) fn push_event(out: &mut String, user: &str, run: &str, event: &str, t: u64, payload: usize) {
    let _ =
        write!(out, r#"{{"user_id":"{user}","run_id":"{run}","event":"{event}","data":{{"t":{t},"delta":""#);
    let pad = payload.saturating_sub(32);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}}");
}

/// One publisher's users and where each is in its current run.
pub(super) struct PublisherState {
    pub(super) users: Vec<(usize, String)>,
    /// Events published in the current run, per user; the run index, per user.
    pub(super) position: Vec<(u64, u64)>,
    pub(super) next: usize,
}

impl PublisherState {
    /// Appends `{"events":[…]}` with the next `n` events to `out`; `users` gets each event's
    /// user index.
    pub(super) fn push_batch(
        &mut self,
        out: &mut String,
        tag: &str,
        t: u64,
        n: usize,
        payload: usize,
        users: &mut Vec<usize>,
    ) {
        out.push_str(r#"{"events":["#);
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            users.push(self.next_event(out, tag, t, payload));
        }
        out.push_str("]}");
    }

    /// Appends the next event of the next user (round-robin) to `out`; returns the user index.
    pub(super) fn next_event(&mut self, out: &mut String, tag: &str, t: u64, payload: usize) -> usize {
        let i = self.next;
        self.next = (self.next + 1) % self.users.len();
        let (user_index, user) = &self.users[i];
        let (pos, run) = &mut self.position[i];
        let event = match *pos {
            0 => "agent_started",
            p if p == RUN_LEN - 1 => "agent_completed",
            _ => "agent_text",
        };
        let run_id = format!("{user}-{tag}r{run}");
        push_event(out, user, &run_id, event, t, payload);
        *pos += 1;
        if *pos == RUN_LEN {
            *pos = 0;
            *run += 1;
        }
        *user_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_payload_size() {
        let mut s = String::new();
        push_event(&mut s, "u", "r", "agent_text", 123_456_789, 200);
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        let data = serde_json::to_string(&v["data"]).expect("json");
        assert!((190..=210).contains(&data.len()), "{}", data.len());
    }

    #[test]
    fn runs_follow_the_state_machine() {
        let mut p = PublisherState { users: vec![(0, "a".into())], position: vec![(0, 0)], next: 0 };
        let mut names = Vec::new();
        for _ in 0..(RUN_LEN + 1) {
            let mut s = String::new();
            p.next_event(&mut s, "x", 0, 10);
            let v: serde_json::Value = serde_json::from_str(&s).expect("json");
            names.push((v["event"].as_str().unwrap().to_owned(), v["run_id"].as_str().unwrap().to_owned()));
        }
        assert_eq!(names[0], ("agent_started".into(), "a-xr0".into()));
        assert_eq!(names[RUN_LEN as usize - 1].0, "agent_completed");
        assert_eq!(names[RUN_LEN as usize], ("agent_started".into(), "a-xr1".into()));
    }
}
