//! `herald bench` correctness: a tiny run against a spawned server delivers everything, in order;
//! argument errors exit 2 with a message. No timing is asserted.

use std::process::Command;

fn herald() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.env_remove("HERALD_API_KEY").env_remove("HERALD_JWT_SECRET");
    cmd
}

#[test]
fn tiny_spawned_run_loses_nothing() {
    let out = herald()
        .args(["bench", "--spawn", "--users", "2", "--conns-per-user", "2", "--duration", "2s"])
        .args(["--batch", "5", "--publishers", "2", "--rate", "500", "--json"])
        .output()
        .expect("run herald bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\nstdout: {stdout}\nstderr: {stderr}", out.status);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["reordered"], 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let delivered = report["delivered"].as_u64().expect("delivered");
    assert!(delivered > 0, "{report}");
    for field in ["published_per_s", "delivered_per_s", "client_cpu_s", "server_cpu_s", "server_rss_bytes"] {
        assert!(report[field].is_number(), "{field} missing: {report}");
    }
    for q in ["p50", "p90", "p99", "p999", "max"] {
        assert!(report["latency_ms"][q].is_number(), "latency_ms.{q} missing: {report}");
    }
}

#[test]
fn token_stream_mode_delivers_every_token_over_both_transports() {
    let out = herald()
        .args(["bench", "--spawn", "--token-stream", "--runs", "3", "--token-rate", "20", "--duration", "1s"])
        .args(["--transport", "http,socket", "--json"])
        .output()
        .expect("run herald bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let reports: Vec<serde_json::Value> =
        serde_json::from_str(&stdout).expect("a JSON array, one per transport");
    let transports: Vec<&str> = reports.iter().map(|r| r["transport"].as_str().unwrap_or("?")).collect();
    assert_eq!(transports, ["http", "socket"]);
    for report in &reports {
        // Each run: agent_started, at least one agent_text, agent_completed.
        assert!(report["published"].as_u64().unwrap() >= 3 * 3, "{report}");
        assert_eq!(report["delivered"], report["published"], "{report}");
        for field in ["lost", "reordered", "errors"] {
            assert_eq!(report[field], 0, "{field}: {report}");
        }
        for field in ["server_cpu_us_per_token", "server_sys_us_per_token", "client_cpu_us_per_token"] {
            assert!(report[field].is_number(), "{field} missing: {report}");
        }
        assert!(
            report["server_sys_us_per_token"].as_f64() <= report["server_cpu_us_per_token"].as_f64(),
            "the kernel's part is part of the total: {report}"
        );
    }
}

#[test]
fn replay_mode_replays_every_event() {
    let out = herald()
        .args(["bench", "--spawn", "--replay", "300", "--replay-rounds", "2", "--json"])
        .output()
        .expect("run herald bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(report["events_received"], 300, "{report}");
}

#[test]
fn idle_mode_opens_every_connection() {
    let out = herald()
        .args(["bench", "--spawn", "--idle", "20", "--hold", "100ms", "--json"])
        .output()
        .expect("run herald bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(report["opened"], 20, "{report}");
}

fn usage_error(args: &[&str], needle: &str) {
    let out = herald().arg("bench").args(args).output().expect("run herald bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: expected {needle:?} in {stderr}");
}

#[test]
fn argument_errors_exit_2() {
    usage_error(&[], "--url");
    usage_error(&["--url", "http://127.0.0.1:1", "--jwt-secret", "s"], "--api-key");
    usage_error(&["--url", "http://127.0.0.1:1", "--api-key", "k"], "--jwt-secret");
    usage_error(&["--url", "ftp://x", "--api-key", "k", "--jwt-secret", "s"], "http://HOST:PORT");
    usage_error(&["--spawn", "--rate", "fast"], "not a rate");
    usage_error(&["--spawn", "--users", "0"], "--users");
    usage_error(&["--spawn", "--url", "http://127.0.0.1:1"], "cannot be used with");
    usage_error(
        &["--url", "http://127.0.0.1:1", "--api-key", "k", "--jwt-secret", "s", "--duration", "1s"],
        "unreachable",
    );
}
