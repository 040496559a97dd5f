//! The Redis engine: several nodes share one Redis; every guarantee of the memory engine holds
//! across nodes. Uses the real Redis (HERALD_TEST_REDIS_URL, default 127.0.0.1:6379/0), each test
//! under its own key prefix; the restart test runs a private redis-server on a free port.

mod common;

use common::servers::{PrivateRedis, Proxy, free_port};
use common::{T, TestServer, names, seqs, unique_prefix};
use herald_client::{ClientError, GOLDEN_EVENTS, golden_run};
use herald_protocol::Recovery;
use herald_server::Settings;
use serde_json::json;
use std::time::Duration;

async fn two_nodes(name: &str) -> (TestServer, TestServer) {
    two_nodes_at(&unique_prefix(name)).await
}

/// Two nodes sharing the key prefix `prefix`, for tests that also look at the keys.
async fn two_nodes_at(prefix: &str) -> (TestServer, TestServer) {
    (
        TestServer::redis(prefix, Settings::default()).await,
        TestServer::redis(prefix, Settings::default()).await,
    )
}

#[tokio::test]
async fn a_user_on_node_a_receives_what_a_backend_publishes_to_node_b() {
    let (a, b) = two_nodes("cross").await;
    let (mut on_a, opened) = a.open("u").await;
    assert_eq!(opened.recovery, Recovery::None);
    let receipts = b.publisher.publish_run("u", "r").await.unwrap();
    assert_eq!(receipts.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert!(receipts[0].connections >= 1, "node A holds a connection of u");
    let events = on_a.events(5, T).await.unwrap();
    assert_eq!(names(&events), GOLDEN_EVENTS);
    assert_eq!(seqs(&events), vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_user_connected_to_both_nodes_sees_the_same_sequence() {
    let (a, b) = two_nodes("both").await;
    let (mut on_a, _) = a.open("u").await;
    let (mut on_b, _) = b.open("u").await;
    for (i, event) in golden_run("u", "r").iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        assert_eq!(node.publisher.post(event).await.unwrap().0, 200);
    }
    let seen_a = on_a.events(5, T).await.unwrap();
    let seen_b = on_b.events(5, T).await.unwrap();
    assert_eq!(seen_a, seen_b);
    assert_eq!(names(&seen_a), GOLDEN_EVENTS);
}

#[tokio::test]
async fn disconnect_from_a_and_resume_on_b_replays_exactly_the_missing_events() {
    let (a, b) = two_nodes("resume").await;
    let run = golden_run("u", "r");
    let (mut on_a, opened) = a.open("u").await;
    for event in &run[..2] {
        a.publisher.post(event).await.unwrap();
    }
    on_a.events(2, T).await.unwrap();
    let cursor = on_a.last_seq;
    on_a.abort();
    for event in &run[2..] {
        b.publisher.post(event).await.unwrap();
    }
    let (_on_b, resumed) = b.resume("u", cursor, &opened.epoch).await;
    assert_eq!(resumed.recovery, Recovery::Replayed);
    assert_eq!(seqs(&resumed.backlog), vec![3, 4, 5]);
    assert_eq!(names(&resumed.backlog), &GOLDEN_EVENTS[2..]);
}

#[tokio::test]
async fn idempotency_and_run_rules_hold_across_nodes() {
    let (a, b) = two_nodes("rules").await;
    let started = json!({"user_id": "u", "event": "agent_started", "run_id": "r", "id": "once"});
    let (_, first) = a.publisher.post(&started).await.unwrap();
    let (status, second) = b.publisher.post(&started).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["seq"], first["seq"]);

    let done = json!({"user_id": "u", "event": "agent_completed", "run_id": "r"});
    assert_eq!(a.publisher.post(&done).await.unwrap().0, 200);
    let late = json!({"user_id": "u", "event": "agent_thinking", "run_id": "r"});
    let (status, body) = b.publisher.post(&late).await.unwrap();
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "run_state");
    assert!(body["error"]["message"].as_str().unwrap().contains("already ended"), "{body}");

    // A batch with a broken rule appends nothing, on any node.
    let mut batch = golden_run("u", "r2");
    batch.swap(2, 3);
    let (status, _) = b.publisher.post(&json!({"events": batch})).await.unwrap();
    assert_eq!(status, 409);
    assert_eq!(a.history("u").await["seq"], 2);
}

/// Each node remembers the run states it stored, so its appends skip a read; those memories go
/// stale when another node moves a run on, and must never decide anything.
#[tokio::test]
async fn run_states_changed_on_another_node_are_followed_not_remembered() {
    let (a, b) = two_nodes("remembered").await;
    let post = |node: &TestServer, event: serde_json::Value| {
        let publisher = node.publisher.clone();
        async move { publisher.post(&event).await.unwrap() }
    };
    let event = |kind: &str, extra: serde_json::Value| {
        let mut e = json!({"user_id": "u", "run_id": "r", "event": kind, "data": {}});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        e
    };
    assert_eq!(post(&a, event("agent_started", json!({}))).await.0, 200);
    assert_eq!(post(&a, event("agent_thinking", json!({"id": "k"}))).await.0, 200);
    // B opens a tool call; A (which remembers the run without it) closes it.
    let tool = json!({"data": {"tool_name": "t", "tool_call_id": "c1"}});
    assert_eq!(post(&b, event("tool_executing", tool.clone())).await.0, 200);
    let (status, body) = post(&a, event("tool_completed", tool.clone())).await;
    assert_eq!(status, 200, "{body}");
    // B remembers the call open; closing it again is refused.
    let (status, body) = post(&b, event("tool_completed", tool)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_state")), "{body}");
    // A publisher id A stored is a duplicate on B, though B remembers the run and reads nothing.
    let (status, body) = post(&b, event("agent_thinking", json!({"id": "k"}))).await;
    assert_eq!(
        (status, body["duplicate"].as_bool(), body["seq"].as_u64()),
        (200, Some(true), Some(2)),
        "{body}"
    );
    // A ends the run; B, which remembers it open, refuses what comes after — also after B
    // appended an event outside runs meanwhile (whose receipt carries the newer version of the
    // user's run states: it must not vouch for what B remembers of run r).
    assert_eq!(post(&a, event("agent_completed", json!({}))).await.0, 200);
    let loose = json!({"user_id": "u", "event": "custom", "data": {"name": "tick"}});
    assert_eq!(post(&b, loose).await.0, 200);
    let (status, body) = post(&b, event("agent_text", json!({"data": {"delta": "late"}}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_state")), "{body}");
    let (_, opened) = a.open("u").await;
    assert_eq!(seqs(&opened.backlog), Vec::<u64>::new(), "no cursor: the ended run is not replayed");
    let history = a.history("u").await;
    let kinds: Vec<&str> =
        history["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed", "custom"]
    );
}

#[tokio::test]
async fn tickets_work_across_nodes() {
    let (a, b) = two_nodes("tickets").await;
    let response = a
        .http()
        .post(format!("{}/v1/tickets", a.url))
        .bearer_auth(common::API_KEY)
        .json(&json!({"user_id": "t"}))
        .send()
        .await
        .unwrap();
    let ticket = response.json::<serde_json::Value>().await.unwrap()["ticket"].as_str().unwrap().to_owned();
    let url = format!("{}?ticket={ticket}", herald_client::ws_url(&b.url));
    assert!(tokio_tungstenite::connect_async(url.clone()).await.is_ok(), "ticket from A accepted on B");
    assert!(tokio_tungstenite::connect_async(url).await.is_err(), "and only once");
}

async fn wait_ready(node: &TestServer, want: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = node.http().get(format!("{}/health/ready", node.url)).send().await.unwrap().status();
        if status.as_u16() == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "/health/ready never became {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_restart_without_persistence_gives_503_while_down_then_reset() {
    let redis = PrivateRedis::start(&[]);
    let port = redis.port;
    // SAFETY of the env var: this test binary runs one test per process under nextest.
    let url = format!("redis://127.0.0.1:{port}/0");
    let node = {
        let prefix = unique_prefix("restart");
        let config = Settings {
            engine: Some("redis".into()),
            redis_url: Some(url.clone()),
            redis_prefix: Some(prefix),
            ..Settings::default()
        };
        TestServer::redis_at(config).await
    };
    let (mut conn, opened) = node.open("u").await;
    let receipts = node.publisher.publish_run("u", "before").await.unwrap();
    assert_eq!(seqs(&conn.events(5, T).await.unwrap()), vec![1, 2, 3, 4, 5]);
    assert_eq!(receipts[4].epoch, opened.epoch);

    let port = redis.stop();
    wait_ready(&node, 503).await;
    let (status, body) = node.publisher.post(&golden_run("u", "during")[0]).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "not_ready");

    let _redis = PrivateRedis::start_on(port, &[]);
    wait_ready(&node, 200).await;
    // The log is gone: the next event starts a new epoch, the open socket is told to reconnect,
    // and resuming with the old cursor answers reset.
    let receipt = node.publisher.publish("u", "agent_started", Some("after"), json!({})).await.unwrap();
    assert_ne!(receipt.epoch, opened.epoch);
    assert_eq!(receipt.seq, 1);
    match conn.next_frame(T).await {
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, 1012),
        other => panic!("expected close 1012 after the log was lost, got {other:?}"),
    }
    let (_c, resumed) = node.resume("u", 5, &opened.epoch).await;
    assert_eq!(resumed.recovery, Recovery::Reset);
    assert_eq!(resumed.seq, 1);
    assert_eq!(names(&resumed.backlog), vec!["agent_started"], "the active run is sent after reset");
}

#[tokio::test]
async fn a_batch_spanning_users_with_one_broken_rule_appends_nothing() {
    let (a, b) = two_nodes("multi").await;
    let mut events = golden_run("first", "r1");
    let mut broken = golden_run("second", "r2");
    broken.swap(2, 3); // tool_completed before tool_executing
    events.extend(broken);
    let (status, body) = a.publisher.post(&json!({ "events": events })).await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("events[7]"), "{body}");
    for user in ["first", "second"] {
        let url = format!("{}/v1/users/{user}/events", a.url);
        let history: serde_json::Value =
            a.http().get(url).bearer_auth(common::API_KEY).send().await.unwrap().json().await.unwrap();
        assert_eq!(history["seq"], 0, "{user} got events from a refused batch");
    }
    // The same batch, fixed, goes through for both users in one request, through either node
    // (one script for the batch on A, one per user on B).
    for (node, runs, base) in [(&a, ["r1", "r2"], 0), (&b, ["r3", "r4"], 5)] {
        let mut events = golden_run("first", runs[0]);
        events.extend(golden_run("second", runs[1]));
        let (status, body) = node.publisher.post(&json!({ "events": events })).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let seqs: Vec<u64> =
            body["results"].as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 1, 2, 3, 4, 5].map(|s| s + base));
    }
}

#[tokio::test]
async fn idempotency_keys_live_as_long_as_their_events() {
    let prefix = unique_prefix("ids");
    let node = TestServer::redis(&prefix, Settings { history_size: Some(2), ..Settings::default() }).await;
    common::idempotency_follows_retention(&node).await;
}

/// A node's remembered run states carry the epoch of the keys they were stored in: once a
/// user's keys are gone (expired) and created again, the same number of run-state changes does
/// not make the old states current.
#[tokio::test]
async fn remembered_run_states_do_not_survive_the_users_keys() {
    let prefix = unique_prefix("revived");
    let (a, b) = two_nodes_at(&prefix).await;
    let event = |run: &str, kind: &str| json!({"user_id": "u", "run_id": run, "event": kind, "data": {}});
    assert_eq!(a.publisher.post(&event("r", "agent_started")).await.unwrap().0, 200);
    // The keys expire (as after a TTL of silence); B starts another run: one change, again.
    let mut con = common::redis_connection().await;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}:{{u}}:*")).query_async(&mut con).await.unwrap();
    let () = redis::cmd("DEL").arg(&keys).query_async(&mut con).await.unwrap();
    assert_eq!(b.publisher.post(&event("s", "agent_started")).await.unwrap().0, 200);
    // A remembers run r started; Redis forgot it.
    let (status, body) = a.publisher.post(&event("r", "agent_thinking")).await.unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_state")), "{body}");
}

/// Events older than the TTL leave Redis too, not only the answers: the stream is trimmed by age
/// (from its oldest entry) when an append finds the keys' refresh due.
#[tokio::test]
async fn events_older_than_the_ttl_leave_the_stream() {
    let prefix = unique_prefix("aged");
    let node = TestServer::redis(&prefix, Settings { history_ttl_s: Some(1), ..Settings::default() }).await;
    let event = |i: usize| json!({"user_id": "u", "event": "custom", "data": {"name": "tick", "i": i}});
    for i in 0..3 {
        assert_eq!(node.publisher.post(&event(i)).await.unwrap().0, 200);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(node.publisher.post(&event(3)).await.unwrap().0, 200);
    let mut con = common::redis_connection().await;
    let left: usize =
        redis::cmd("XLEN").arg(format!("{prefix}:{{u}}:log")).query_async(&mut con).await.unwrap();
    assert_eq!(left, 1, "the three events older than the TTL are gone");
}

/// Log lines captured by a test's tracing subscriber.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn events_outside_runs_leave_the_run_index_alone_without_warnings() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    // The current-thread test runtime runs the engine's futures on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    let retention = herald_server::log::Retention { max_events: 10, ttl: Duration::from_secs(60) };
    let engine = herald_server::engine::RedisEngine::connect(
        &common::redis_url(),
        &unique_prefix("outside"),
        retention,
        false,
    )
    .await
    .unwrap();
    let post = |body: serde_json::Value| {
        let engine = engine.clone();
        async move {
            let body = serde_json::to_vec(&body).unwrap();
            let events = herald_protocol::PublishBody::parse(&body, 10).unwrap().into_events();
            herald_server::engine::Engine::append(&*engine, events).await.unwrap()
        }
    };
    post(json!({"user_id": "u", "event": "custom", "data": {"name": "outside"}})).await;
    post(json!({"user_id": "u", "event": "custom", "run_id": "unknown", "data": {"name": "n"}})).await;
    post(json!({"user_id": "u", "event": "agent_started", "run_id": "r"})).await;
    let scan = herald_server::engine::Engine::scan_runs(&*engine, Duration::ZERO).await.unwrap();
    assert_eq!(scan.active, 1, "the started run is indexed");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.is_empty(), "warnings logged: {text}");
}

/// Builds before the tail-only record stored each event's whole frame in the stream; a node of
/// this build serves those events as they were (docs/deploy.md, upgrading).
#[tokio::test]
async fn events_stored_whole_by_earlier_builds_are_served_unchanged() {
    let prefix = unique_prefix("whole-frames");
    let writer = TestServer::redis(&prefix, Settings::default()).await;
    let event = json!({"user_id": "u", "event": "custom", "id": "old-1", "data": {"name": "n", "v": 1}});
    let (status, receipt) = writer.publisher.post(&event).await.unwrap();
    assert_eq!(status, 200, "{receipt}");
    let before = writer.history("u").await;
    drop(writer);

    // Rewrite the entry the way earlier builds stored it: the frame field holds the whole frame.
    let mut con = common::redis_connection().await;
    let log = format!("{prefix}:{{u}}:log");
    type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>; // XRANGE: (id, [(field, value)])
    let entries: Entries =
        redis::cmd("XRANGE").arg(&log).arg("-").arg("+").query_async(&mut con).await.unwrap();
    let [(id, fields)] = &entries[..] else { panic!("one entry: {entries:?}") };
    assert_eq!(id, "1-0");
    let mut rest = &fields[0].1[..];
    let mut take = || {
        let colon = rest.iter().position(|&b| b == b':').unwrap();
        let len: usize = std::str::from_utf8(&rest[..colon]).unwrap().parse().unwrap();
        let field = rest[colon + 1..colon + 1 + len].to_vec();
        rest = &rest[colon + 1 + len..];
        field
    };
    let (ms, id, run, kind, tail) = (take(), take(), take(), take(), take());
    let mut whole = br#"{"type":"event","seq":1"#.to_vec();
    whole.extend(tail);
    let mut old = Vec::new();
    for field in [ms, id, run, kind, whole] {
        old.extend(format!("{}:", field.len()).into_bytes());
        old.extend(field);
    }
    let _: () = redis::pipe()
        .del(&log)
        .cmd("XADD")
        .arg(&log)
        .arg("1-0")
        .arg("e")
        .arg(old)
        .query_async(&mut con)
        .await
        .unwrap();

    // A fresh node serves it as it was, over HTTP and over a socket, and appends after it.
    let reader = TestServer::redis(&prefix, Settings::default()).await;
    assert_eq!(reader.history("u").await, before);
    let epoch = receipt["epoch"].as_str().unwrap();
    let (_, resumed) = reader.resume("u", 0, epoch).await;
    assert_eq!(seqs(&resumed.backlog), vec![1]);
    assert_eq!(serde_json::to_value(&resumed.backlog[0]).unwrap()["id"], "old-1");
    let (_, next) = reader
        .publisher
        .post(&json!({"user_id": "u", "event": "custom", "data": {"name": "n"}}))
        .await
        .unwrap();
    assert_eq!(next["seq"], 2);
}

#[tokio::test]
async fn a_node_cut_off_from_redis_while_another_publishes_catches_up_without_a_reset() {
    // Node A reaches Redis through a proxy that is cut for a while; node B keeps publishing. A's
    // client must get every event once, in order, on the same socket: what A missed on pub/sub
    // is read from the stream when Redis is back.
    let redis_port: u16 = common::redis_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("HERALD_TEST_REDIS_URL has a port");
    let proxy = Proxy::start(redis_port).await;
    let prefix = unique_prefix("cut");
    let a = TestServer::redis_at(Settings {
        engine: Some("redis".into()),
        redis_url: Some(format!("redis://127.0.0.1:{}/0", proxy.port)),
        redis_prefix: Some(prefix.clone()),
        ..Settings::default()
    })
    .await;
    let b = TestServer::redis(&prefix, Settings::default()).await;
    let (mut on_a, opened) = a.open("u").await;
    let post = |i: usize| json!({"user_id": "u", "event": "custom", "id": format!("e{i}"), "data": {"name": "n", "i": i}});
    for i in 0..5 {
        assert_eq!(b.publisher.post(&post(i)).await.unwrap().0, 200);
    }
    assert_eq!(seqs(&on_a.events(5, T).await.unwrap()), [1, 2, 3, 4, 5]);

    proxy.switch(free_port()); // nothing listens there: A's connections drop, reconnects fail
    wait_ready(&a, 503).await;
    for i in 5..15 {
        assert_eq!(b.publisher.post(&post(i)).await.unwrap().0, 200, "B still reaches Redis");
    }
    proxy.switch(redis_port);
    wait_ready(&a, 200).await;
    for i in 15..20 {
        assert_eq!(b.publisher.post(&post(i)).await.unwrap().0, 200);
    }
    let rest = on_a.events(15, T).await.unwrap();
    assert_eq!(seqs(&rest), (6..=20).collect::<Vec<_>>(), "missed ones read back, then live ones");
    let (_c, resumed) = a.resume("u", 20, &opened.epoch).await;
    assert_eq!(resumed.recovery, Recovery::Replayed, "the log kept its epoch: nothing was reset");
}

#[tokio::test]
async fn a_node_over_its_memory_cap_drops_its_copy_and_a_resume_reads_it_back() {
    // A node keeps a copy of the logs of the users connected to it; 100 events of u are ~30 KB.
    let capped = Settings { max_retained_bytes: Some(20_000), ..Settings::default() };
    let node = TestServer::redis(&unique_prefix("localcap"), capped).await;
    let (mut live, opened) = node.open("u").await;
    let events: Vec<_> = (0..100)
        .map(|i| json!({"user_id": "u", "event": "custom", "data": {"name": "n", "i": i, "pad": "x".repeat(100)}}))
        .collect();
    let (status, body) = node.publisher.post(&json!({ "events": events })).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(live.events(100, T).await.unwrap().last().unwrap().seq, 100);

    node.engine().sweep();
    let metrics =
        node.http().get(format!("{}/metrics", node.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "herald_logs_evicted_total 1"), "the copy was dropped: {metrics}");

    // Redis still has the events: a tab resuming on this node replays them, not a reset.
    let (_tab, resumed) = node.resume("u", 10, &opened.epoch).await;
    assert_eq!(resumed.recovery, Recovery::Replayed);
    assert_eq!(seqs(&resumed.backlog), (11..=100).collect::<Vec<u64>>());
    // And the caught-up socket noticed nothing: the next event arrives live, once.
    node.publisher.publish("u", "custom", None, json!({"name": "n"})).await.unwrap();
    assert_eq!(seqs(&live.events(1, T).await.unwrap()), vec![101]);
}

#[tokio::test]
async fn a_node_over_its_memory_cap_sheds_its_copy_of_a_run_and_a_new_tab_still_draws_it_whole() {
    // One long answer (~100 KB) on a node capped at 20 KB: dropping the copy's events is not
    // enough, so its compacted run goes too; Redis still holds the run whole.
    let capped = Settings { max_retained_bytes: Some(20_000), ..Settings::default() };
    let node = TestServer::redis(&unique_prefix("localshed"), capped).await;
    let (mut live, _) = node.open("u").await;
    node.publisher.publish("u", "agent_started", Some("r"), json!({})).await.unwrap();
    let delta = "w".repeat(1000);
    let events: Vec<_> = (0..100)
        .map(|_| json!({"user_id": "u", "run_id": "r", "event": "agent_text", "data": {"delta": delta}}))
        .collect();
    let (status, body) = node.publisher.post(&json!({ "events": events })).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(live.events(101, T).await.unwrap().last().unwrap().seq, 101);
    // A snapshot folds the run, so the copy holds it twice (events and run) before the sweep.
    let (_tab, first) = node.open("u").await;
    assert_eq!(first.backlog.len(), 2);

    node.engine().sweep();
    let metrics =
        node.http().get(format!("{}/metrics", node.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "herald_logs_evicted_total 1"), "{metrics}");
    let held: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("herald_logs_held_bytes "))
        .unwrap_or_else(|| panic!("no held-bytes gauge in {metrics}"))
        .parse()
        .unwrap();
    assert!(held <= 20_000.0, "the run's ~100 KB were shed too: {held}");

    let (_tab, opened) = node.open("u").await;
    assert_eq!(names(&opened.backlog), ["agent_started", "agent_text"]);
    let text = opened.backlog[1].data["delta"].as_str().unwrap();
    assert_eq!(text.len(), 100 * 1000, "the whole run, seeded again from Redis");
    let page = node.history_with("u", "snapshot=true").await;
    assert!(page["events"][0].get("truncated").is_none(), "{}", page["events"][0]);
}
