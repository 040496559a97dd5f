//! Long runs on real sockets: a tab opened in the middle of a long answer draws the whole run
//! (its compacted snapshot), then the rest live, with no gap and no repeat — whatever
//! `history_size` trimmed. The scenarios take the node to publish to and the node to open the tab
//! on, so the Redis tests run them across two nodes.

mod common;

use common::{T, TestServer};
use herald_client::{AuthMode, Connection};
use herald_protocol::frame::EventFrame;
use herald_protocol::{Recovery, ServerFrame};
use herald_server::Settings;
use herald_server::engine::Engine;
use serde_json::{Value, json};

/// `history_size` 1000, as in the issue: a 1,500-delta answer overflows it.
pub fn settings() -> Settings {
    Settings { history_size: Some(1000), ..Settings::default() }
}

/// The delta of the i-th token of run `run`.
fn token(run: &str, i: usize) -> String {
    format!("{run}:{i} ")
}

/// Publishes deltas `from..to` of `run` for `user` in batches of 100.
async fn stream_text(server: &TestServer, user: &str, run: &str, from: usize, to: usize) {
    let mut i = from;
    while i < to {
        let end = (i + 100).min(to);
        let events: Vec<Value> = (i..end)
            .map(|k| json!({"user_id": user, "run_id": run, "event": "agent_text", "data": {"delta": token(run, k)}}))
            .collect();
        let (status, body) = server.publisher.post(&json!({ "events": events })).await.unwrap();
        assert_eq!(status, 200, "{body}");
        i = end;
    }
}

async fn publish(server: &TestServer, user: &str, run: &str, event: &str, data: Value) -> u64 {
    server.publisher.publish(user, event, Some(run), data).await.unwrap().seq
}

/// What a client draws: per run, the concatenated text of its `agent_text` events.
fn text_of(frames: &[EventFrame], run: &str) -> String {
    frames
        .iter()
        .filter(|f| f.run_id.as_deref() == Some(run) && f.event == "agent_text")
        .map(|f| f.data["delta"].as_str().unwrap())
        .collect()
}

fn expected(run: &str, n: usize) -> String {
    (0..n).map(|i| token(run, i)).collect()
}

/// Reads live events until `run` ends; asserts their seqs continue `after` one by one.
async fn live_until_end(conn: &mut Connection, mut after: u64, run: &str) -> Vec<EventFrame> {
    let mut out = Vec::new();
    loop {
        let e = conn.next_event(T).await.unwrap();
        assert_eq!(e.seq, after + 1, "live events continue without gap or repeat");
        after = e.seq;
        let done = e.run_id.as_deref() == Some(run) && e.event == "agent_completed";
        out.push(e);
        if done {
            return out;
        }
    }
}

/// The issue's scenario: `agent_started`, 1,500 deltas (the start and 501 deltas trimmed), a new
/// tab with no cursor → the whole text so far, then 200 more deltas live, exactly once each.
pub async fn joined_mid_answer(publish_on: &TestServer, open_on: &TestServer) {
    publish(publish_on, "u", "r", "agent_started", json!({})).await;
    stream_text(publish_on, "u", "r", 0, 1500).await;
    let (mut conn, opened) = open_on.open("u").await;
    assert_eq!(opened.recovery, Recovery::None);
    assert_eq!(opened.seq, 1501);
    let names: Vec<&str> = opened.backlog.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["agent_started", "agent_text"], "one frame per merged message");
    assert_eq!(text_of(&opened.backlog, "r"), expected("r", 1500), "the text so far, exactly");
    assert_eq!(opened.backlog[1].seq, 1501, "a merged frame carries the seq of its last delta");
    assert_eq!(opened.backlog[1].first_seq, Some(2), "and the seq of its first");
    assert!(opened.backlog.iter().all(|e| e.snapshot && !e.truncated), "snapshot frames, whole");

    stream_text(publish_on, "u", "r", 1500, 1700).await;
    publish(publish_on, "u", "r", "agent_completed", json!({})).await;
    let live = live_until_end(&mut conn, opened.seq, "r").await;
    assert_eq!(live.len(), 201);
    let all: Vec<EventFrame> = opened.backlog.into_iter().chain(live).collect();
    assert_eq!(text_of(&all, "r"), expected("r", 1700), "then the rest live, no gap or repeat");
    // The run is over: a new tab gets nothing of it.
    let (_conn, later) = open_on.open("u").await;
    assert!(later.backlog.is_empty(), "{:?}", later.backlog);
}

/// A cursor inside an active run, older than retention: `reset`, then the whole run, then live.
pub async fn cursor_older_than_retention(publish_on: &TestServer, open_on: &TestServer) {
    publish(publish_on, "u", "r", "agent_started", json!({})).await;
    stream_text(publish_on, "u", "r", 0, 10).await;
    let (conn, opened) = open_on.open("u").await;
    assert_eq!(text_of(&opened.backlog, "r"), expected("r", 10));
    conn.abort();
    stream_text(publish_on, "u", "r", 10, 1500).await;
    let (mut conn, resumed) = open_on.resume("u", opened.seq, &opened.epoch).await;
    assert_eq!(resumed.recovery, Recovery::Reset, "seq {} is no longer retained", opened.seq);
    assert_eq!(resumed.backlog[0].event, "agent_started");
    assert_eq!(text_of(&resumed.backlog, "r"), expected("r", 1500), "the whole run, not its tail");
    publish(publish_on, "u", "r", "agent_completed", json!({})).await;
    let live = live_until_end(&mut conn, resumed.seq, "r").await;
    assert_eq!(live.len(), 1);
}

/// Two active runs interleaved (and one finished): both drawn in full, seqs increasing.
pub async fn two_active_runs(publish_on: &TestServer, open_on: &TestServer) {
    publish(publish_on, "u", "done", "agent_started", json!({})).await;
    publish(publish_on, "u", "a", "agent_started", json!({})).await;
    publish(publish_on, "u", "b", "agent_started", json!({})).await;
    publish(publish_on, "u", "done", "agent_completed", json!({})).await;
    for chunk in 0..6 {
        stream_text(publish_on, "u", "a", chunk * 100, (chunk + 1) * 100).await;
        stream_text(publish_on, "u", "b", chunk * 100, (chunk + 1) * 100).await;
    }
    let call = json!({"tool_name": "search", "tool_call_id": "c1", "parameters": {"q": "x"}});
    publish(publish_on, "u", "b", "tool_executing", call).await;
    let (mut conn, opened) = open_on.open("u").await;
    let seqs: Vec<u64> = opened.backlog.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "increasing seqs: {seqs:?}");
    assert!(opened.backlog.iter().all(|e| e.run_id.as_deref() != Some("done")));
    assert_eq!(text_of(&opened.backlog, "a"), expected("a", 600));
    assert_eq!(text_of(&opened.backlog, "b"), expected("b", 600));
    let per_run = |run: &str| -> Vec<&str> {
        opened.backlog.iter().filter(|e| e.run_id.as_deref() == Some(run)).map(|e| e.event.as_str()).collect()
    };
    // Six batches of each run alternate, so each run's text is six merged frames... of one
    // message: consecutive within the run, hence one frame.
    assert_eq!(per_run("a"), ["agent_started", "agent_text"]);
    assert_eq!(per_run("b"), ["agent_started", "agent_text", "tool_executing"]);
    publish(publish_on, "u", "a", "agent_completed", json!({})).await;
    let live = live_until_end(&mut conn, opened.seq, "a").await;
    assert_eq!(live.len(), 1);
}

/// The run ends between the snapshot and `synced`: the snapshot has the run, the terminal event
/// follows live, right after it.
pub async fn run_ends_while_the_snapshot_is_sent(publish_on: &TestServer, open_on: &TestServer) {
    publish(publish_on, "u", "r", "agent_started", json!({})).await;
    stream_text(publish_on, "u", "r", 0, 1500).await;
    let mut conn =
        Connection::connect(&open_on.url, &open_on.token("u"), None, AuthMode::Header).await.unwrap();
    // The welcome is written after the snapshot was taken (one step with the head); the rest of
    // the opening is still unread when the run ends.
    let ServerFrame::Welcome { seq, .. } = conn.next_frame(T).await.unwrap() else { panic!("welcome first") };
    let end = publish(publish_on, "u", "r", "agent_completed", json!({})).await;
    assert_eq!(end, seq + 1);
    let mut frames = Vec::new();
    loop {
        match conn.next_frame(T).await.unwrap() {
            ServerFrame::Event(e) => frames.push(e),
            ServerFrame::Synced { seq: synced } => {
                assert_eq!(synced, seq);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(text_of(&frames, "r"), expected("r", 1500));
    let e = conn.next_event(T).await.unwrap();
    assert_eq!((e.seq, e.event.as_str()), (end, "agent_completed"));
}

/// Many long runs: the compacted state stays within its documented limits (64 runs per user,
/// 512 KiB per run), and a run past its budget says `truncated` and keeps its newest text.
pub async fn bounded(server: &TestServer) -> (usize, usize) {
    for r in 0..70 {
        let run = format!("r{r}");
        publish(server, "many", &run, "agent_started", json!({})).await;
        stream_text(server, "many", &run, 0, 20).await;
    }
    // One run with far more text than its budget (100 deltas of 8 KiB).
    publish(server, "big", "huge", "agent_started", json!({})).await;
    let chunk = "x".repeat(8 * 1024 - 10);
    for batch in 0..10 {
        let events: Vec<Value> = (0..10)
            .map(|k| {
                let delta = format!("{:09}{chunk}", batch * 10 + k);
                json!({"user_id": "big", "run_id": "huge", "event": "agent_text", "data": {"delta": delta}})
            })
            .collect();
        let (status, body) = server.publisher.post(&json!({ "events": events })).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (_c, many) = server.open("many").await;
    let started = many.backlog.iter().filter(|e| e.event == "agent_started").count();
    assert_eq!(started, 64, "at most 64 runs per user are compacted");
    assert!(
        !many.backlog.iter().any(|e| ["r0", "r5"].contains(&e.run_id.as_deref().unwrap())),
        "the idlest go"
    );

    let (_c, big) = server.open("big").await;
    assert_eq!(big.backlog[0].event, "agent_started");
    let text = text_of(&big.backlog, "huge");
    assert!(text.len() <= 512 * 1024, "{} bytes kept", text.len());
    assert!(text.len() >= 256 * 1024, "most of the budget is kept: {}", text.len());
    assert!(text.ends_with(&format!("{:09}{chunk}", 99)), "the newest text is kept");
    (started, text.len())
}

#[tokio::test]
async fn a_tab_joined_mid_answer_draws_the_whole_run_then_the_rest_live() {
    let server = TestServer::with(settings()).await;
    joined_mid_answer(&server, &server).await;
}

#[tokio::test]
async fn a_cursor_older_than_retention_inside_an_active_run_gets_the_whole_run() {
    let server = TestServer::with(settings()).await;
    cursor_older_than_retention(&server, &server).await;
}

#[tokio::test]
async fn two_active_runs_are_both_drawn_in_full() {
    let server = TestServer::with(settings()).await;
    two_active_runs(&server, &server).await;
}

#[tokio::test]
async fn a_run_that_ends_while_the_snapshot_is_sent_ends_right_after_it() {
    let server = TestServer::with(settings()).await;
    run_ends_while_the_snapshot_is_sent(&server, &server).await;
}

#[tokio::test]
async fn memory_stays_bounded_with_many_long_runs() {
    let server = TestServer::with(settings()).await;
    bounded(&server).await;
    let (runs, bytes) = server.memory().compacted();
    assert_eq!(runs, 64 + 1);
    assert!(bytes <= 65 * 512 * 1024, "{bytes}");
    // Ending the runs frees their compacted state.
    let events: Vec<Value> = (0..70)
        .map(
            |r| json!({"user_id": "many", "run_id": format!("r{r}"), "event": "agent_completed", "data": {}}),
        )
        .collect();
    let (status, _) = server.publisher.post(&json!({ "events": events })).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(server.memory().compacted().0, 1);
}

/// The history API's `snapshot=true`: the compacted runs as raw frames (with their markers).
pub async fn history_snapshot(publish_on: &TestServer, ask: &TestServer) {
    publish(publish_on, "h", "r", "agent_started", json!({})).await;
    stream_text(publish_on, "h", "r", 0, 1500).await;
    publish(publish_on, "h", "other", "agent_started", json!({})).await;
    let get = |query: &str| {
        let request = ask
            .http()
            .get(format!("{}/v1/users/h/events?{query}", ask.url))
            .bearer_auth(common::API_KEY)
            .send();
        async move {
            let response = request.await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, page) = get("snapshot=true&run_id=r").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["seq"], 1502);
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{page}");
    assert_eq!(events[1]["snapshot"], true);
    assert_eq!((events[1]["first_seq"].as_u64(), events[1]["seq"].as_u64()), (Some(2), Some(1501)));
    assert_eq!(events[1]["data"]["delta"].as_str().unwrap(), expected("r", 1500));
    let (_, all) = get("snapshot=true").await;
    assert_eq!(all["events"].as_array().unwrap().len(), 3);
    let (_, none) = get("snapshot=true&run_id=nope").await;
    assert_eq!(none["events"], json!([]));
    for bad in ["snapshot=yes", "snapshot=true&after=3", "snapshot=true&limit=5", "run_id=r", "snapshot=1"] {
        let (status, body) = get(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{bad}");
    }
}

/// Publishes `n` deltas of 2 KiB to `run` of `user`, one batch.
async fn stream_kib(server: &TestServer, user: &str, run: &str, n: usize) {
    let delta = "z".repeat(2048);
    let events: Vec<Value> = (0..n)
        .map(|_| json!({"user_id": user, "run_id": run, "event": "agent_text", "data": {"delta": delta}}))
        .collect();
    let (status, body) = server.publisher.post(&json!({ "events": events })).await.unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn over_the_memory_cap_the_older_users_run_is_drawn_truncated_then_live() {
    // Room for one ~200 KB answer, not two: once both users' retained events are dropped, the
    // sweep still finds the compacted runs over the cap and sheds the older user's.
    let cap = Settings { max_retained_bytes: Some(300_000), ..settings() };
    let server = TestServer::with(cap).await;
    let (mut old_tab, _) = server.open("old").await;
    let (_new_tab, _) = server.open("new").await;
    for user in ["old", "new"] {
        publish(&server, user, "r", "agent_started", json!({})).await;
        stream_kib(&server, user, "r", 100).await;
    }
    assert!(server.memory().accounted_bytes() > 400_000);
    server.memory().sweep();
    assert!(server.memory().accounted_bytes() <= 300_000, "{}", server.memory().accounted_bytes());

    // A tab opened now draws the older user's run from its start, marked truncated…
    let (mut tab, opened) = server.open("old").await;
    let names: Vec<&str> = opened.backlog.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["agent_started"]);
    assert!(opened.backlog[0].snapshot && opened.backlog[0].truncated, "{:?}", opened.backlog[0]);
    let snapshot = server.history_with("old", "snapshot=true").await;
    assert_eq!(snapshot["events"][0]["truncated"], true, "{snapshot}");
    // …then the rest live, exactly once, as does the tab that was open all along.
    stream_text(&server, "old", "r", 0, 3).await;
    publish(&server, "old", "r", "agent_completed", json!({})).await;
    let live = live_until_end(&mut tab, opened.seq, "r").await;
    assert_eq!(text_of(&live, "r"), expected("r", 3));
    let all = live_until_end(&mut old_tab, 0, "r").await;
    assert_eq!(all.len(), 1 + 100 + 3 + 1, "a caught-up tab loses nothing");
    // The more recent user's answer is whole.
    let (_c, new) = server.open("new").await;
    assert_eq!(new.backlog.len(), 2);
    assert_eq!(text_of(&new.backlog, "r").len(), 100 * 2048);
    // Operators see why.
    let metrics = server.http().get(format!("{}/metrics", server.url)).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.contains(r#"herald_run_snapshots_lossy_total{limit="memory_cap"} 1"#), "{text}");
    let held: f64 =
        text.lines().find_map(|l| l.strip_prefix("herald_logs_held_bytes ")).unwrap().parse().unwrap();
    assert!(held > 0.0 && held <= 300_000.0, "what the logs hold, as the sweep left it: {held}");
}

#[tokio::test]
async fn the_history_api_returns_a_runs_compacted_state() {
    let server = TestServer::with(settings()).await;
    history_snapshot(&server, &server).await;
}

#[tokio::test]
async fn a_run_past_its_budget_says_truncated() {
    let server = TestServer::with(settings()).await;
    publish(&server, "big", "huge", "agent_started", json!({})).await;
    let delta = "y".repeat(60 * 1024);
    for _ in 0..10 {
        publish(&server, "big", "huge", "agent_text", json!({"delta": delta})).await;
    }
    let page = server.history_with("big", "snapshot=true").await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events[0]["event"], "agent_started");
    assert_eq!(events[0]["truncated"], true, "{}", events[0]);
    let kept = events[1]["data"]["delta"].as_str().unwrap().len();
    assert!(kept < 10 * delta.len() && kept > 256 * 1024, "{kept}");
    // Operators see it too.
    let metrics = server.http().get(format!("{}/metrics", server.url)).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(r#"herald_run_snapshots_lossy_total{limit="run_bytes"}"#))
        .unwrap_or_else(|| panic!("no lossy-snapshot counter in {text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{line}");
}

// ---------------------------------------------------------------- Redis engine, across nodes

/// Two Redis-engine nodes sharing one prefix: the tab opens on a node that never saw the run.
async fn redis_pair(name: &str) -> (String, TestServer, TestServer) {
    let prefix = common::unique_prefix(name);
    let a = TestServer::redis(&prefix, settings()).await;
    let b = TestServer::redis(&prefix, settings()).await;
    (prefix, a, b)
}

async fn redis_list_len(prefix: &str, user: &str, run: &str) -> usize {
    let mut con = common::redis_connection().await;
    redis::cmd("LLEN").arg(format!("{prefix}:{{{user}}}:runs:{run}")).query_async(&mut con).await.unwrap()
}

#[tokio::test]
async fn redis_a_tab_joined_mid_answer_on_another_node_draws_the_whole_run() {
    let (prefix, a, b) = redis_pair("longrun-join").await;
    publish(&a, "u", "r", "agent_started", json!({})).await;
    stream_text(&a, "u", "r", 0, 1500).await;
    let (_conn, opened) = b.open("u").await;
    assert_eq!(text_of(&opened.backlog, "r"), expected("r", 1500));
    // Node b compacted the run's list in Redis when it read it: a third node reads two frames.
    assert_eq!(redis_list_len(&prefix, "u", "r").await, 2);
    let c = TestServer::redis(&prefix, settings()).await;
    let (_conn, third) = c.open("u").await;
    assert_eq!(text_of(&third.backlog, "r"), expected("r", 1500));
    publish(&a, "u", "r", "agent_completed", json!({})).await;
    assert_eq!(redis_list_len(&prefix, "u", "r").await, 0, "a terminal event deletes the run's list");
}

#[tokio::test]
async fn redis_joined_mid_answer_then_the_rest_live() {
    let (_prefix, a, b) = redis_pair("longrun-live").await;
    joined_mid_answer(&a, &b).await;
}

#[tokio::test]
async fn redis_a_cursor_older_than_retention_inside_an_active_run_gets_the_whole_run() {
    let (_prefix, a, b) = redis_pair("longrun-cursor").await;
    cursor_older_than_retention(&a, &b).await;
}

#[tokio::test]
async fn redis_two_active_runs_are_both_drawn_in_full() {
    let (_prefix, a, b) = redis_pair("longrun-two").await;
    two_active_runs(&a, &b).await;
}

#[tokio::test]
async fn redis_a_run_that_ends_while_the_snapshot_is_sent_ends_right_after_it() {
    let (_prefix, a, b) = redis_pair("longrun-ends").await;
    run_ends_while_the_snapshot_is_sent(&a, &b).await;
}

#[tokio::test]
async fn redis_the_history_api_returns_a_runs_compacted_state() {
    let (_prefix, a, b) = redis_pair("longrun-history").await;
    history_snapshot(&a, &b).await;
}

/// A run's events are written once while they are in the history window: it has no list until
/// the stream is trimmed past its first events, which are then moved into one; a tab draws the
/// run from both, and the list is gone when the run ends.
#[tokio::test]
async fn redis_a_runs_list_takes_only_the_events_that_leave_the_window() {
    let (prefix, a, b) = redis_pair("longrun-window").await;
    publish(&a, "u", "r", "agent_started", json!({})).await;
    stream_text(&a, "u", "r", 0, 900).await;
    assert_eq!(redis_list_len(&prefix, "u", "r").await, 0, "901 events fit the window of 1,000");
    stream_text(&a, "u", "r", 900, 1200).await;
    // Seqs up to 1,202 - 1,000 = 202 left the window: moved into the list (which the appending
    // node may have compacted since).
    assert!(redis_list_len(&prefix, "u", "r").await > 0);
    let (_conn, opened) = b.open("u").await;
    assert_eq!(text_of(&opened.backlog, "r"), expected("r", 1200));
    publish(&a, "u", "r", "agent_completed", json!({})).await;
    assert_eq!(redis_list_len(&prefix, "u", "r").await, 0, "a terminal event deletes the run's list");
}

/// One `XRANGE` entry: its id and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// A run that was active when the nodes were upgraded from a build that pushed every event of a
/// run to its list (and kept no set of live runs) is still drawn whole, each event once.
#[tokio::test]
async fn redis_a_run_active_across_an_upgrade_is_drawn_whole() {
    let (prefix, a, b) = redis_pair("longrun-upgrade").await;
    publish(&a, "u", "r", "agent_started", json!({})).await;
    stream_text(&a, "u", "r", 0, 300).await;
    // What the earlier build left: every event of the run in its list, no `live` set, no version
    // of the run states in the meta.
    let mut con = common::redis_connection().await;
    let key = |name: &str| format!("{prefix}:{{u}}:{name}");
    let entries: Vec<StreamEntry> =
        redis::cmd("XRANGE").arg(key("log")).arg("-").arg("+").query_async(&mut con).await.unwrap();
    let mut old = redis::pipe();
    old.hdel(key("meta"), "rv").del(key("live"));
    for (id, fields) in &entries {
        let mut entry = format!("{} ", id.trim_end_matches("-0")).into_bytes();
        entry.extend_from_slice(&fields[0].1);
        old.rpush(key("runs:r"), entry);
    }
    let () = old.query_async(&mut con).await.unwrap();
    // The upgraded node goes on; the window (1,000) moves past the run's start.
    stream_text(&a, "u", "r", 300, 1500).await;
    let version: Option<u64> = redis::AsyncCommands::hget(&mut con, key("meta"), "rv").await.unwrap();
    assert_eq!(version, Some(0), "the first append marks the keys converted");
    let (_conn, opened) = b.open("u").await;
    assert_eq!(text_of(&opened.backlog, "r"), expected("r", 1500));
}

/// A run streamed through one node that no tab ever reads stays compact in Redis: the appending
/// node rewrites the run's list every few hundred events.
#[tokio::test]
async fn redis_a_long_run_stays_compact_in_redis() {
    let (prefix, a, _b) = redis_pair("longrun-bounded").await;
    publish(&a, "u", "r", "agent_started", json!({})).await;
    stream_text(&a, "u", "r", 0, 3000).await;
    // Compaction runs in the background after the append that crossed the threshold.
    let deadline = tokio::time::Instant::now() + T;
    let mut len = redis_list_len(&prefix, "u", "r").await;
    while len > 600 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        len = redis_list_len(&prefix, "u", "r").await;
    }
    assert!(len <= 600, "3,001 events kept as {len} entries");
    let (_conn, opened) = a.open("u").await;
    assert_eq!(text_of(&opened.backlog, "r"), expected("r", 3000));
}
