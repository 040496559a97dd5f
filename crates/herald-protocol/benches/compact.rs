//! Cost of per-run compaction: folding one streamed delta, and building the snapshot of a long
//! run. `cargo bench -p herald-protocol --bench compact` (plain timing loop, no harness crate).

use herald_protocol::EventKind;
use herald_protocol::compact::{Compactor, Limits};
use std::hint::black_box;
use std::time::Instant;

fn frame(seq: u64, event: &str, data: &str) -> String {
    format!(
        r#"{{"type":"event","seq":{seq},"id":"0193a1b2-7c3d-7e4f-8a9b-{seq:012}","user_id":"user-42","thread_id":"thread-7","run_id":"run-9","event":"{event}","data":{data},"ts":"2026-12-01T12:00:00.000Z"}}"#
    )
}

fn main() {
    let deltas: Vec<String> =
        (2..=100_001u64).map(|s| frame(s, "agent_text", &format!(r#"{{"delta":"tok{s} "}}"#))).collect();
    let started = frame(1, "agent_started", "{}");
    // Calibration on this (shared, noisy) machine: one JSON pass over each frame, nothing kept.
    let t = Instant::now();
    for f in &deltas {
        black_box(serde_json::from_str::<serde::de::IgnoredAny>(f).unwrap());
    }
    println!(
        "baseline: one serde_json pass {:.0} ns/frame",
        t.elapsed().as_nanos() as f64 / deltas.len() as f64
    );
    for round in 0..3 {
        let mut c = Compactor::new(Limits::default());
        c.apply(1, "a", Some("run-9"), EventKind::AgentStarted, &started, 0);
        let t = Instant::now();
        for (i, f) in deltas.iter().enumerate() {
            c.apply(i as u64 + 2, "d", Some("run-9"), EventKind::AgentText, f, i as u64);
        }
        let fold = t.elapsed();
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..100 {
            bytes += black_box(c.snapshot(None)).iter().map(|f| f.frame.len()).sum::<usize>();
        }
        let snap = t.elapsed() / 100;
        println!(
            "round {round}: fold {:.0} ns/delta ({} deltas), snapshot of the run {:.1} µs ({} bytes), state {} bytes",
            fold.as_nanos() as f64 / deltas.len() as f64,
            deltas.len(),
            snap.as_nanos() as f64 / 1000.0,
            bytes / 100,
            c.bytes()
        );
    }
    // The 1,500-delta run of the issue.
    let mut c = Compactor::new(Limits::default());
    c.apply(1, "a", Some("run-9"), EventKind::AgentStarted, &started, 0);
    for (i, f) in deltas.iter().take(1500).enumerate() {
        c.apply(i as u64 + 2, "d", Some("run-9"), EventKind::AgentText, f, 0);
    }
    let t = Instant::now();
    for _ in 0..1000 {
        black_box(c.snapshot(None));
    }
    println!(
        "1,500-delta run: snapshot {:.1} µs, state {} bytes",
        t.elapsed().as_nanos() as f64 / 1e6,
        c.bytes()
    );
}
