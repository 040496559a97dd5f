//! Herald's own work per published event with many users, without the kernel's:
//! `cargo bench -p herald-server --bench append` (plain timing loop, no harness crate).
//!
//! The shape of `herald bench`'s many-users workload (docs/benchmarks.md, "Many users"): batches
//! of 20 `agent_text` events of ~200 bytes, round-robin over the users (so each event goes to a
//! different user), runs of 100 events, every user with two caught-up connections. Here each
//! connection is a tap whose writer takes every frame without writing it anywhere, so what is
//! timed is parsing the body, planning, encoding, appending, offering the frames to the taps and
//! encoding the receipts — and none of the `send`s, which over loopback are most of a server's
//! CPU per frame and most of its run-to-run noise. Compare builds with this; confirm with
//! `bench/compare.sh`.

use herald_protocol::{PublishBody, Receipts, UserId};
use herald_server::engine::{Engine, MemoryEngine};
use herald_server::log::{LogEntry, Retention, Taken, Tap, TapWriter};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Takes every frame whole, like a socket with room to spare.
struct Sink;

impl TapWriter for Sink {
    fn write_now(&self, entries: &[Arc<LogEntry>]) -> Taken {
        black_box(entries.iter().map(|e| e.frame.wire().len()).sum::<usize>());
        Taken { whole: entries.len(), in_part: false }
    }
}

const BATCH: usize = 20;
const RUN_LEN: u64 = 100;

/// The next batch's body: `BATCH` events for the next users in turn.
fn next_batch(users: &[String], next: &mut usize, sent: &mut [u64]) -> Vec<u8> {
    let delta = "x".repeat(168);
    let mut events = Vec::with_capacity(BATCH);
    for _ in 0..BATCH {
        let u = *next;
        *next = (*next + 1) % users.len();
        let (pos, run) = (sent[u] % RUN_LEN, sent[u] / RUN_LEN);
        sent[u] += 1;
        let event = match pos {
            0 => "agent_started",
            p if p == RUN_LEN - 1 => "agent_completed",
            _ => "agent_text",
        };
        events.push(format!(
            r#"{{"user_id":"{user}","run_id":"{user}-r{run}","event":"{event}","data":{{"t":1765000000000000,"delta":"{delta}"}}}}"#,
            user = users[u]
        ));
    }
    format!(r#"{{"events":[{}]}}"#, events.join(",")).into_bytes()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    for users in [50, 500, 2500] {
        let engine = MemoryEngine::new(Retention { max_events: 1000, ttl: Duration::from_secs(900) });
        let names: Vec<String> = (0..users).map(|u| format!("bench-0a1b2c3d-u{u}")).collect();
        // Two caught-up tabs per user; the logs must stay open for their taps.
        let mut logs = Vec::new();
        for name in &names {
            let log = runtime.block_on(engine.open_log(&UserId::parse(name).unwrap())).unwrap();
            for _ in 0..2 {
                let tap: Arc<Tap> = Tap::new(Sink);
                assert!(log.attach_tap(&tap, log.head()));
            }
            logs.push(log);
        }
        let (mut next, mut sent) = (0, vec![0u64; users]);
        let batches = 10_000;
        let mut rounds = Vec::new();
        for _ in 0..3 {
            let bodies: Vec<Vec<u8>> =
                (0..batches).map(|_| next_batch(&names, &mut next, &mut sent)).collect();
            let started = Instant::now();
            for body in &bodies {
                let events = PublishBody::parse(body, 1000).expect("a valid batch").into_events();
                let results = runtime.block_on(engine.append(events)).expect("appended");
                black_box(serde_json::to_vec(&Receipts { results }).unwrap());
            }
            rounds.push(started.elapsed().as_secs_f64() * 1e6 / (batches * BATCH) as f64);
        }
        rounds.sort_by(f64::total_cmp);
        println!(
            "{users:>5} users × 2 taps: {:.2} µs per event (best of 3 × {} events; rounds {:.2}, {:.2}, {:.2})",
            rounds[0],
            batches * BATCH,
            rounds[0],
            rounds[1],
            rounds[2]
        );
        black_box(logs);
    }
}
