//! The Redis engine on a real Redis Cluster the test starts itself (3 masters from the installed
//! redis-server, tests/common/cluster.rs): two Herald nodes, users on every shard, cross-node
//! delivery and resume, appends that touch only the owning shard, and a slot migrated to another
//! master while events flow. (The engine-level guarantees run on a cluster too, in
//! tests/engine_conformance.rs.)

mod common;

use common::cluster::Cluster;
use common::{T, TestServer, names, seqs, unique_prefix};
use herald_client::{GOLDEN_EVENTS, golden_run};
use herald_protocol::Recovery;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

async fn node(cluster: &Cluster, prefix: &str) -> TestServer {
    TestServer::redis_at(cluster.settings(prefix)).await
}

/// `cmdstat_<command>` calls on the node at `port` since its stats were reset.
fn calls(cluster: &Cluster, port: u16, command: &str) -> u64 {
    let stats = cluster.cli(port, &["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn two_nodes_deliver_resume_and_keep_the_rules_for_users_on_every_shard() {
    let cluster = Cluster::start(3, 0);
    let prefix = unique_prefix("cluster");
    let (a, b) = (node(&cluster, &prefix).await, node(&cluster, &prefix).await);
    let users: Vec<String> = (0..9).map(|i| format!("user-{i}")).collect();
    let owners: HashSet<u16> = users.iter().map(|u| cluster.owner(cluster.slot(u))).collect();
    assert_eq!(owners.len(), 3, "the users are spread over all three masters");

    // Cross-node delivery, for every user: connected on A, published through B.
    for user in &users {
        let (mut on_a, opened) = a.open(user).await;
        assert_eq!(opened.recovery, Recovery::None);
        let receipts = b.publisher.publish_run(user, "r").await.unwrap();
        assert!(receipts[0].connections >= 1, "A subscribed to {user}'s shard channel");
        let events = on_a.events(5, T).await.unwrap();
        assert_eq!(
            (names(&events), seqs(&events)),
            (GOLDEN_EVENTS.map(String::from).to_vec(), vec![1, 2, 3, 4, 5])
        );
    }

    // Resume on the other node.
    let (mut on_a, opened) = a.open("resumer").await;
    let run = golden_run("resumer", "r");
    for event in &run[..2] {
        assert_eq!(a.publisher.post(event).await.unwrap().0, 200);
    }
    on_a.events(2, T).await.unwrap();
    let cursor = on_a.last_seq;
    on_a.abort();
    for event in &run[2..] {
        assert_eq!(b.publisher.post(event).await.unwrap().0, 200);
    }
    let (_on_b, resumed) = b.resume("resumer", cursor, &opened.epoch).await;
    assert_eq!(resumed.recovery, Recovery::Replayed);
    assert_eq!(seqs(&resumed.backlog), vec![3, 4, 5]);

    // Idempotency and run rules across nodes.
    let started = json!({"user_id": "rules", "event": "agent_started", "run_id": "r", "id": "once"});
    let (_, first) = a.publisher.post(&started).await.unwrap();
    let (status, again) = b.publisher.post(&started).await.unwrap();
    assert_eq!((status, &again["duplicate"], &again["seq"]), (200, &json!(true), &first["seq"]));
    let done = json!({"user_id": "rules", "event": "agent_completed", "run_id": "r"});
    assert_eq!(b.publisher.post(&done).await.unwrap().0, 200);
    let (status, body) = a
        .publisher
        .post(&json!({"user_id": "rules", "event": "agent_thinking", "run_id": "r"}))
        .await
        .unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_state")), "{body}");

    // A batch spanning users on different shards: one script per user, every one on its shard.
    let mut batch = golden_run("user-0", "r2");
    batch.extend(golden_run("user-1", "r2"));
    let (status, body) = b.publisher.post(&json!({ "events": batch })).await.unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_append_touches_only_the_shard_that_owns_the_user() {
    let cluster = Cluster::start(3, 0);
    let prefix = unique_prefix("shard");
    let (a, b) = (node(&cluster, &prefix).await, node(&cluster, &prefix).await);
    let (mut on_a, _) = a.open("lonely").await;
    let owner = cluster.owner(cluster.slot("lonely"));
    let masters = cluster.master_ports();
    for &port in &masters {
        assert_eq!(cluster.cli(port, &["CONFIG", "RESETSTAT"]), "OK");
    }
    for i in 0..5 {
        let body = json!({"user_id": "lonely", "event": "custom", "data": {"name": format!("n{i}")}});
        assert_eq!(b.publisher.post(&body).await.unwrap().0, 200);
    }
    assert_eq!(on_a.events(5, T).await.unwrap().len(), 5, "delivered through the owner's shard channel");
    for &port in &masters {
        let (scripts, sharded, broadcast) = (
            calls(&cluster, port, "evalsha"),
            calls(&cluster, port, "spublish"),
            calls(&cluster, port, "publish"),
        );
        if port == owner {
            assert_eq!((scripts, sharded, broadcast), (5, 5, 0), "the owner runs every append");
        } else {
            assert_eq!((scripts, sharded, broadcast), (0, 0, 0), "master {port} does not own the user");
        }
    }
}

#[tokio::test]
async fn a_slot_migrated_while_events_flow_loses_duplicates_and_reorders_nothing() {
    const EVENTS: u64 = 300;
    let cluster = Cluster::start(3, 0);
    let prefix = unique_prefix("migrate");
    let (a, b) = (node(&cluster, &prefix).await, node(&cluster, &prefix).await);
    let slot = cluster.slot("mover");
    let from = cluster.owner(slot);
    let to = cluster.master_ports().into_iter().find(|&p| p != from).unwrap();
    let (mut on_a, _) = a.open("mover").await;
    b.publisher.publish("mover", "agent_started", Some("r"), json!({})).await.unwrap();

    // A publisher through B; a 503 (nothing stored) is retried with the same id, as documented.
    let publisher = b.publisher.clone();
    let publishing = tokio::spawn(async move {
        let mut retries = 0;
        for i in 0..EVENTS {
            let body = json!({"user_id": "mover", "event": "agent_thinking", "run_id": "r", "id": format!("e{i}"),
                "data": {"text": format!("step {i}")}});
            loop {
                let (status, response) = publisher.post(&body).await.unwrap();
                if status == 200 {
                    break;
                }
                assert_eq!(status, 503, "{response}");
                retries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        retries
    });
    let mut seen = on_a.events(30, T).await.unwrap();
    let migrating = tokio::task::spawn_blocking(move || {
        cluster.migrate_slot(slot, to);
        cluster
    });
    while (seen.len() as u64) < EVENTS + 1 {
        seen.push(on_a.next_event(T).await.expect("every event arrives, on the same socket"));
    }
    let cluster = migrating.await.unwrap();
    let retries = publishing.await.unwrap();
    assert_eq!(cluster.owner(slot), to, "the slot moved");
    assert_eq!(seqs(&seen), (1..=EVENTS + 1).collect::<Vec<_>>(), "in order, once each ({retries} retries)");
    let texts: Vec<String> = seen[1..].iter().map(|e| e.data["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(texts, (0..EVENTS).map(|i| format!("step {i}")).collect::<Vec<_>>());
    // After the move, appends and delivery continue on the new owner.
    let receipt = b.publisher.publish("mover", "agent_completed", Some("r"), json!({})).await.unwrap();
    assert_eq!(receipt.seq, EVENTS + 2);
    assert_eq!(on_a.next_event(T).await.unwrap().seq, EVENTS + 2);
}
