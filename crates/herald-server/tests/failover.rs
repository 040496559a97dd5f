//! Redis failover: receipts with `--redis-wait-replicas`, publishing through a master's death
//! without restarting Herald (on a cluster, and on one address that moves to the promoted
//! replica), events lost with the old master never becoming a silent gap, and masters with too
//! few replicas for `--redis-wait-replicas` named when a node connects.

mod common;

use common::cluster::Cluster;
use common::servers::{PrivateRedis, Proxy};
use common::{T, TestServer, unique_prefix};
use herald_client::{ClientError, Connection};
use herald_protocol::Recovery;
use herald_server::Settings;
use herald_server::engine::RedisEngine;
use herald_server::engine::redis::RedisOptions;
use herald_server::log::Retention;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

fn thinking(user: &str, id: &str) -> serde_json::Value {
    json!({"user_id": user, "event": "agent_thinking", "run_id": "r", "id": id, "data": {"text": id}})
}

#[tokio::test]
async fn events_the_shared_log_lost_and_reused_make_clients_reset_not_skip() {
    let prefix = unique_prefix("diverge");
    let (a, b) = (
        TestServer::redis(&prefix, Settings::default()).await,
        TestServer::redis(&prefix, Settings::default()).await,
    );
    let (mut on_a, opened) = a.open("u").await;
    b.publisher.publish("u", "agent_started", Some("r"), json!({})).await.unwrap();
    for id in ["one", "two"] {
        assert_eq!(b.publisher.post(&thinking("u", id)).await.unwrap().0, 200);
    }
    assert_eq!(common::seqs(&on_a.events(3, T).await.unwrap()), [1, 2, 3]);
    // What a failover to a replica that missed the last append looks like: seq 3 is gone.
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli").args(["-u", &common::redis_url()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let meta = format!("{prefix}:{{u}}:meta");
    let log = format!("{prefix}:{{u}}:log");
    // The stream rebuilt without its last entry, as the replica holds it (XDEL + XSETID would
    // do on Redis 7.0, but Valkey refuses a last id below the highest deleted one).
    let drop_last = "local entries = redis.call('XRANGE', KEYS[1], '-', '+') redis.call('DEL', KEYS[1]) \
                     for _, e in ipairs(entries) do if e[1] ~= ARGV[1] then \
                     redis.call('XADD', KEYS[1], e[1], unpack(e[2])) end end return #entries";
    assert_eq!(cli(&["EVAL", drop_last, "1", &log, "3-0"]), "3");
    assert_eq!(cli(&["HSET", &meta, "seq", "2"]), "0");
    // The next event takes seq 3 again: node A, which delivered the lost one, must not pass it
    // off as the continuation.
    let (status, receipt) = b.publisher.post(&thinking("u", "three")).await.unwrap();
    assert_eq!(status, 200, "{receipt}");
    assert_eq!((receipt["seq"].as_u64(), receipt["epoch"].as_str()), (Some(3), Some(opened.epoch.as_str())));
    match on_a.next_frame(T).await {
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, 1012, "told to reconnect"),
        other => panic!("expected the socket to close after the log diverged, got {other:?}"),
    }
    // The node renews the epoch in Redis in the background (the runtime must keep running).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cli(&["HGET", &meta, "epoch"]) == opened.epoch {
        assert!(tokio::time::Instant::now() < deadline, "the epoch was never renewed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_c, resumed) = a.resume("u", 3, &opened.epoch).await;
    assert_eq!(resumed.recovery, Recovery::Reset, "the old cursor cannot resume");
    assert_ne!(resumed.epoch, opened.epoch);
    let next = b.publisher.publish("u", "agent_completed", Some("r"), json!({})).await.unwrap();
    assert_eq!(next.epoch, resumed.epoch, "appends continue in the new epoch");
}

#[tokio::test]
async fn a_master_dies_publishes_get_a_receipt_or_503_and_resume_after_promotion() {
    // Two replicas per master: after the failover the promoted one still has a replica to
    // confirm appends on (with one, every publish would be refused until a replica is added).
    let mut cluster = Cluster::start(3, 2);
    let prefix = unique_prefix("failover");
    let settings = || Settings { redis_wait_replicas: Some(1), ..cluster.settings(&prefix) };
    let a = TestServer::redis_at(settings()).await;
    let b = TestServer::redis_at(settings()).await;
    let (mut on_a, opened) = a.open("victim").await;
    b.publisher.publish("victim", "agent_started", Some("r"), json!({})).await.unwrap();
    let master = cluster.owner(cluster.slot("victim"));

    let (acknowledged, refused) = publish_through_a_failure(&b, || cluster.kill(master)).await;
    assert!(refused > 0, "the master's death was noticed");
    assert_ne!(cluster.owner(cluster.slot("victim")), master, "a replica took over");
    delivered_once_in_order_or_reset(&a, &mut on_a, &opened.epoch, &acknowledged).await;
}

/// Publishes `agent_thinking` events with ids to user "victim" through `node` until 20 are
/// acknowledged, running `fail` once the fifth is. Every answer must be a receipt or a
/// retryable 503 `not_ready` (then the same id is retried). Returns the acknowledged ids and
/// how many answers were 503.
async fn publish_through_a_failure(node: &TestServer, fail: impl FnOnce()) -> (Vec<String>, u32) {
    let (mut acknowledged, mut refused, mut fail) = (vec![], 0, Some(fail));
    let mut i = 0;
    while acknowledged.len() < 20 {
        let id = format!("e{i}");
        let (status, body) = node.publisher.post(&thinking("victim", &id)).await.unwrap();
        match status {
            200 => {
                acknowledged.push(id);
                i += 1;
            }
            503 => {
                assert_eq!(body["error"]["code"], "not_ready", "{body}");
                refused += 1;
                assert!(refused < 600, "publishing never resumed after the failure");
                tokio::time::sleep(Duration::from_millis(50)).await; // retry the same id
            }
            other => panic!("publish answered {other}: {body}"),
        }
        if acknowledged.len() == 5
            && let Some(fail) = fail.take()
        {
            fail();
        }
    }
    (acknowledged, refused)
}

/// Every acknowledged event reaches `client` (of user "victim", on `node`) once, in order, after
/// the started event — or, if the node had to let go of the log (events acknowledged before the
/// failure were lost with the old master), the client is told to reconnect and resets.
async fn delivered_once_in_order_or_reset(
    node: &TestServer,
    client: &mut Connection,
    epoch: &str,
    acknowledged: &[String],
) {
    let mut seen = vec![];
    loop {
        match client.next_event(T).await {
            Ok(event) => {
                seen.push(event.data["text"].as_str().unwrap_or("").to_owned());
                if seen.len() == acknowledged.len() + 1 {
                    break;
                }
            }
            Err(ClientError::Closed { code: 1012, .. }) => {
                let (_c, resumed) = node.resume("victim", client.last_seq, epoch).await;
                assert_eq!(resumed.recovery, Recovery::Reset, "no resume across lost events");
                return;
            }
            Err(e) => panic!("after {} events: {e}", seen.len()),
        }
    }
    assert_eq!(seen[1..], acknowledged[..], "acknowledged events survive, once each, in order");
}

#[tokio::test]
async fn with_wait_replicas_an_append_no_replica_confirmed_gets_503_not_a_receipt() {
    // The shared test Redis has no replicas: WAIT can never confirm.
    let node = TestServer::redis(
        &unique_prefix("wait"),
        Settings { redis_wait_replicas: Some(1), ..Settings::default() },
    )
    .await;
    let started = std::time::Instant::now();
    let body = json!({"user_id": "w", "event": "agent_started", "run_id": "r", "id": "x"});
    let (status, body) = node.publisher.post(&body).await.unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("not_ready")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("replicas"), "{body}");
    assert!(started.elapsed() >= Duration::from_millis(900), "WAIT gave the replica its second");
}

#[tokio::test]
async fn with_wait_replicas_a_retried_id_no_replica_confirmed_gets_503_not_a_duplicate_receipt() {
    // The first try was appended on the master but never confirmed: a retry, on the same node
    // or another, must not be acknowledged as a duplicate of it either.
    let prefix = unique_prefix("wait-retry");
    let settings = || Settings { redis_wait_replicas: Some(1), ..Settings::default() };
    let (a, b) = (TestServer::redis(&prefix, settings()).await, TestServer::redis(&prefix, settings()).await);
    let body = json!({"user_id": "w", "event": "agent_started", "run_id": "r", "id": "x"});
    for (node, attempt) in [(&a, "first try"), (&a, "retry on the same node"), (&b, "retry on another node")]
    {
        let (status, answer) = node.publisher.post(&body).await.unwrap();
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (503, Some("not_ready")),
            "{attempt}: {answer}"
        );
    }
}

#[tokio::test]
async fn a_master_behind_one_address_replaced_by_its_replica_resumes_publishing_without_restart() {
    // Redis without cluster mode behind one address (a managed service's primary endpoint, or a
    // proxy that follows Sentinel): the master dies, its replica is promoted and the address
    // moves to it. Herald is not restarted.
    let (master, replica) = PrivateRedis::with_replica().await;
    let proxy = Proxy::start(master.port).await;
    let prefix = unique_prefix("endpoint");
    let settings = || Settings {
        engine: Some("redis".into()),
        redis_url: Some(format!("redis://127.0.0.1:{}/0", proxy.port)),
        redis_prefix: Some(prefix.clone()),
        ..Settings::default()
    };
    let (a, b) = (TestServer::redis_at(settings()).await, TestServer::redis_at(settings()).await);
    let (mut on_a, opened) = a.open("victim").await;
    b.publisher.publish("victim", "agent_started", Some("r"), json!({})).await.unwrap();

    let (acknowledged, _) = publish_through_a_failure(&b, || {
        master.stop();
        assert_eq!(replica.cli(&["REPLICAOF", "NO", "ONE"]), "OK");
        proxy.switch(replica.port);
    })
    .await;
    delivered_once_in_order_or_reset(&a, &mut on_a, &opened.epoch, &acknowledged).await;
}

/// Connects an engine with `--redis-wait-replicas wanted` and asks which masters fall short.
async fn short_masters(url: &str, cluster: bool, wanted: u32) -> Vec<(String, u32)> {
    let options = RedisOptions {
        url: url.into(),
        prefix: unique_prefix("replicas"),
        cluster,
        wait_replicas: wanted,
        max_local_bytes: 0,
    };
    let retention = Retention { max_events: 10, ttl: Duration::from_secs(60) };
    let engine = RedisEngine::connect_with(&options, retention).await.expect("redis reachable");
    let short = engine.masters_short_of_replicas().await.expect("replicas counted");
    short.into_iter().map(|m| (m.master, m.replicas)).collect()
}

#[tokio::test]
async fn masters_with_fewer_replicas_than_wait_replicas_are_named_at_startup() {
    // The shared test Redis has no replica.
    assert_eq!(short_masters(&common::redis_url(), false, 1).await, [("the Redis server".to_owned(), 0)]);
    let (master, replica) = PrivateRedis::with_replica().await;
    let url = format!("redis://127.0.0.1:{}", master.port);
    assert_eq!(short_masters(&url, false, 1).await, [], "one replica meets 1");
    assert_eq!(short_masters(&url, false, 2).await, [("the Redis server".to_owned(), 1)]);
    assert_eq!(short_masters(&url, false, 0).await, [], "nothing to wait for");
    drop(replica);
}

#[tokio::test]
async fn cluster_masters_with_fewer_replicas_than_wait_replicas_are_named_at_startup() {
    let cluster = Cluster::start(3, 1);
    assert_eq!(short_masters(&cluster.url(), true, 1).await, [], "every master has its replica");
    let mut short = short_masters(&cluster.url(), true, 2).await;
    short.sort();
    let mut masters: Vec<(String, u32)> =
        cluster.url().split(',').map(|u| (u.trim_start_matches("redis://").to_owned(), 1)).collect();
    masters.sort();
    assert_eq!(short, masters, "each of the three masters has one replica of the two wanted");
}
