//! Time to parse and validate a `POST /v1/events` body (docs/benchmarks.md, "Publish parsing"):
//! `cargo run --release -p herald-protocol --example parse_speed`.

use herald_protocol::PublishBody;
use std::time::Instant;

fn main() {
    // The compare workload's shape: batches of 20 events, ~200 bytes of data each.
    let payload = "x".repeat(160);
    let event = |i: usize| {
        format!(
            r#"{{"user_id":"user-{i}","event":"agent_text","run_id":"run-{i}","data":{{"delta":"{payload}","t":1733000000123,"n":{i}}}}}"#
        )
    };
    let batch = format!(r#"{{"events":[{}]}}"#, (0..20).map(event).collect::<Vec<_>>().join(","));
    let single = event(7);
    for (name, body) in [("batch of 20", batch.as_bytes()), ("single event", single.as_bytes())] {
        let rounds = 200_000 / if name == "single event" { 1 } else { 20 };
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(PublishBody::parse(std::hint::black_box(body), 1000).unwrap());
            }
            best = best.min(start.elapsed().as_secs_f64() / rounds as f64);
        }
        println!("{name}: {:.2} µs per body (best of 5 × {rounds})", best * 1e6);
    }
}
