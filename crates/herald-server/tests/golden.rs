//! The mission-critical paths: the right user gets exactly their events, in order, on every tab,
//! including events published while they were offline.

mod common;

use common::{T, TestServer, names, seqs};
use herald_client::{GOLDEN_EVENTS, golden_run};
use herald_protocol::Recovery;
use serde_json::json;

#[tokio::test]
async fn golden_path_delivers_the_five_events_in_order_with_contiguous_seqs() {
    let server = TestServer::start().await;
    let (mut conn, opened) = server.open("alice").await;
    assert_eq!(opened.recovery, Recovery::None);
    assert_eq!(opened.seq, 0);

    for event in golden_run("alice", "run-1") {
        let (status, body) = server.publisher.post(&event).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["connections"], 1);
        assert_eq!(body["duplicate"], false);
    }
    let events = conn.events(5, T).await.unwrap();
    assert_eq!(names(&events), GOLDEN_EVENTS);
    assert_eq!(seqs(&events), vec![1, 2, 3, 4, 5]);
    for e in &events {
        assert_eq!(e.user_id, "alice");
        assert_eq!(e.run_id.as_deref(), Some("run-1"));
        assert!(e.ts.ends_with('Z') && e.ts.len() == "2026-01-01T00:00:00.000Z".len(), "{}", e.ts);
    }
    assert_eq!(events[2].data["tool_name"], "search");
}

#[tokio::test]
async fn twenty_concurrent_users_each_receive_exactly_their_own_run() {
    let server = TestServer::start().await;
    let users: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    let mut conns = Vec::new();
    for u in &users {
        conns.push(server.open(u).await.0);
    }
    let publishes = users.iter().map(|u| {
        let p = server.publisher.clone();
        let u = u.clone();
        tokio::spawn(async move {
            for event in golden_run(&u, &format!("run-of-{u}")) {
                let (status, _) = p.post(&event).await.unwrap();
                assert_eq!(status, 200);
            }
        })
    });
    futures_util::future::join_all(publishes).await.into_iter().for_each(|r| r.unwrap());

    for (u, mut conn) in users.iter().zip(conns) {
        let events = conn.events(5, T).await.unwrap();
        assert_eq!(names(&events), GOLDEN_EVENTS);
        assert!(
            events.iter().all(|e| &e.user_id == u && e.run_id.as_deref() == Some(&format!("run-of-{u}")))
        );
        // Nothing else arrives: a ping is answered before any stray event could be.
        conn.send_text(r#"{"type":"ping"}"#).await.unwrap();
        let next = conn.next_frame(T).await.unwrap();
        assert_eq!(next, herald_protocol::ServerFrame::Pong, "user {u} got a stray frame");
    }
}

#[tokio::test]
async fn three_tabs_of_one_user_receive_the_same_sequence() {
    let server = TestServer::start().await;
    let mut tabs = Vec::new();
    for _ in 0..3 {
        tabs.push(server.open("bob").await.0);
    }
    let receipts = server.publisher.publish_run("bob", "r").await.unwrap();
    assert!(receipts.iter().all(|r| r.connections == 3));
    let mut seen = Vec::new();
    for tab in &mut tabs {
        seen.push(tab.events(5, T).await.unwrap());
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
    assert_eq!(names(&seen[0]), GOLDEN_EVENTS);
}

#[tokio::test]
async fn events_published_while_offline_are_kept_and_counted_in_welcome() {
    let server = TestServer::start().await;
    let receipts = server.publisher.publish_run("carol", "r").await.unwrap();
    assert!(receipts.iter().all(|r| r.connections == 0));
    let epoch = receipts[0].epoch.clone();

    let (_conn, opened) = server.open("carol").await;
    assert_eq!(opened.seq, 5, "welcome seq counts the offline events");
    assert_eq!(opened.epoch, epoch);

    let (_conn, replay) = server.resume("carol", 0, &epoch).await;
    assert_eq!(replay.recovery, Recovery::Replayed);
    assert_eq!(names(&replay.backlog), GOLDEN_EVENTS);
}

#[tokio::test]
async fn subprotocol_auth_selects_herald_v1() {
    let server = TestServer::start().await;
    let token = server.token("dana");
    let mut conn =
        herald_client::Connection::connect(&server.url, &token, None, herald_client::AuthMode::Subprotocol)
            .await
            .expect("subprotocol auth accepted");
    let opened = conn.read_opening(T).await.unwrap();
    assert_eq!(opened.recovery, Recovery::None);
    server.publisher.publish("dana", "agent_started", Some("r"), json!({})).await.unwrap();
    assert_eq!(conn.next_event(T).await.unwrap().event, "agent_started");
}
