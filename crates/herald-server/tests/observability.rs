//! /metrics parses as Prometheus text and moves with traffic; silent runs are reported with a
//! `run_stalled` event, a metric, and without ending the run.

mod common;

use common::{T, TestServer};
use herald_server::Settings;
use serde_json::json;
use tokio::sync::Mutex;

/// The metrics recorder is global to the test process, so the tests that count (or publish
/// while another counts) take turns: each holds this for its whole run.
static METRICS: Mutex<()> = Mutex::const_new(());

async fn scrape(server: &TestServer) -> prometheus_parse::Scrape {
    let text =
        server.http().get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_parse_and_move_after_a_golden_path() {
    let _turn = METRICS.lock().await;
    let server = TestServer::start().await;
    let before = scrape(&server).await;
    let (mut conn, _) = server.open("metrics-user").await;
    server.publisher.publish_run("metrics-user", "r").await.unwrap();
    conn.events(5, T).await.unwrap();
    let (status, _) = server
        .publisher
        .post(&json!({"user_id": "metrics-user", "event": "progress", "run_id": "r"}))
        .await
        .unwrap();
    assert_eq!(status, 409);
    let after = scrape(&server).await;

    let delta = |name: &str, label| value(&after, name, label) - value(&before, name, label);
    assert_eq!(delta("herald_events_published_total", Some(("event", "agent_started"))), 1.0);
    assert_eq!(delta("herald_events_published_total", None), 5.0);
    assert_eq!(delta("herald_events_delivered_total", None), 5.0);
    assert_eq!(delta("herald_connection_attempts_total", Some(("result", "ok"))), 1.0);
    assert_eq!(delta("herald_connection_recoveries_total", Some(("recovery", "none"))), 1.0);
    assert_eq!(delta("herald_run_rejections_total", Some(("rule", "after_terminal"))), 1.0);
    assert_eq!(value(&after, "herald_connections_open", None), 1.0);
    assert_eq!(delta("herald_delivery_latency_seconds_count", None), 5.0);
    assert_eq!(value(&after, "herald_build_info", None), 1.0);
}

#[tokio::test]
async fn a_silent_run_gets_run_stalled_and_a_later_event_clears_it() {
    let _turn = METRICS.lock().await;
    let server = TestServer::with(Settings { run_stall_s: Some(1), ..Default::default() }).await;
    let (mut conn, _) = server.open("u").await;
    server.publisher.publish("u", "agent_started", Some("slow-run"), json!({})).await.unwrap();
    assert_eq!(conn.next_event(T).await.unwrap().event, "agent_started");

    // Herald itself appends run_stalled once the run has been silent for a second.
    let stalled = conn.next_event(T).await.unwrap();
    assert_eq!(stalled.event, "run_stalled");
    assert_eq!(stalled.run_id.as_deref(), Some("slow-run"));
    assert!(stalled.data["silent_s"].as_u64().unwrap() >= 1);
    assert_eq!(value(&scrape(&server).await, "herald_runs_stalled_total", None), 1.0);

    // The run is not ended: it continues and completes.
    let receipt = server.publisher.publish("u", "agent_thinking", Some("slow-run"), json!({})).await.unwrap();
    assert_eq!(receipt.seq, 3);
    assert_eq!(conn.next_event(T).await.unwrap().event, "agent_thinking");
    server.publisher.publish("u", "agent_completed", Some("slow-run"), json!({})).await.unwrap();
    assert_eq!(conn.next_event(T).await.unwrap().event, "agent_completed");

    // Publishers cannot forge it.
    let (status, body) = server
        .publisher
        .post(&json!({"user_id": "u", "event": "run_stalled", "run_id": "slow-run"}))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
}
