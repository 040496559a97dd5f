//! Chaos: 50 users, concurrent publishers, clients dropping and resuming at random points well
//! over a thousand times — on one memory node, and on two Redis nodes with every reconnect and
//! publish going to a random node. At the end every client holds every event of its user exactly
//! once, in seq order. Seeded: set HERALD_CHAOS_SEED to replay a failing run (the seed is printed).

mod common;

use common::{T, TestServer};
use herald_client::Connection;
use herald_protocol::Recovery;
use herald_protocol::frame::EventFrame;
use herald_server::Settings;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const USERS: usize = 50;
const RUNS_PER_USER: usize = 6;
const EVENTS_PER_USER: u64 = (RUNS_PER_USER * 5) as u64;
const MIN_RECONNECTS_PER_USER: u64 = 25;

#[derive(Default)]
struct Tally {
    received: u64,
    last: u64,
    lost: u64,
    duplicated: u64,
    foreign: u64,
}

impl Tally {
    fn take(&mut self, user: &str, e: &EventFrame) {
        if e.user_id != user {
            self.foreign += 1;
        } else if e.seq <= self.last {
            self.duplicated += 1;
        } else {
            self.lost += e.seq - self.last - 1;
            self.last = e.seq;
            self.received += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_random_disconnects_lose_and_duplicate_nothing() {
    let server = TestServer::with(Settings { history_size: Some(10_000), ..Default::default() }).await;
    chaos(vec![Arc::new(server)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_across_two_redis_nodes_loses_and_duplicates_nothing() {
    let prefix = common::unique_prefix("chaos");
    let settings = || Settings { history_size: Some(10_000), ..Default::default() };
    // (One append script per user, as on Redis Cluster, is exercised by tests/cluster.rs.)
    let a = TestServer::redis(&prefix, settings()).await;
    let b = TestServer::redis(&prefix, settings()).await;
    chaos(vec![Arc::new(a), Arc::new(b)]).await;
}

async fn chaos(nodes: Vec<Arc<TestServer>>) {
    let seed: u64 =
        std::env::var("HERALD_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("chaos seed: {seed} (HERALD_CHAOS_SEED={seed} to replay)");
    let users: Vec<String> = (0..USERS).map(|i| format!("chaos-{i}")).collect();

    // Publishers: 4 tasks interleaving single-event publishes of every user's runs.
    let publishers: Vec<_> = (0..4)
        .map(|k| {
            let nodes = nodes.clone();
            let mine: Vec<String> = users.iter().skip(k).step_by(4).cloned().collect();
            tokio::spawn(async move {
                let mut turn = k;
                for run in 0..RUNS_PER_USER {
                    for step in 0..5 {
                        for user in &mine {
                            let event = &herald_client::golden_run(user, &format!("run-{run}"))[step];
                            turn += 1;
                            let node = &nodes[turn % nodes.len()];
                            let (status, body) = node.publisher.post(event).await.unwrap();
                            assert_eq!(status, 200, "{body}");
                        }
                    }
                }
            })
        })
        .collect();

    let reconnects = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let nodes = nodes.clone();
            let user = user.clone();
            let reconnects = reconnects.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
                let token = nodes[0].token(&user);
                let mut tally = Tally::default();
                let mut epoch: Option<String> = None;
                let mut mine = 0;
                while tally.received < EVENTS_PER_USER || mine < MIN_RECONNECTS_PER_USER {
                    let cursor = epoch.as_deref().map(|e| (tally.last, e));
                    let server = &nodes[rng.random_range(0..nodes.len())];
                    let (mut conn, opened) = Connection::open(&server.url, &token, cursor, T).await.unwrap();
                    if epoch.is_some() {
                        assert_eq!(
                            opened.recovery,
                            Recovery::Replayed,
                            "user {user}: resume was not honoured"
                        );
                    }
                    epoch.get_or_insert(opened.epoch.clone());
                    // The first connection (no cursor) gets active runs as a snapshot; start from 0.
                    if opened.recovery == Recovery::None {
                        tally.last = 0;
                        let (mut c, replay) =
                            Connection::open(&server.url, &token, Some((0, &opened.epoch)), T).await.unwrap();
                        std::mem::swap(&mut conn, &mut c);
                        c.abort();
                        replay.backlog.iter().for_each(|e| tally.take(&user, e));
                    } else {
                        opened.backlog.iter().for_each(|e| tally.take(&user, e));
                    }
                    let live = rng.random_range(0..=2u64).min(EVENTS_PER_USER - tally.received);
                    for _ in 0..live {
                        let e = conn.next_event(T).await.unwrap();
                        tally.take(&user, &e);
                    }
                    if rng.random_bool(0.5) {
                        conn.abort()
                    } else {
                        conn.close().await
                    }
                    mine += 1;
                    reconnects.fetch_add(1, Ordering::Relaxed);
                }
                tally
            })
        })
        .collect();

    for p in publishers {
        p.await.unwrap();
    }
    let (mut lost, mut duplicated, mut foreign, mut received) = (0, 0, 0, 0);
    for c in clients {
        let t = c.await.unwrap();
        lost += t.lost;
        duplicated += t.duplicated;
        foreign += t.foreign;
        received += t.received;
    }
    let reconnects = reconnects.load(Ordering::Relaxed);
    eprintln!(
        "chaos on {} node(s): {received} events received by {USERS} users over {reconnects} reconnects; \
         lost {lost}, duplicated {duplicated}, foreign {foreign} (seed {seed})",
        nodes.len()
    );
    assert!(reconnects >= 1000);
    assert_eq!((lost, duplicated, foreign), (0, 0, 0), "seed {seed}");
    assert_eq!(received, USERS as u64 * EVENTS_PER_USER, "seed {seed}");
}
