//! One conformance suite for every engine: the same checks run against the memory engine, the
//! Redis engine on the shared test Redis, and (in `cluster`) the Redis engine on a 3-master Redis
//! Cluster this test starts itself — so the engines cannot drift apart on seqs, idempotency, run
//! rules, history, resume, retention, run expiry, stall scans or tickets.
//!
//! Every check takes two engines, `a` and `b`: two nodes sharing one Redis (one key prefix per
//! check), or the same memory engine twice. A check uses only its own users.

mod common;

use herald_protocol::frame::ServerFrame;
use herald_protocol::{EventInput, EventKind, Receipt, Recovery, UserId};
use herald_server::engine::{AppendError, Engine, MemoryEngine, RedisEngine};
use herald_server::log::{Retention, UserLog};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Where the engines under test keep their logs.
#[derive(Clone, Debug)]
enum Backend {
    Memory,
    /// A Redis (or Redis Cluster with `cluster`) at `url` (comma-separated seeds for a cluster).
    Redis {
        url: String,
        cluster: bool,
    },
}

type Pair = (Arc<dyn Engine>, Arc<dyn Engine>);

impl Backend {
    fn redis() -> Backend {
        Backend::Redis { url: common::redis_url(), cluster: false }
    }

    /// Two nodes over this backend, keeping `retention`.
    async fn pair(&self, retention: Retention) -> Pair {
        match self {
            Backend::Memory => {
                let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new(retention));
                (engine.clone(), engine)
            }
            Backend::Redis { url, cluster } => {
                let prefix = common::unique_prefix("conformance");
                let node = || async {
                    let engine: Arc<dyn Engine> = RedisEngine::connect(url, &prefix, retention, *cluster)
                        .await
                        .expect("redis reachable");
                    engine
                };
                (node().await, node().await)
            }
        }
    }
}

const RETENTION: Retention = Retention { max_events: 100, ttl: Duration::from_secs(60) };
const WAIT: Duration = Duration::from_secs(10);

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// An event; `data` may hold e.g. `tool_name`.
fn ev(user_id: &str, kind: EventKind, run: Option<&str>, id: Option<&str>, data: Value) -> EventInput {
    EventInput {
        user_id: user(user_id),
        kind,
        run_id: run.map(str::to_owned),
        thread_id: None,
        data: data.as_object().cloned().unwrap_or_default().into(),
        id: id.map(str::to_owned),
    }
}

fn started(u: &str, run: &str) -> EventInput {
    ev(u, EventKind::AgentStarted, Some(run), None, json!({}))
}

fn thinking(u: &str, run: &str) -> EventInput {
    ev(u, EventKind::AgentThinking, Some(run), None, json!({}))
}

fn keyed(u: &str, id: &str) -> EventInput {
    ev(u, EventKind::Custom, None, Some(id), json!({"name": "n"}))
}

async fn one(engine: &Arc<dyn Engine>, event: EventInput) -> Result<Receipt, AppendError> {
    engine.append(vec![event]).await.map(|mut r| r.remove(0))
}

fn rule_of(error: AppendError) -> (Option<usize>, &'static str) {
    match error {
        AppendError::RunRule { index, source } => (index, source.rule()),
        other => panic!("expected a run rule error, got {other:?}"),
    }
}

/// Waits until `log` has seq `head`.
async fn until_head(log: &UserLog, head: u64) {
    tokio::time::timeout(WAIT, log.wait_for_head(head))
        .await
        .unwrap_or_else(|_| panic!("log never reached seq {head} (at {})", log.head()));
}

/// Seqs are per user, start at 1, have no gaps, and continue across nodes and calls.
async fn seqs_are_per_user_gapless_and_shared_by_nodes((a, b): Pair) {
    let batch = vec![started("s1", "r"), started("s2", "r"), thinking("s1", "r"), thinking("s1", "r")];
    let receipts = a.append(batch).await.unwrap();
    assert_eq!(receipts.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 1, 2, 3]);
    assert_eq!(receipts[0].epoch, receipts[2].epoch);
    assert!(receipts.iter().all(|r| !r.duplicate));
    let next = one(&b, thinking("s1", "r")).await.unwrap();
    assert_eq!((next.seq, next.epoch.as_str()), (4, receipts[0].epoch.as_str()));
    let log = a.open_log(&user("s1")).await.unwrap();
    until_head(&log, 4).await;
    assert_eq!(log.epoch(), receipts[0].epoch);
}

/// A publisher's id is appended once, whichever node sees it and however often; duplicates in
/// one batch share the first receipt; events without an id are never duplicates.
async fn idempotency_holds_across_nodes_and_batches((a, b): Pair) {
    let first = one(&a, keyed("i", "x")).await.unwrap();
    let again = one(&b, keyed("i", "x")).await.unwrap();
    assert_eq!((again.seq, again.duplicate, again.id.as_str()), (first.seq, true, "x"));
    let batch = b.append(vec![keyed("i", "y"), keyed("i", "x"), keyed("i", "y")]).await.unwrap();
    let got: Vec<(u64, bool)> = batch.iter().map(|r| (r.seq, r.duplicate)).collect();
    assert_eq!(got, [(2, false), (1, true), (2, true)]);
    let loose = || ev("i", EventKind::Custom, None, None, json!({"name": "n"}));
    let generated = a.append(vec![loose(), loose()]).await.unwrap();
    assert_eq!(generated.iter().map(|r| (r.seq, r.duplicate)).collect::<Vec<_>>(), [(3, false), (4, false)]);
    assert_ne!(generated[0].id, generated[1].id);
    let history = a.history(&user("i"), 0, None, 100).await.unwrap();
    assert_eq!(history.events.len(), 4, "duplicates were not appended");
}

/// Every run rule is enforced, whichever node the events go through.
async fn run_rules_hold_across_nodes((a, b): Pair) {
    assert_eq!(rule_of(one(&a, thinking("rr", "r")).await.unwrap_err()), (None, "not_started"));
    one(&a, started("rr", "r")).await.unwrap();
    assert_eq!(rule_of(one(&b, started("rr", "r")).await.unwrap_err()), (None, "already_started"));
    let tool = |kind, name: &str| ev("rr", kind, Some("r"), None, json!({"tool_name": name}));
    assert_eq!(
        rule_of(one(&b, tool(EventKind::ToolCompleted, "t")).await.unwrap_err()),
        (None, "no_open_tool")
    );
    one(&b, tool(EventKind::ToolExecuting, "t")).await.unwrap();
    let done = || ev("rr", EventKind::AgentCompleted, Some("r"), None, json!({}));
    assert_eq!(rule_of(one(&a, done()).await.unwrap_err()), (None, "tools_open"));
    one(&a, tool(EventKind::ToolCompleted, "t")).await.unwrap();
    one(&a, done()).await.unwrap();
    assert_eq!(rule_of(one(&b, thinking("rr", "r")).await.unwrap_err()), (None, "after_terminal"));
    // A custom event may name an unknown run, and creates no state for it.
    one(&b, ev("rr", EventKind::Custom, Some("nowhere"), None, json!({"name": "n"}))).await.unwrap();
    assert_eq!(rule_of(one(&a, thinking("rr", "nowhere")).await.unwrap_err()), (None, "not_started"));
}

/// A batch with a broken rule anywhere appends nothing for any of its users, and the error
/// names the lowest broken index whatever the users' order.
async fn a_broken_batch_appends_nothing_and_names_the_first_index((a, b): Pair) {
    let batch = vec![
        started("zz", "r"),
        thinking("aa", "r"), // not started: index 1
        started("mm", "r"),
        thinking("zz", "q"), // not started: index 3
    ];
    assert_eq!(rule_of(a.append(batch).await.unwrap_err()), (Some(1), "not_started"));
    for u in ["zz", "aa", "mm"] {
        assert_eq!(b.history(&user(u), 0, None, 10).await.unwrap().seq, 0, "{u} got events");
    }
    let fixed = vec![started("zz", "r"), started("aa", "r"), started("mm", "r"), thinking("zz", "r")];
    let seqs: Vec<u64> = b.append(fixed).await.unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 1, 1, 2]);
}

/// History honours cursors like a socket does: events after the cursor, or a reset with the
/// oldest events when the cursor is of another epoch or ahead of the log.
async fn history_reads_after_a_cursor_or_resets((a, b): Pair) {
    let u = user("h");
    let receipts = a.append((0..5).map(|i| keyed("h", &format!("h{i}"))).collect()).await.unwrap();
    let epoch = receipts[0].epoch.clone();
    let after = b.history(&u, 2, Some(&epoch), 2).await.unwrap();
    assert!(!after.reset);
    assert_eq!((after.seq, after.epoch.as_str()), (5, epoch.as_str()));
    assert_eq!(after.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(after.events[0].id, "h2");
    for (cursor, cursor_epoch) in [(2, "another-epoch"), (9, epoch.as_str())] {
        let reset = b.history(&u, cursor, Some(cursor_epoch), 10).await.unwrap();
        assert!(reset.reset, "cursor {cursor} in {cursor_epoch} must reset");
        assert_eq!(reset.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    }
    let empty = a.history(&user("nobody"), 0, None, 10).await.unwrap();
    assert_eq!((empty.seq, empty.events.len(), empty.reset), (0, 0, false));
}

/// Frames are encoded once and read the same on every node: valid event frames with their seq.
async fn frames_are_the_same_event_frames_on_every_node((a, b): Pair) {
    let log_a = a.open_log(&user("f")).await.unwrap();
    let data = json!({"tool_name": "search", "q": "line\nbreak \"quoted\" é", "n": 1.5});
    let run =
        [started("f", "r"), ev("f", EventKind::ToolExecuting, Some("r"), Some("id\nwith:newline"), data)];
    b.append(run.to_vec()).await.unwrap();
    until_head(&log_a, 2).await;
    let log_b = b.open_log(&user("f")).await.unwrap();
    let frames = |log: &UserLog| -> Vec<String> {
        log.read_after(0, 1 << 20).unwrap().iter().map(|e| e.frame.as_str().to_owned()).collect()
    };
    assert_eq!(frames(&log_a), frames(&log_b));
    let history = a.history(&user("f"), 0, None, 10).await.unwrap();
    assert_eq!(
        history.events.iter().map(|e| e.frame.as_str().to_owned()).collect::<Vec<_>>(),
        frames(&log_a)
    );
    for (i, frame) in frames(&log_a).iter().enumerate() {
        let ServerFrame::Event(event) = serde_json::from_str(frame).unwrap() else { panic!("{frame}") };
        assert_eq!((event.seq, event.user_id.as_str()), (i as u64 + 1, "f"));
    }
    let entry = &log_a.read_after(1, 1 << 20).unwrap()[0];
    assert_eq!((entry.id.as_str(), entry.run_id.as_deref()), ("id\nwith:newline", Some("r")));
    assert_eq!(entry.kind, EventKind::ToolExecuting);
}

/// A node's log follows appends made on the other node, and a cursor resumes exactly there.
async fn live_logs_follow_other_nodes_and_cursors_resume((a, b): Pair) {
    let u = user("live");
    let log = a.open_log(&u).await.unwrap();
    assert_eq!(log.open(None).recovery, Recovery::None);
    let first = b.append(vec![started("live", "r"), thinking("live", "r")]).await.unwrap();
    until_head(&log, 2).await;
    b.append(vec![thinking("live", "r"), thinking("live", "r")]).await.unwrap();
    until_head(&log, 4).await;
    let resumed = log.open(Some((2, &first[0].epoch)));
    assert_eq!(resumed.recovery, Recovery::Replayed);
    assert_eq!(resumed.backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(log.open(Some((2, "old-epoch"))).recovery, Recovery::Reset);
    let fresh = b.open_log(&u).await.unwrap();
    assert_eq!(fresh.open(None).backlog.len(), 4, "a new connection gets the active run");
}

/// `history_size` bounds the log and the idempotency window alike.
async fn retention_bounds_the_log_and_the_ids((a, b): Pair) {
    for i in 0..5 {
        one(&a, keyed("t", &format!("k{i}"))).await.unwrap();
    }
    let history = b.history(&user("t"), 0, None, 10).await.unwrap();
    assert_eq!(history.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
    let trimmed = one(&b, keyed("t", "k0")).await.unwrap();
    assert_eq!((trimmed.seq, trimmed.duplicate), (6, false), "k0 was trimmed: a new event");
    let retained = one(&b, keyed("t", "k4")).await.unwrap();
    assert_eq!((retained.seq, retained.duplicate), (5, true), "k4 is retained");
    let log = a.open_log(&user("t")).await.unwrap();
    until_head(&log, 6).await;
    assert_eq!(log.open(Some((1, &trimmed.epoch))).recovery, Recovery::Reset, "seq 2 is gone");
}

/// The window is exactly `history_size` events at any size (an engine may trim its storage in
/// steps; what it serves is exact).
async fn the_retention_window_is_exact_at_any_size((a, b): Pair) {
    // 104 events, 4 past the window of 100: a stepwise trim may not have run yet.
    let mut batch = vec![started("w", "r")];
    batch.extend((0..103).map(|_| thinking("w", "r")));
    let receipts = a.append(batch).await.unwrap();
    let epoch = receipts[0].epoch.clone();
    let history = b.history(&user("w"), 0, None, 1000).await.unwrap();
    assert_eq!(history.events.iter().map(|e| e.seq).collect::<Vec<_>>(), (5..=104).collect::<Vec<_>>());
    let served = b.history(&user("w"), 4, Some(&epoch), 1000).await.unwrap();
    assert_eq!((served.reset, served.events.first().map(|e| e.seq)), (false, Some(5)));
    assert!(b.history(&user("w"), 3, Some(&epoch), 1000).await.unwrap().reset, "seq 4 is gone");
    let log = b.open_log(&user("w")).await.unwrap();
    until_head(&log, 104).await;
    assert_eq!(log.open(Some((3, &epoch))).recovery, Recovery::Reset);
    assert_eq!(log.open(Some((4, &epoch))).recovery, Recovery::Replayed);
}

/// Events older than the TTL are not served once the periodic sweep ran, even when nothing was
/// appended since (an engine may trim its storage by age in steps).
async fn events_older_than_the_ttl_are_not_served((a, b): Pair) {
    let receipts = a.append(vec![keyed("old", "o1"), keyed("old", "o2")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    a.sweep();
    b.sweep();
    let history = b.history(&user("old"), 0, Some(&receipts[0].epoch), 10).await.unwrap();
    assert_eq!(history.events.len(), 0, "{:?}", history.events.iter().map(|e| e.seq).collect::<Vec<_>>());
    let after_one = b.history(&user("old"), 1, Some(&receipts[0].epoch), 10).await.unwrap();
    assert!(after_one.reset, "seq 2 expired: {after_one:?}");
}

/// A run's state lives as long as its user is active: a TTL after the user's last event, however
/// long the run itself has been quiet; then it is forgotten.
async fn run_state_expires_a_ttl_after_the_users_last_event((a, b): Pair) {
    let ttl = Duration::from_secs(1);
    one(&a, started("x", "quiet")).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(ttl / 2).await;
        one(&b, keyed("x", &format!("{:?}", std::time::Instant::now()))).await.unwrap();
        a.sweep();
    }
    // 1.5 TTLs after its last event, the quiet run is still known: the user was active.
    one(&b, thinking("x", "quiet")).await.expect("the run outlives its own silence");
    // Then the user falls silent for longer than the TTL (and its keys' refresh margin).
    tokio::time::sleep(ttl * 2).await;
    a.sweep();
    b.sweep();
    assert_eq!(rule_of(one(&a, thinking("x", "quiet")).await.unwrap_err()), (None, "not_started"));
}

/// An ended run's state is kept a TTL after its end, so a late event for it is refused, and then
/// forgotten even while its user goes on publishing: a user who publishes all day does not keep
/// every run it ever finished (and the run's id is free again).
async fn an_ended_run_is_forgotten_a_ttl_after_its_end((a, b): Pair) {
    let ttl = Duration::from_secs(1);
    one(&a, started("y", "done")).await.unwrap();
    one(&a, ev("y", EventKind::AgentCompleted, Some("done"), None, json!({}))).await.unwrap();
    assert_eq!(rule_of(one(&b, thinking("y", "done")).await.unwrap_err()), (None, "after_terminal"));
    // The user publishes on, every half TTL, until 1.5 TTLs after the run's end.
    for _ in 0..3 {
        tokio::time::sleep(ttl / 2).await;
        one(&b, keyed("y", &format!("{:?}", std::time::Instant::now()))).await.unwrap();
        a.sweep();
        b.sweep();
    }
    one(&b, started("y", "done")).await.expect("the ended run is forgotten: its id starts a new run");
}

/// Active runs are counted and silent ones reported stalled once.
async fn scans_count_active_runs_and_find_silent_ones((a, b): Pair) {
    one(&a, started("sc", "r1")).await.unwrap();
    one(&b, started("sc", "r2")).await.unwrap();
    let scan = a.scan_runs(Duration::ZERO).await.unwrap();
    assert_eq!(scan.active, 2);
    let mut stalled: Vec<_> = scan.stalled.iter().map(|s| (s.user.as_str(), s.run_id.as_str())).collect();
    stalled.sort_unstable();
    assert_eq!(stalled, [("sc", "r1"), ("sc", "r2")]);
    one(&b, ev("sc", EventKind::RunStalled, Some("r1"), None, json!({"silent_for_s": 1}))).await.unwrap();
    one(&a, ev("sc", EventKind::AgentCompleted, Some("r2"), None, json!({}))).await.unwrap();
    let scan = b.scan_runs(Duration::ZERO).await.unwrap();
    assert_eq!(scan.active, 1, "r2 ended");
    assert!(scan.stalled.is_empty(), "r1 was reported already: {:?}", scan.stalled);
    assert_eq!(a.scan_runs(Duration::from_secs(3600)).await.unwrap().stalled.len(), 0);
}

/// A ticket is taken once, on any node.
async fn tickets_are_taken_once_on_any_node((a, b): Pair) {
    a.put_ticket("hash-1", &user("tk"), Duration::from_secs(30)).await.unwrap();
    assert_eq!(b.take_ticket("hash-1").await.unwrap(), Some(user("tk")));
    assert_eq!(a.take_ticket("hash-1").await.unwrap(), None);
    assert_eq!(b.take_ticket("never-issued").await.unwrap(), None);
}

/// An active run is snapshotted whole on every node, however much of it retention trimmed: its
/// text deltas merged into one frame with the seq of the last, and nothing once it ended.
async fn active_runs_are_snapshotted_whole_on_every_node((a, b): Pair) {
    one(&a, started("lr", "r")).await.unwrap();
    let text = |i: usize| ev("lr", EventKind::AgentText, Some("r"), None, json!({"delta": format!("{i} ")}));
    for chunk in 0..3 {
        a.append((chunk * 100..(chunk + 1) * 100).map(text).collect()).await.unwrap();
    }
    let expected: String = (0..300).map(|i| format!("{i} ")).collect();
    // Node b opens the user now: its log starts from the retained tail (100 events).
    let log = b.open_log(&user("lr")).await.unwrap();
    until_head(&log, 301).await;
    let opening = log.open(None);
    assert!(opening.snapshot);
    let frames: Vec<Value> =
        opening.backlog.iter().map(|e| serde_json::from_str(e.frame.as_str()).unwrap()).collect();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!((frames[0]["event"].as_str(), frames[0]["seq"].as_u64()), (Some("agent_started"), Some(1)));
    assert_eq!((frames[1]["seq"].as_u64(), frames[1]["first_seq"].as_u64()), (Some(301), Some(2)));
    assert_eq!(frames[1]["data"]["delta"].as_str(), Some(expected.as_str()));
    assert!(frames.iter().all(|f| f["snapshot"] == true));
    // Live events keep the node's compacted state current; the end drops it.
    one(&a, text(300)).await.unwrap();
    until_head(&log, 302).await;
    assert_eq!(log.snapshot(Some("r")).1[1].seq, 302);
    one(&a, ev("lr", EventKind::AgentCompleted, Some("r"), None, json!({}))).await.unwrap();
    until_head(&log, 303).await;
    assert!(log.open(None).backlog.is_empty());
}

/// An active run outlives the TTL of its own events: events older than the TTL leave the log,
/// but a node that opens the user later still draws the run from its start.
async fn an_active_runs_events_older_than_the_ttl_stay_in_its_snapshot((a, b): Pair) {
    let ttl = Duration::from_secs(1);
    one(&a, started("aged", "r")).await.unwrap();
    let text =
        |i: usize| ev("aged", EventKind::AgentText, Some("r"), None, json!({"delta": format!("{i} ")}));
    for i in 0..4 {
        one(&a, text(i)).await.unwrap();
        tokio::time::sleep(ttl / 2).await;
        a.sweep();
    }
    // The first events are older than the TTL now; the run is not (it was active all along).
    let log = b.open_log(&user("aged")).await.unwrap();
    until_head(&log, 5).await;
    let history = b.history(&user("aged"), 0, Some(log.epoch()), 10).await.unwrap();
    assert!(history.reset, "the run's first events expired from the log: {history:?}");
    let frames: Vec<Value> =
        log.open(None).backlog.iter().map(|e| serde_json::from_str(e.frame.as_str()).unwrap()).collect();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0]["event"].as_str(), Some("agent_started"));
    assert_eq!(frames[1]["data"]["delta"].as_str(), Some("0 1 2 3 "));
}

/// Runs every check with its retention against `backend` (the cluster test runs them all on one
/// cluster it started).
async fn all_checks(backend: &Backend) {
    macro_rules! run {
        ($($check:ident $(: $retention:expr)?),* $(,)?) => {$({
            #[allow(unused_variables)]
            let retention = RETENTION;
            $(let retention = $retention;)?
            $check(backend.pair(retention).await).await;
        })*};
    }
    run!(
        seqs_are_per_user_gapless_and_shared_by_nodes,
        idempotency_holds_across_nodes_and_batches,
        run_rules_hold_across_nodes,
        a_broken_batch_appends_nothing_and_names_the_first_index,
        history_reads_after_a_cursor_or_resets,
        frames_are_the_same_event_frames_on_every_node,
        live_logs_follow_other_nodes_and_cursors_resume,
        retention_bounds_the_log_and_the_ids: Retention { max_events: 3, ttl: Duration::from_secs(60) },
        the_retention_window_is_exact_at_any_size,
        events_older_than_the_ttl_are_not_served: Retention { max_events: 100, ttl: Duration::from_secs(1) },
        run_state_expires_a_ttl_after_the_users_last_event: Retention { max_events: 100, ttl: Duration::from_secs(1) },
        an_ended_run_is_forgotten_a_ttl_after_its_end: Retention { max_events: 100, ttl: Duration::from_secs(1) },
        scans_count_active_runs_and_find_silent_ones,
        tickets_are_taken_once_on_any_node,
        active_runs_are_snapshotted_whole_on_every_node,
        an_active_runs_events_older_than_the_ttl_stay_in_its_snapshot: Retention { max_events: 100, ttl: Duration::from_secs(1) },
    );
}

#[tokio::test]
async fn memory_engine_conforms() {
    all_checks(&Backend::Memory).await;
}

#[tokio::test]
async fn redis_engine_conforms() {
    all_checks(&Backend::redis()).await;
}

#[tokio::test]
async fn redis_cluster_engine_conforms() {
    let cluster = common::cluster::Cluster::start(3, 0);
    all_checks(&Backend::Redis { url: cluster.url(), cluster: true }).await;
}
