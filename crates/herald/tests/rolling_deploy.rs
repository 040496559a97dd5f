//! A rolling deploy loses nothing: two real `herald serve` nodes on one Redis, 10 users whose
//! clients move to the other node when their socket closes (resuming from their cursor), and a
//! publisher that sends every event to whichever node is up, retrying on the other node with
//! the same event id. SIGTERM node A, start it again, SIGTERM node B, while events flow: every
//! acknowledged event reaches its user exactly once, in order, and no resume is answered with a
//! reset.

mod common;

use common::Serve;
use herald_client::{ClientError, Connection, sign_token};
use herald_protocol::{Recovery, ServerFrame};
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const SECRET: &str = "rolling-deploy-secret-0123456789";
const API_KEY: &str = "rolling-deploy-key";
const USERS: usize = 10;
const EVENTS: usize = 980;
/// The publisher stops node A after this many acknowledged events…
const STOP_A_AT: usize = 200;
/// …and does not go past this one until A is back up, so A's restart happens mid-stream.
const A_BACK_BY: usize = 350;
/// Node B is stopped after this many…
const STOP_B_AT: usize = 550;
/// …and the rest is published only once B is gone.
const B_GONE_BY: usize = 700;
/// The longest wait for any one frame or handshake.
const FRAME_TIMEOUT: Duration = Duration::from_secs(20);
/// Between attempts on a node that refused (draining, or not listening any more).
const RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// What the load balancer in front of the nodes routes to: the nodes that are up and not
/// draining, in order.
#[derive(Default)]
struct Balancer {
    up: Mutex<Vec<String>>,
    turn: AtomicUsize,
}

impl Balancer {
    /// A node to use: round-robin over the nodes up, avoiding `not` (the node that just failed
    /// us) when another one is up.
    fn pick(&self, not: Option<&str>) -> String {
        let up = self.up.lock().unwrap();
        assert!(!up.is_empty(), "a rolling deploy always keeps one node up");
        let others: Vec<&String> = up.iter().filter(|u| Some(u.as_str()) != not).collect();
        let choices = if others.is_empty() { up.iter().collect() } else { others };
        choices[self.turn.fetch_add(1, Ordering::Relaxed) % choices.len()].clone()
    }

    fn add(&self, url: &str) {
        self.up.lock().unwrap().push(url.to_owned());
    }

    fn remove(&self, url: &str) {
        self.up.lock().unwrap().retain(|u| u != url);
    }
}

/// What one user's client saw.
#[derive(Debug, Default)]
struct ClientLog {
    /// Event ids, in the order received.
    ids: Vec<String>,
    /// Resumes answered with `recovery: reset`.
    resets: usize,
    /// Seq gaps, repeats or regressions seen on the socket.
    seq_errors: Vec<String>,
    /// Sockets the client opened after its first one (moves to the other node).
    moves: usize,
}

/// One user's client: follows its log across nodes until it has `target` events.
async fn client(
    user: String,
    balancer: Arc<Balancer>,
    ready: Arc<tokio::sync::Barrier>,
    mut target: watch::Receiver<Option<Vec<usize>>>,
    index: usize,
) -> ClientLog {
    let token = sign_token(SECRET, &user, Duration::from_secs(3600));
    let mut log = ClientLog::default();
    let mut cursor: Option<(u64, String)> = None;
    let mut failed: Option<String> = None;
    let mut refusals = 0;
    loop {
        let url = balancer.pick(failed.as_deref());
        let resume = cursor.as_ref().map(|(seq, epoch)| (*seq, epoch.as_str()));
        let (mut conn, opened) = match Connection::open(&url, &token, resume, FRAME_TIMEOUT).await {
            Ok(opened) => opened,
            Err(e) => {
                // The node stopped listening or is draining: try another one.
                refusals += 1;
                assert!(refusals < 500, "{user}: no node accepts the socket: {e}");
                failed = Some(url);
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            }
        };
        refusals = 0;
        if cursor.is_some() {
            log.moves += 1;
            if opened.recovery == Recovery::Reset {
                log.resets += 1;
            }
        }
        // A first socket starts at the log's head; a moved one resumes at its cursor.
        let mut last_seq = cursor.as_ref().map_or(opened.seq, |c| c.0);
        let epoch = opened.epoch.clone();
        for e in opened.backlog {
            record(&mut log, &mut last_seq, e.seq, e.id);
        }
        if cursor.is_none() {
            ready.wait().await;
        }
        cursor = Some((last_seq, epoch.clone()));
        loop {
            let done = target.borrow().as_ref().is_some_and(|t| log.ids.len() >= t[index]);
            if done {
                conn.close().await;
                return log;
            }
            let frame = tokio::select! {
                frame = conn.next_frame(FRAME_TIMEOUT) => frame,
                _ = target.changed() => continue,
            };
            match frame {
                Ok(ServerFrame::Event(e)) => {
                    record(&mut log, &mut last_seq, e.seq, e.id);
                    cursor = Some((last_seq, epoch.clone()));
                }
                Ok(_) => {}
                Err(ClientError::Timeout) => panic!(
                    "{user}: no frame for {FRAME_TIMEOUT:?} on {url} after {} events (at seq {last_seq}, \
                     {} moves; seq errors {:?})",
                    log.ids.len(),
                    log.moves,
                    log.seq_errors
                ),
                Err(_) => {
                    // Closed (1001 on a drain) or dropped: move to the other node.
                    failed = Some(url.clone());
                    break;
                }
            }
        }
    }
}

fn record(log: &mut ClientLog, last_seq: &mut u64, seq: u64, id: String) {
    if seq != *last_seq + 1 {
        log.seq_errors.push(format!("seq {seq} after {last_seq} (event {id})"));
    }
    *last_seq = (*last_seq).max(seq);
    log.ids.push(id);
}

/// Publishes event `i` to whichever node is up until one acknowledges it (same id on every
/// attempt, so a retry of an event that did land is a duplicate, not a second event).
async fn publish(http: &reqwest::Client, balancer: &Balancer, user: &str, i: usize) -> String {
    let id = format!("{user}:{i}");
    let body = json!({"user_id": user, "event": "custom", "id": id, "data": {"name": "rolling", "value": i}});
    let mut failed: Option<String> = None;
    for _ in 0..500 {
        let url = balancer.pick(failed.as_deref());
        let sent = http.post(format!("{url}/v1/events")).bearer_auth(API_KEY).json(&body).send().await;
        match sent {
            Ok(response) if response.status().is_success() => return id,
            Ok(response) if response.status().is_client_error() => {
                panic!("{id} refused: {} {}", response.status(), response.text().await.unwrap_or_default())
            }
            _ => {
                failed = Some(url);
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
    }
    panic!("no node acknowledged {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_restarting_each_node_loses_nothing() {
    let prefix = common::unique_prefix("rolling");
    let a = Serve::redis_node(SECRET, API_KEY, &prefix);
    let b = Serve::redis_node(SECRET, API_KEY, &prefix);
    let balancer = Arc::new(Balancer::default());
    balancer.add(&a.url);
    balancer.add(&b.url);

    let users: Vec<String> = (0..USERS).map(|u| format!("rolling-u{u}")).collect();
    let (target_tx, target_rx) = watch::channel(None);
    let ready = Arc::new(tokio::sync::Barrier::new(USERS + 1));
    let clients: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, u)| tokio::spawn(client(u.clone(), balancer.clone(), ready.clone(), target_rx.clone(), i)))
        .collect();
    // Every client has its first socket open before the first event.
    ready.wait().await;

    // The deploy, driven by how far the publisher got.
    let (progress_tx, mut progress_rx) = watch::channel(0usize);
    let (phase_tx, mut phase_rx) = watch::channel(0u8);
    let deploy = {
        let balancer = balancer.clone();
        let prefix = prefix.clone();
        tokio::spawn(async move {
            progress_rx.wait_for(|n| *n >= STOP_A_AT).await.unwrap();
            balancer.remove(&a.url);
            let exit = tokio::task::spawn_blocking(move || a.terminate()).await.unwrap();
            assert!(exit.success(), "node A exits 0 after its drain: {exit:?}");
            let a2 = Serve::redis_node(SECRET, API_KEY, &prefix);
            balancer.add(&a2.url);
            phase_tx.send(1).unwrap();
            progress_rx.wait_for(|n| *n >= STOP_B_AT).await.unwrap();
            balancer.remove(&b.url);
            let exit = tokio::task::spawn_blocking(move || b.terminate()).await.unwrap();
            assert!(exit.success(), "node B exits 0 after its drain: {exit:?}");
            phase_tx.send(2).unwrap();
            a2
        })
    };

    let http = reqwest::Client::new();
    let mut acked: Vec<Vec<String>> = vec![Vec::new(); USERS];
    for i in 0..EVENTS {
        if i == A_BACK_BY {
            phase_rx.wait_for(|p| *p >= 1).await.unwrap();
        }
        if i == B_GONE_BY {
            phase_rx.wait_for(|p| *p >= 2).await.unwrap();
        }
        let u = i % USERS;
        acked[u].push(publish(&http, &balancer, &users[u], i).await);
        progress_tx.send_replace(i + 1);
    }
    let a2 = deploy.await.expect("the deploy steps succeed");
    target_tx.send(Some(acked.iter().map(Vec::len).collect())).unwrap();

    let mut total = 0;
    for (u, handle) in clients.into_iter().enumerate() {
        let log = tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .unwrap_or_else(|_| panic!("{} never received all its events", users[u]))
            .unwrap();
        let unique: HashSet<&String> = log.ids.iter().collect();
        assert_eq!(unique.len(), log.ids.len(), "{}: duplicated events: {:?}", users[u], log.ids);
        assert_eq!(log.ids, acked[u], "{}: lost or reordered events", users[u]);
        assert!(log.seq_errors.is_empty(), "{}: {:?}", users[u], log.seq_errors);
        assert_eq!(log.resets, 0, "{}: a resume was answered with reset", users[u]);
        assert!(log.moves >= 1, "{}: its socket never moved, so the deploy was not exercised", users[u]);
        total += log.ids.len();
    }
    assert_eq!(total, EVENTS, "every event acknowledged and received once");
    drop(a2);
}
