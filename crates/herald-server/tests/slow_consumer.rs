//! A connection that stops reading is closed with 4008 once it falls `max_pending_bytes` behind;
//! the other tabs of the same user keep receiving; the slow tab resumes without loss.

mod common;

use common::{T, TestServer};
use herald_client::ClientError;
use herald_protocol::Recovery;
use herald_server::Settings;
use serde_json::json;
use std::time::Duration;

async fn slow_consumer_closes(metrics_url: &str) -> u64 {
    let text = reqwest::get(metrics_url).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("herald_slow_consumer_closes_total"))
        .and_then(|l| l.split_whitespace().last())
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn a_reader_that_stops_is_closed_with_4008_while_other_tabs_keep_receiving() {
    let server = TestServer::with(Settings {
        max_pending_bytes: Some(1 << 20),
        history_size: Some(10_000),
        ..Default::default()
    })
    .await;
    let (mut slow, opened) = server.open("u").await;
    let (mut fast, _) = server.open("u").await;
    let epoch = opened.epoch.clone();

    // 24 MiB of events: far more than loopback socket buffers can hide. The publisher waits for
    // the fast tab after each ~800 KiB batch, so the fast tab is never more than one batch (under
    // max_pending_bytes) behind, while the tab that stopped reading falls further and further.
    let per_event = 8 * 1024;
    let count = 3000u64;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let fast_reader = tokio::spawn(async move {
        for expected in 1..=count {
            let e = fast.next_event(T).await.expect("fast tab keeps receiving");
            assert_eq!(e.seq, expected);
            progress_tx.send_replace(expected);
        }
    });
    // The slow tab starts reading once the server has decided it is too far behind (the metric
    // moves), concurrently with the rest of the publishing: it reads what the kernel buffered, in
    // order, then the 4008 close.
    let metrics_url = format!("{}/metrics", server.url);
    let slow_reader = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while slow_consumer_closes(&metrics_url).await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "slow consumer was never closed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut received = 0u64;
        loop {
            match slow.next_frame(T).await {
                Ok(herald_protocol::ServerFrame::Event(e)) => {
                    received += 1;
                    assert_eq!(e.seq, received, "gap or duplicate before the close");
                }
                Ok(other) => panic!("unexpected frame {other:?}"),
                Err(ClientError::Closed { code, .. }) => return (code, received),
                Err(e) => panic!("expected a close frame, got {e}"),
            }
        }
    });
    let pad = "x".repeat(per_event);
    for chunk in 0..(count / 100) {
        let events: Vec<_> = (0..100)
            .map(|i| json!({"user_id": "u", "event": "custom", "data": {"name": "blob", "i": chunk * 100 + i, "pad": pad}}))
            .collect();
        let (status, body) = server.publisher.post(&json!({ "events": events })).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let batch_end = (chunk + 1) * 100;
        tokio::time::timeout(T, progress.wait_for(|seq| *seq >= batch_end)).await.unwrap().unwrap();
    }
    fast_reader.await.unwrap();
    let (code, received) = slow_reader.await.unwrap();
    assert_eq!(code, 4008);
    assert!(received < count, "the slow tab was not behind at all");

    // Resume: exactly the rest.
    let (_c, resumed) = server.resume("u", received, &epoch).await;
    assert_eq!(resumed.recovery, Recovery::Replayed);
    assert_eq!(resumed.backlog.len() as u64, count - received);
    assert_eq!(resumed.backlog.first().map(|e| e.seq), Some(received + 1));

    // Memory is the engine's retained log, bounded by history_size; nothing per connection.
    let (events, bytes) = server.memory().retained();
    assert_eq!(events, count as usize);
    assert!(bytes < (count as usize) * (per_event + 512), "retained {bytes} bytes");
}
