//! The operator API and token refresh on real sockets: disconnect (with revocation), presence,
//! runs and info — on the memory engine (one node) and on Redis (two nodes sharing a prefix,
//! where an order taken by one node must reach the sockets of the other) — and the `refresh`
//! frame, plus malformed input for every new path.

mod common;

use common::{API_KEY, SECRET, T, TestServer, unique_prefix};
use herald_client::{ClientError, Connection};
use herald_protocol::{CloseCode, ServerFrame};
use herald_server::Settings;
use herald_server::config::Secret;
use serde_json::{Value, json};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A token for `sub` with explicit claims (`iat: None` leaves the claim out).
fn token_with(sub: &str, iat: Option<u64>, exp: u64) -> String {
    let mut claims = json!({"sub": sub, "exp": exp});
    if let Some(iat) = iat {
        claims["iat"] = json!(iat);
    }
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn settings() -> Settings {
    Settings { admin_token: Some(Secret::new(ADMIN_TOKEN)), ..Settings::default() }
}

async fn memory() -> TestServer {
    TestServer::with(settings()).await
}

async fn two_redis_nodes(name: &str, extra: Settings) -> (TestServer, TestServer) {
    let prefix = unique_prefix(name);
    let node = || Settings { admin_token: Some(Secret::new(ADMIN_TOKEN)), ..extra.clone() };
    (TestServer::redis(&prefix, node()).await, TestServer::redis(&prefix, node()).await)
}

/// Two nodes on the Redis Cluster `cluster`, sharing the key prefix `prefix`.
async fn two_cluster_nodes(cluster: &common::cluster::Cluster, prefix: &str) -> (TestServer, TestServer) {
    (
        TestServer::redis_at(cluster.settings(prefix)).await,
        TestServer::redis_at(cluster.settings(prefix)).await,
    )
}

/// Sends an operator request with `credential` (`None`: no Authorization header).
async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    credential: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = server.http().request(method, format!("{}{path}", server.url));
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}")))
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    call(server, reqwest::Method::GET, path, Some(API_KEY), None).await
}

async fn disconnect(server: &TestServer, user: &str, body: Value) -> (u16, Value) {
    call(
        server,
        reqwest::Method::POST,
        &format!("/v1/users/{user}/disconnect"),
        Some(API_KEY),
        Some(&body.to_string()),
    )
    .await
}

/// Polls `check` until it returns `Some` (what other nodes record arrives asynchronously).
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until presence (as seen from `server`) shows `n` connections of `user`.
async fn presence_is(server: &TestServer, user: &str, n: u64) -> Value {
    eventually("presence", || async {
        let (status, body) = get(server, &format!("/v1/users/{user}/presence")).await;
        assert_eq!(status, 200, "{body}");
        (body["connections"] == n).then_some(body)
    })
    .await
}

/// The close code and reason that end `conn`, skipping frames before it.
async fn closed(conn: &mut Connection) -> (u16, String) {
    loop {
        match conn.next_frame(T).await {
            Ok(_) => continue,
            Err(ClientError::Closed { code, reason }) => return (code, reason),
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

/// A ping answered: the socket is still open and serving.
async fn still_open(conn: &mut Connection) {
    conn.send_text(r#"{"type":"ping"}"#).await.unwrap();
    loop {
        match conn.next_frame(T).await.unwrap() {
            ServerFrame::Pong => return,
            ServerFrame::Event(_) => continue,
            other => panic!("expected pong, got {other:?}"),
        }
    }
}

async fn refresh(conn: &mut Connection, token: &str) -> ServerFrame {
    conn.send_text(json!({"type": "refresh", "token": token}).to_string()).await.unwrap();
    conn.next_frame(T).await.unwrap()
}

// ---- disconnect and revocation ----------------------------------------------------------

/// Disconnect taken by `b` closes every socket of the user on `a` and `b` with 4003 and the
/// reason, leaves other users alone, and reports how many it closed.
async fn disconnect_closes_every_socket(a: &TestServer, b: &TestServer) {
    let (mut on_a, _) = a.open("alice").await;
    let (mut on_b, _) = b.open("alice").await;
    let (mut bob, _) = a.open("bob").await;
    presence_is(b, "alice", 2).await;
    let (status, body) = disconnect(b, "alice", json!({"reason": "logged out"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"user_id": "alice", "disconnected": 2, "revoke_before": null}));
    for conn in [&mut on_a, &mut on_b] {
        assert_eq!(closed(conn).await, (CloseCode::DISCONNECTED, "logged out".to_owned()));
    }
    still_open(&mut bob).await;
    presence_is(a, "alice", 0).await;
    // Without a revocation, the same token connects again.
    a.open("alice").await;
}

/// With `revoke_before`, tokens issued before it are refused on every node (handshake and
/// refresh); newer ones pass; a token without `iat` is refused while the revocation lasts.
async fn revocation_refuses_older_tokens_everywhere(a: &TestServer, b: &TestServer) {
    let now = now_s();
    let old = token_with("carol", Some(now - 100), now + 3600);
    let (mut on_a, _) = Connection::open(&a.url, &old, None, T).await.unwrap();
    let (status, body) = disconnect(b, "carol", json!({"reason": "banned", "revoke_before": now - 10})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoke_before"], now - 10);
    assert_eq!(closed(&mut on_a).await.0, CloseCode::DISCONNECTED);
    for node in [a, b] {
        match Connection::open(&node.url, &old, None, T).await {
            Err(ClientError::Refused { status: 401, body }) => assert!(body.contains("revoked"), "{body}"),
            other => panic!("old token must be refused, got {:?}", other.map(|_| ())),
        }
        let undated = token_with("carol", None, now + 3600);
        match Connection::open(&node.url, &undated, None, T).await {
            Err(ClientError::Refused { status: 401, body }) => assert!(body.contains("iat"), "{body}"),
            other => panic!("a token without iat must be refused, got {:?}", other.map(|_| ())),
        }
    }
    let fresh = token_with("carol", Some(now), now + 3600);
    let (mut on_b, _) = Connection::open(&b.url, &fresh, None, T).await.unwrap();
    match refresh(&mut on_b, &old).await {
        ServerFrame::Error { code, .. } => assert_eq!(code, "token_revoked"),
        other => panic!("expected token_revoked, got {other:?}"),
    }
    still_open(&mut on_b).await;
    // Other users are not affected.
    let dave = token_with("dave", None, now + 3600);
    Connection::open(&a.url, &dave, None, T).await.unwrap();
}

#[tokio::test]
async fn memory_disconnect_closes_every_socket_of_the_user() {
    let server = memory().await;
    disconnect_closes_every_socket(&server, &server).await;
}

#[tokio::test]
async fn memory_revocation_refuses_older_tokens() {
    let server = memory().await;
    revocation_refuses_older_tokens_everywhere(&server, &server).await;
}

#[tokio::test]
async fn redis_disconnect_on_one_node_closes_sockets_on_both() {
    let (a, b) = two_redis_nodes("disconnect", Settings::default()).await;
    disconnect_closes_every_socket(&a, &b).await;
}

#[tokio::test]
async fn redis_cluster_disconnect_revocation_and_presence_work_across_nodes() {
    let cluster = common::cluster::Cluster::start(3, 0);
    let prefix = unique_prefix("operator-cluster");
    let (a, b) = two_cluster_nodes(&cluster, &prefix).await;
    disconnect_closes_every_socket(&a, &b).await;
    revocation_refuses_older_tokens_everywhere(&a, &b).await;
    presence_counts_per_node(&a, &b, 2).await;
}

#[tokio::test]
async fn redis_cluster_orders_still_reach_every_node_after_the_control_channels_master_fails_over() {
    // Operator orders travel on one sharded channel: when its master dies and a replica takes
    // over, every node must subscribe to it again, there, without a restart.
    let mut cluster = common::cluster::Cluster::start(3, 1);
    let prefix = unique_prefix("operator-failover");
    let (a, b) = two_cluster_nodes(&cluster, &prefix).await;
    let slot = cluster.slot(&format!("{prefix}:control"));
    let master = cluster.owner(slot);
    cluster.kill(master);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cluster.owner_now(slot).is_none_or(|owner| owner == master) {
        assert!(std::time::Instant::now() < deadline, "no replica took over slot {slot}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ready again within seconds (connections whose map still has the dead master are made
    // anew at the next sweep, every 5 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for node in [&a, &b] {
        while node.http().get(format!("{}/health/ready", node.url)).send().await.unwrap().status() != 200 {
            assert!(std::time::Instant::now() < deadline, "a node stayed not ready after the failover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    disconnect_closes_every_socket(&a, &b).await;
}

#[tokio::test]
async fn redis_revocation_on_one_node_is_enforced_by_the_other() {
    let (a, b) = two_redis_nodes("revoke", Settings::default()).await;
    revocation_refuses_older_tokens_everywhere(&a, &b).await;
}

// ---- presence, runs, info -----------------------------------------------------------------

async fn presence_counts_per_node(a: &TestServer, b: &TestServer, nodes: usize) {
    let before = SystemTime::now();
    let _c1 = a.open("erin").await;
    let _c2 = a.open("erin").await;
    let _c3 = b.open("erin").await;
    let body = presence_is(a, "erin", 3).await;
    let list = body["nodes"].as_array().unwrap();
    assert_eq!(list.len(), nodes, "{body}");
    let counts: u64 = list.iter().map(|n| n["connections"].as_u64().unwrap()).sum();
    assert_eq!(counts, 3);
    for node in list {
        let since = humantime::parse_rfc3339(node["since"].as_str().unwrap()).unwrap();
        assert!(since + Duration::from_secs(1) >= before, "{node}");
        assert!(!node["node"].as_str().unwrap().is_empty());
    }
    let (_, nobody) = get(a, "/v1/users/nobody/presence").await;
    assert_eq!(nobody, json!({"user_id": "nobody", "connections": 0, "nodes": []}));
}

#[tokio::test]
async fn memory_presence_counts_connections() {
    let server = memory().await;
    presence_counts_per_node(&server, &server, 1).await;
}

#[tokio::test]
async fn redis_presence_sees_both_nodes() {
    let (a, b) = two_redis_nodes("presence", Settings::default()).await;
    presence_counts_per_node(&a, &b, 2).await;
}

/// A node that drains (a deploy) removes the presence records of the sockets it closed: nodes
/// are new on every start, so a record left behind would never be rewritten, and other nodes
/// would count its connections until its last report went stale.
#[tokio::test]
async fn a_drained_node_takes_its_presence_records_with_it() {
    let prefix = unique_prefix("presence-drain");
    let node = || Settings { admin_token: Some(Secret::new(ADMIN_TOKEN)), ..Settings::default() };
    let (a, b) = (TestServer::redis(&prefix, node()).await, TestServer::redis(&prefix, node()).await);
    let _on_a = a.open("ivy").await;
    let _on_b = b.open("ivy").await;
    presence_is(&a, "ivy", 2).await;
    b.stop().await;

    let (_, body) = get(&a, "/v1/users/ivy/presence").await;
    assert_eq!(
        (body["connections"].as_u64(), body["nodes"].as_array().map(Vec::len)),
        (Some(1), Some(1)),
        "{body}"
    );
    let redis = redis::Client::open(common::redis_url()).unwrap();
    let mut con = redis.get_multiplexed_async_connection().await.unwrap();
    let records: u64 =
        redis::cmd("HLEN").arg(format!("{prefix}:{{ivy}}:presence")).query_async(&mut con).await.unwrap();
    assert_eq!(records, 1, "only the live node's record is left");
}

/// Active runs are listed newest first; a run silent for `run_stall_s` is listed as stalled;
/// an ended run is not listed.
async fn runs_are_listed(server: &TestServer) {
    for (user, run) in [("fay", "r1"), ("gus", "r2")] {
        let body = json!({"user_id": user, "event": "agent_started", "run_id": run});
        assert_eq!(server.publisher.post(&body).await.unwrap().0, 200);
    }
    server.publisher.publish_run("hal", "done").await.unwrap();
    let (status, active) = get(server, "/v1/runs?state=active&limit=10").await;
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["state"], "active");
    assert_eq!(active["total"], 2, "{active}");
    let mut ids: Vec<&str> =
        active["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert!(is_sorted(&active, |a, b| a >= b), "newest first: {active}");
    ids.sort_unstable();
    assert_eq!(ids, ["r1", "r2"], "the ended run is not listed");
    let (_, one) = get(server, "/v1/runs?limit=1").await;
    assert_eq!((one["total"].as_u64(), one["runs"].as_array().unwrap().len()), (Some(2), 1));
    // run_stall_s is 1: both runs become stalled.
    let stalled = eventually("stalled runs", || async {
        let (_, body) = get(server, "/v1/runs?state=stalled").await;
        (body["total"] == 2).then_some(body)
    })
    .await;
    assert!(is_sorted(&stalled, |a, b| a <= b), "longest silent first: {stalled}");
    for run in stalled["runs"].as_array().unwrap() {
        let owner = if run["run_id"] == "r1" { "fay" } else { "gus" };
        assert_eq!(run["user_id"], owner, "{run}");
        assert!(run["silent_s"].as_u64().unwrap() >= 1, "{run}");
    }
}

/// True when the runs' `last_event_at` times are in the order `ok(earlier item, later item)`.
fn is_sorted(list: &Value, ok: impl Fn(SystemTime, SystemTime) -> bool) -> bool {
    let times: Vec<SystemTime> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| humantime::parse_rfc3339(r["last_event_at"].as_str().unwrap()).unwrap())
        .collect();
    times.windows(2).all(|w| ok(w[0], w[1]))
}

#[tokio::test]
async fn memory_runs_lists_active_and_stalled() {
    let server = TestServer::with(Settings { run_stall_s: Some(1), ..settings() }).await;
    runs_are_listed(&server).await;
}

#[tokio::test]
async fn redis_runs_lists_active_and_stalled() {
    let prefix = unique_prefix("runs");
    let server = TestServer::redis(&prefix, Settings { run_stall_s: Some(1), ..settings() }).await;
    runs_are_listed(&server).await;
}

async fn info_sees_every_node(a: &TestServer, b: &TestServer, nodes: usize) {
    let (mut conn, _) = a.open("ivy").await;
    let _other = b.open("jon").await;
    a.publisher.publish_run("ivy", "r").await.unwrap();
    conn.events(5, T).await.unwrap();
    let refused = json!({"user_id": "ivy", "event": "agent_text", "run_id": "never", "data": {"text": "x"}});
    assert_eq!(a.publisher.post(&refused).await.unwrap().0, 409);
    let info = eventually("both nodes' reports", || async {
        let (status, body) = get(b, "/v1/info").await;
        assert_eq!(status, 200, "{body}");
        // Rates count complete seconds: the publish shows once its second is over.
        let rates = body["published_per_s"].as_f64().unwrap() > 0.0
            && body["delivered_per_s"].as_f64().unwrap() > 0.0;
        (body["nodes"].as_array().unwrap().len() == nodes && body["connections"] == 2 && rates)
            .then_some(body)
    })
    .await;
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["engine"] == "memory" || info["engine"] == "redis");
    assert_eq!(info["node"], info["nodes"][0]["id"], "the answering node comes first");
    assert_eq!(info["users"], 2);
    assert!(
        info["published_per_s"].as_f64().unwrap() > 0.0 || info["delivered_per_s"].as_f64().unwrap() > 0.0
    );
    assert!(info["rejected"]["not_started"].as_u64().unwrap() >= 1, "{info}");
    assert!(info["runs"]["active"].is_u64() && info["runs"]["stalled"].is_u64());
}

#[tokio::test]
async fn memory_info_describes_the_node() {
    let server = memory().await;
    info_sees_every_node(&server, &server, 1).await;
}

#[tokio::test]
async fn redis_info_lists_both_nodes() {
    let (a, b) = two_redis_nodes("info", Settings::default()).await;
    info_sees_every_node(&a, &b, 2).await;
}

// ---- refresh ------------------------------------------------------------------------------

async fn refresh_moves_the_expiry(server: &TestServer) {
    let now = now_s();
    let (mut conn, _) =
        Connection::open(&server.url, &token_with("kim", Some(now), now + 3600), None, T).await.unwrap();
    // Another user's token, a malformed one, an expired one: refused, the socket stays open.
    for (token, code) in [
        (token_with("lee", Some(now), now + 3600), "wrong_user"),
        ("not-a-jwt".to_owned(), "invalid_token"),
        (token_with("kim", Some(now - 200), now - 100), "invalid_token"),
    ] {
        match refresh(&mut conn, &token).await {
            ServerFrame::Error { code: got, .. } => assert_eq!(got, code),
            other => panic!("expected {code}, got {other:?}"),
        }
    }
    conn.send_text(r#"{"type":"refresh"}"#).await.unwrap();
    match conn.next_frame(T).await.unwrap() {
        ServerFrame::Error { code, .. } => assert_eq!(code, "invalid_frame"),
        other => panic!("expected invalid_frame, got {other:?}"),
    }
    still_open(&mut conn).await;
    // A token expiring in 2 s: `refreshed` names its exp and the socket closes with 4001 then,
    // not at the first token's expiry an hour from now.
    let exp = now_s() + 2;
    assert_eq!(refresh(&mut conn, &token_with("kim", Some(now), exp)).await, ServerFrame::Refreshed { exp });
    assert_eq!(closed(&mut conn).await.0, CloseCode::TOKEN_EXPIRED);
    assert!(now_s() >= exp, "closed at the new exp");
}

/// A socket opened with a token about to expire stays open past that time after a refresh.
async fn refresh_extends_a_short_token(server: &TestServer) {
    let now = now_s();
    let (mut conn, _) =
        Connection::open(&server.url, &token_with("max", Some(now), now + 2), None, T).await.unwrap();
    let exp = now + 3600;
    assert_eq!(refresh(&mut conn, &token_with("max", Some(now), exp)).await, ServerFrame::Refreshed { exp });
    // Wait out the first token (time itself is what is tested here), then the socket answers.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    still_open(&mut conn).await;
}

#[tokio::test]
async fn memory_refresh_moves_the_expiry_and_refuses_bad_tokens() {
    let server = memory().await;
    refresh_moves_the_expiry(&server).await;
    refresh_extends_a_short_token(&server).await;
}

#[tokio::test]
async fn redis_refresh_moves_the_expiry_and_refuses_bad_tokens() {
    let prefix = unique_prefix("refresh");
    let server = TestServer::redis(&prefix, settings()).await;
    refresh_moves_the_expiry(&server).await;
    refresh_extends_a_short_token(&server).await;
}

// ---- credentials and malformed input --------------------------------------------------------

#[tokio::test]
async fn operator_routes_take_the_api_key_or_the_admin_token_and_nothing_else() {
    let server = memory().await;
    let routes = [
        (reqwest::Method::POST, "/v1/users/u/disconnect", Some(r#"{"reason":"x"}"#)),
        (reqwest::Method::GET, "/v1/users/u/presence", None),
        (reqwest::Method::GET, "/v1/runs", None),
        (reqwest::Method::GET, "/v1/info", None),
    ];
    for (method, path, body) in routes {
        for credential in [Some(API_KEY), Some(ADMIN_TOKEN)] {
            let (status, reply) = call(&server, method.clone(), path, credential, body).await;
            assert_eq!(status, 200, "{method} {path}: {reply}");
        }
        for credential in [None, Some("wrong"), Some(&*server.token("u"))] {
            let (status, reply) = call(&server, method.clone(), path, credential, body).await;
            assert_eq!((status, reply["error"]["code"].as_str()), (401, Some("unauthorized")), "{path}");
        }
    }
    // The admin token cannot publish.
    let event = json!({"user_id": "u", "event": "custom", "data": {"name": "n"}}).to_string();
    let (status, _) =
        call(&server, reqwest::Method::POST, "/v1/events", Some(ADMIN_TOKEN), Some(&event)).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn malformed_operator_requests_get_400_with_a_reason() {
    let server = memory().await;
    let long = "x".repeat(124);
    let far = (now_s() + 10 * 86_400).to_string();
    let cases: Vec<(reqwest::Method, String, Option<String>, &str, &str)> = vec![
        (
            reqwest::Method::POST,
            "/v1/users/a%20b/disconnect".into(),
            Some(r#"{"reason":"x"}"#.into()),
            "invalid_request",
            "user_id",
        ),
        (
            reqwest::Method::POST,
            "/v1/users/u/disconnect".into(),
            Some("{".into()),
            "invalid_json",
            "disconnect request",
        ),
        (
            reqwest::Method::POST,
            "/v1/users/u/disconnect".into(),
            Some("{}".into()),
            "invalid_request",
            "reason",
        ),
        (
            reqwest::Method::POST,
            "/v1/users/u/disconnect".into(),
            Some(r#"{"reason":"x","ban":true}"#.into()),
            "invalid_request",
            "ban",
        ),
        (
            reqwest::Method::POST,
            "/v1/users/u/disconnect".into(),
            Some(format!(r#"{{"reason":"{long}"}}"#)),
            "invalid_request",
            "123",
        ),
        (
            reqwest::Method::POST,
            "/v1/users/u/disconnect".into(),
            Some(r#"{"reason":"x","revoke_before":-1}"#.into()),
            "invalid_request",
            "disconnect request",
        ),
        (
            reqwest::Method::POST,
            "/v1/users/u/disconnect".into(),
            Some(r#"{"reason":"x","revoke_before":"soon"}"#.into()),
            "invalid_request",
            "disconnect request",
        ),
        (
            reqwest::Method::POST,
            "/v1/users/u/disconnect".into(),
            Some(format!(r#"{{"reason":"x","revoke_before":{far}}}"#)),
            "invalid_request",
            "future",
        ),
        (
            reqwest::Method::GET,
            format!("/v1/users/{}/presence", "x".repeat(129)),
            None,
            "invalid_request",
            "128",
        ),
        (reqwest::Method::GET, "/v1/runs?state=sleeping".into(), None, "invalid_request", "state"),
        (reqwest::Method::GET, "/v1/runs?limit=0".into(), None, "invalid_request", "limit"),
        (reqwest::Method::GET, "/v1/runs?limit=1001".into(), None, "invalid_request", "limit"),
        (reqwest::Method::GET, "/v1/runs?limit=ten".into(), None, "invalid_request", "limit"),
        (reqwest::Method::GET, "/v1/runs?user=u".into(), None, "invalid_request", "user"),
    ];
    for (method, path, body, code, mentions) in cases {
        let (status, reply) = call(&server, method.clone(), &path, Some(API_KEY), body.as_deref()).await;
        assert_eq!(status, 400, "{method} {path}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{method} {path}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{method} {path}: {message}");
    }
    let (status, reply) =
        call(&server, reqwest::Method::GET, "/v1/users/u/disconnect", Some(API_KEY), None).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (405, Some("method_not_allowed")));
}

#[tokio::test]
async fn disconnect_also_ends_the_users_agui_stream() {
    let server = memory().await;
    let mut response = server
        .http()
        .get(format!("{}/v1/agui/stream", server.url))
        .bearer_auth(server.token("sse-user"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    presence_is(&server, "sse-user", 1).await;
    let (status, body) = disconnect(&server, "sse-user", json!({"reason": "logged out"})).await;
    assert_eq!((status, body["disconnected"].as_u64()), (200, Some(1)), "{body}");
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(T, response.chunk()).await.expect("the stream ends").unwrap()
    {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.ends_with(": disconnected by an operator: do not reconnect on your own\n\n"), "{text}");
    presence_is(&server, "sse-user", 0).await;
}
