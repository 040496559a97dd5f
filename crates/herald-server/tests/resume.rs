//! Delivery guarantees across disconnects: replay exactly the missing events, or say `reset`;
//! never a silent gap, never a duplicate.

mod common;

use common::{T, TestServer, names, seqs};
use herald_client::{GOLDEN_EVENTS, golden_run};
use herald_protocol::Recovery;
use herald_server::Settings;
use serde_json::{Value, json};

#[tokio::test]
async fn resume_after_a_disconnect_mid_run_replays_exactly_the_missing_events() {
    let server = TestServer::start().await;
    let run = golden_run("u", "r");
    let (mut conn, opened) = server.open("u").await;
    for event in &run[..2] {
        server.publisher.post(event).await.unwrap();
    }
    let first = conn.events(2, T).await.unwrap();
    let last_seq = conn.last_seq;
    conn.abort();
    for event in &run[2..] {
        server.publisher.post(event).await.unwrap();
    }
    let (_conn, resumed) = server.resume("u", last_seq, &opened.epoch).await;
    assert_eq!(resumed.recovery, Recovery::Replayed);
    assert_eq!(seqs(&resumed.backlog), vec![3, 4, 5]);
    let all: Vec<_> = first.into_iter().chain(resumed.backlog).collect();
    assert_eq!(names(&all), GOLDEN_EVENTS);
}

#[tokio::test]
async fn resume_races_a_full_speed_publisher_without_gaps_or_duplicates() {
    let server = TestServer::with(Settings { history_size: Some(100_000), ..Default::default() }).await;
    let publisher = server.publisher.clone();
    let total = 3000u64;
    let publishing = tokio::spawn(async move {
        for i in 0..total {
            let body = json!({"user_id": "u", "event": "custom", "data": {"name": "tick", "i": i}});
            let (status, _) = publisher.post(&body).await.unwrap();
            assert_eq!(status, 200);
        }
    });
    let (mut conn, opened) = server.open("u").await;
    let epoch = opened.epoch.clone();
    let mut expected = 1 + opened.seq;
    for e in &opened.backlog {
        assert_eq!(e.seq, expected);
        expected += 1;
    }
    let mut resumes = 0;
    while expected <= total {
        // Read a few events live, then drop the socket and resume from the last one.
        for _ in 0..7 {
            if expected > total {
                break;
            }
            let e = conn.next_event(T).await.unwrap();
            assert_eq!(e.seq, expected, "live event out of order or duplicated");
            expected += 1;
        }
        let cursor = expected - 1;
        conn.abort();
        let (next, resumed) = server.resume("u", cursor, &epoch).await;
        assert_eq!(resumed.recovery, Recovery::Replayed);
        for e in &resumed.backlog {
            assert_eq!(e.seq, expected, "replayed event out of order or duplicated");
            expected += 1;
        }
        conn = next;
        resumes += 1;
    }
    publishing.await.unwrap();
    assert_eq!(expected, total + 1);
    assert!(resumes >= 50, "only {resumes} resumes happened");
}

#[tokio::test]
async fn stale_epoch_resets_then_sends_the_active_run() {
    let server = TestServer::start().await;
    let run = golden_run("u", "live");
    server.publisher.publish_run("u", "done").await.unwrap();
    for event in &run[..3] {
        server.publisher.post(event).await.unwrap();
    }
    let (_c, opened) = server.resume("u", 2, "some-old-epoch").await;
    assert_eq!(opened.recovery, Recovery::Reset);
    assert_eq!(opened.seq, 8);
    assert_eq!(names(&opened.backlog), &GOLDEN_EVENTS[..3]);
    assert!(opened.backlog.iter().all(|e| e.run_id.as_deref() == Some("live")));
}

#[tokio::test]
async fn trimmed_cursor_resets() {
    let server = TestServer::with(Settings { history_size: Some(3), ..Default::default() }).await;
    let receipts = server.publisher.publish_run("u", "r").await.unwrap();
    let epoch = &receipts[0].epoch;
    // Retained: 3, 4, 5. Cursor 2 can be served, cursor 1 cannot.
    assert_eq!(server.resume("u", 2, epoch).await.1.recovery, Recovery::Replayed);
    let (_c, opened) = server.resume("u", 1, epoch).await;
    assert_eq!(opened.recovery, Recovery::Reset);
    // The run is complete, so the snapshot is empty.
    assert!(opened.backlog.is_empty());
}

#[tokio::test]
async fn cursor_from_the_future_resets() {
    let server = TestServer::start().await;
    let receipts = server.publisher.publish_run("u", "r").await.unwrap();
    let (_c, opened) = server.resume("u", 99, &receipts[0].epoch).await;
    assert_eq!(opened.recovery, Recovery::Reset);
}

#[tokio::test]
async fn second_tab_opened_mid_run_gets_the_earlier_events_then_live_ones() {
    let server = TestServer::start().await;
    let run = golden_run("u", "r");
    let (mut first_tab, _) = server.open("u").await;
    for event in &run[..3] {
        server.publisher.post(event).await.unwrap();
    }
    let (mut second_tab, opened) = server.open("u").await;
    assert_eq!(opened.recovery, Recovery::None);
    assert_eq!(names(&opened.backlog), &GOLDEN_EVENTS[..3]);
    for event in &run[3..] {
        server.publisher.post(event).await.unwrap();
    }
    let live = second_tab.events(2, T).await.unwrap();
    assert_eq!(seqs(&live), vec![4, 5]);
    assert_eq!(seqs(&first_tab.events(5, T).await.unwrap()), vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn duplicate_publish_is_delivered_once_and_marked_duplicate() {
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    let event = json!({"user_id": "u", "event": "agent_started", "run_id": "r", "id": "evt-1"});
    let (_, first) = server.publisher.post(&event).await.unwrap();
    let (status, second) = server.publisher.post(&event).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["seq"], second["seq"]);
    assert_eq!(first["id"], "evt-1");

    // In one batch, and across a batch and the log.
    let thinking = json!({"user_id": "u", "event": "agent_thinking", "run_id": "r", "id": "evt-2"});
    let (status, batch) =
        server.publisher.post(&json!({"events": [thinking, thinking, event]})).await.unwrap();
    assert_eq!(status, 200, "{batch}");
    let results = batch["results"].as_array().unwrap();
    let flags: Vec<&Value> = results.iter().map(|r| &r["duplicate"]).collect();
    assert_eq!(flags, vec![&json!(false), &json!(true), &json!(true)]);
    assert_eq!(results[0]["seq"], results[1]["seq"]);

    assert_eq!(seqs(&conn.events(2, T).await.unwrap()), vec![1, 2]);
    conn.send_text(r#"{"type":"ping"}"#).await.unwrap();
    assert_eq!(
        conn.next_frame(T).await.unwrap(),
        herald_protocol::ServerFrame::Pong,
        "a duplicate was delivered"
    );
}

#[tokio::test]
async fn history_api_reads_retained_events_with_cursor_semantics() {
    let server = TestServer::with(Settings { history_size: Some(4), ..Default::default() }).await;
    server.publisher.publish_run("u", "r").await.unwrap();
    let get = |query: &'static str| {
        let url = format!("{}/v1/users/u/events{query}", server.url);
        let http = server.http();
        async move {
            let r = http.get(url).bearer_auth(common::API_KEY).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = get("?after=2&limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(body["seq"], 5);
    assert_eq!(body["reset"], false);
    let got: Vec<u64> =
        body["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, vec![3, 4]);
    assert_eq!(body["events"][0]["event"], "tool_executing");

    let (_, body) = get("?after=0").await;
    assert_eq!(body["reset"], true, "seq 1 was trimmed");
    assert_eq!(body["events"][0]["seq"], 2);

    for bad in ["?after=-1", "?after=x", "?limit=0", "?limit=5000"] {
        let (status, body) = get(bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["code"], "invalid_request");
    }
    let r = server.http().get(format!("{}/v1/users/u/events", server.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn malformed_cursor_is_400() {
    let server = TestServer::start().await;
    for query in ["?after=abc&epoch=e", "?epoch=e"] {
        let r = server
            .http()
            .get(format!("{}/ws{query}", server.url))
            .bearer_auth(server.token("u"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_cursor");
    }
}

#[tokio::test]
async fn idempotency_keys_live_as_long_as_their_events() {
    let server = TestServer::with(Settings { history_size: Some(2), ..Default::default() }).await;
    common::idempotency_follows_retention(&server).await;
}
