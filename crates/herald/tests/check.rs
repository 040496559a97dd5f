//! `herald check` as an operator runs it: the real binary against a real Herald (exit 0, every
//! scenario passes), against deliberately broken servers (the right scenario fails, exit non-zero),
//! and against nothing (exit 2 with a message saying the URL is unreachable). With `--url` given
//! twice: two real nodes on one Redis pass the cross-node scenarios; two nodes that share nothing
//! fail them, naming the nodes.
//!
//! The broken servers are a tiny in-test implementation of the contract (health, publish with run
//! rules and idempotency, `/ws` with JWT, resume, ping) with one fault switched on.

mod common;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::Serve;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

const SECRET: &str = "check-test-secret-0123456789";
const API_KEY: &str = "check-test-key";
const SCENARIOS: [&str; 9] = [
    "golden_path",
    "isolation",
    "multi_tab",
    "resume",
    "offline",
    "auth_rejected",
    "idempotent",
    "run_rules",
    "heartbeat",
];
/// The scenarios added when `--url` is given more than once.
const CROSS_NODE: [&str; 2] = ["cross_node_delivery", "cross_node_resume"];

/// `herald check` against `url`, with keys from the environment; returns (exit code, stdout, stderr).
async fn check(url: &str, extra: &[&str]) -> (i32, String, String) {
    check_nodes(&[url], "20s", extra).await
}

/// `herald check` with one `--url` per node and this `--timeout`.
async fn check_nodes(urls: &[&str], timeout: &str, extra: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HERALD_API_KEY", API_KEY)
        .env("HERALD_JWT_SECRET", SECRET)
        .arg("check")
        .args(urls.iter().flat_map(|u| ["--url", u]))
        .args(["--timeout", timeout])
        .args(extra)
        .output()
        .await
        .unwrap();
    let code = out.status.code().expect("exited, not killed");
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scenario<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["scenarios"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| {
        panic!("scenario {name} missing from {report}");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_against_a_real_herald() {
    let serve = Serve::start(SECRET, API_KEY);
    let (code, stdout, stderr) = check(&serve.url, &[]).await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for name in SCENARIOS {
        let line =
            stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {stdout}"));
        assert!(line.contains(" pass "), "{line}");
    }
    assert!(stdout.contains("pass rate: 100% (9/9)"), "{stdout}");

    let (code, stdout, stderr) = check(&serve.url, &["--json", "--users", "4", "--runs", "2"]).await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("--json prints one JSON document");
    assert_eq!(report["pass_rate"], 1.0);
    assert_eq!(report["passed"], 9);
    assert_eq!(report["total"], 9);
    assert_eq!(report["scenarios"].as_array().unwrap().len(), 9);
    for name in SCENARIOS {
        let s = scenario(&report, name);
        assert_eq!(s["passed"], true, "{s}");
        assert!(s["detail"].as_str().is_some_and(|d| !d.is_empty()), "{s}");
        assert!(s.get("p50_ms").is_some() && s.get("p99_ms").is_some(), "{s}");
    }
    assert!(scenario(&report, "golden_path")["p50_ms"].as_f64().is_some());
    assert!(scenario(&report, "golden_path")["p99_ms"].as_f64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_redis_pass_the_cross_node_scenarios() {
    let prefix = common::unique_prefix("check-nodes");
    let a = Serve::redis_node(SECRET, API_KEY, &prefix);
    let b = Serve::redis_node(SECRET, API_KEY, &prefix);
    let (code, stdout, stderr) =
        check_nodes(&[&a.url, &b.url], "20s", &["--json", "--users", "3", "--runs", "2"]).await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("--json prints one JSON document");
    assert_eq!((report["passed"].as_u64(), report["total"].as_u64()), (Some(11), Some(11)), "{report:#}");
    for name in SCENARIOS.iter().chain(&CROSS_NODE) {
        assert_eq!(scenario(&report, name)["passed"], true, "{report:#}");
    }
    for name in CROSS_NODE {
        let detail = scenario(&report, name)["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains(&a.url) && detail.contains(&b.url), "names both nodes: {detail}");
    }
    // 2 nodes × 2 runs × 5 events, each received on the node it was not published on.
    let delivery = scenario(&report, "cross_node_delivery")["detail"].as_str().unwrap().to_owned();
    assert!(delivery.contains("20 events received"), "{delivery}");
    assert!(scenario(&report, "cross_node_delivery")["p50_ms"].as_f64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_share_no_log_fail_the_cross_node_scenarios_naming_the_nodes() {
    // Two memory-engine nodes: each passes alone, but an event published on one never reaches
    // the other, and the other does not know the first one's epoch.
    let a = Serve::start(SECRET, API_KEY);
    let b = Serve::start(SECRET, API_KEY);
    let (code, stdout, stderr) =
        check_nodes(&[&a.url, &b.url], "2s", &["--json", "--users", "2", "--runs", "1"]).await;
    assert_eq!(code, 1, "9 of 11 is below the default 90%\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["passed"], 9, "{report:#}");
    assert_eq!(report["isolation_failure"], false, "{report:#}");
    for name in CROSS_NODE {
        let s = scenario(&report, name);
        assert_eq!(s["passed"], false, "{s}");
        let detail = s["detail"].as_str().unwrap();
        assert!(detail.starts_with(&format!("{} -> {}: ", a.url, b.url)), "names the nodes: {detail}");
    }
    let resume = scenario(&report, "cross_node_resume")["detail"].as_str().unwrap().to_owned();
    assert!(resume.contains("expected replayed"), "{resume}");
    let delivery = scenario(&report, "cross_node_delivery")["detail"].as_str().unwrap().to_owned();
    assert!(delivery.contains("no event"), "{delivery}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faithful_stand_in_passes_so_the_check_needs_only_the_contract() {
    let url = Mock::start(Fault::None).await;
    let (code, stdout, stderr) = check(&url, &["--json"]).await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["passed"], 9, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_leaks_events_to_other_users_fails_isolation() {
    let url = Mock::start(Fault::Leak).await;
    let (code, stdout, stderr) = check(&url, &["--json", "--min-pass-rate", "0"]).await;
    assert_eq!(
        code, 1,
        "isolation failures fail whatever the pass rate\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["isolation_failure"], true, "{report:#}");
    let isolation = scenario(&report, "isolation");
    assert_eq!(isolation["passed"], false, "{isolation}");
    let detail = isolation["detail"].as_str().unwrap();
    assert!(detail.contains("ISOLATION FAILURE") && detail.contains("received event"), "{detail}");
    for name in ["multi_tab", "auth_rejected", "run_rules", "heartbeat"] {
        assert_eq!(
            scenario(&report, name)["passed"],
            true,
            "single-user scenarios are unaffected: {report:#}"
        );
    }

    let (code, stdout, stderr) = check(&url, &["--users", "3"]).await;
    assert_eq!(code, 1);
    assert!(stdout.contains("isolation failure"), "{stdout}");
    assert!(stderr.contains("isolation failure"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_drops_an_event_fails_golden_path() {
    let url = Mock::start(Fault::DropSecondEvent).await;
    let (code, stdout, stderr) = check(&url, &["--json"]).await;
    assert_eq!(code, 1, "8 of 9 is below the default 0.9\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let golden = scenario(&report, "golden_path");
    assert_eq!(golden["passed"], false, "{golden}");
    assert!(golden["detail"].as_str().unwrap().contains("never delivered"), "{golden}");
    assert_eq!(report["isolation_failure"], false);
    assert_eq!(report["passed"], 8, "only golden_path fails: {report:#}");

    let url = Mock::start(Fault::DropSecondEvent).await;
    let (code, stdout, _) = check(&url, &["--min-pass-rate", "0.8"]).await;
    assert_eq!(code, 0, "8 of 9 reaches 0.8: {stdout}");
    assert!(stdout.contains("pass rate: 88.9% (8/9)"), "{stdout}");
}

#[tokio::test]
async fn an_unreachable_url_exits_2_saying_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (code, stdout, stderr) = check(&url, &[]).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("unreachable") && stderr.contains(&url), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}

#[tokio::test]
async fn usage_errors_exit_2_saying_which() {
    let (code, _, stderr) = check("ftp://example", &[]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("--url"), "{stderr}");
    let (code, _, stderr) = check("https://127.0.0.1:1", &[]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("usage error") && stderr.contains("TLS"), "{stderr}");
    let (code, _, stderr) = check_nodes(&["http://127.0.0.1:1", "http://127.0.0.1:1/"], "1s", &[]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("given twice"), "{stderr}");
    let (code, _, stderr) = check_nodes(&["http://127.0.0.1:1", "https://127.0.0.1:2"], "1s", &[]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("https://127.0.0.1:2") && stderr.contains("TLS"), "{stderr}");
    let (code, _, stderr) = check("http://127.0.0.1:1", &["--min-pass-rate", "1.5"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("--min-pass-rate"), "{stderr}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .env_clear()
        .args(["check", "--url", "http://127.0.0.1:1"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--api-key") && stderr.contains("--jwt-secret"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// A stand-in server: just enough of the contract, with one fault.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Every event also goes to every socket of every other user.
    Leak,
    /// The second event ever accepted is appended to the log but never sent live.
    DropSecondEvent,
}

const EPOCH: &str = "mock-epoch";

#[derive(Default)]
struct Inner {
    logs: HashMap<String, Vec<Value>>,
    receipts: HashMap<(String, String), Value>,
    /// (user, run) → ended.
    runs: HashMap<(String, String), bool>,
    sockets: HashMap<String, Vec<(u64, mpsc::UnboundedSender<String>)>>,
    next_socket: u64,
    accepted: usize,
}

struct Mock {
    fault: Fault,
    inner: Mutex<Inner>,
}

type Shared = Arc<Mock>;

impl Mock {
    async fn start(fault: Fault) -> String {
        let state = Arc::new(Mock { fault, inner: Mutex::new(Inner::default()) });
        let app = Router::new()
            .route("/health/live", get(|| async { "ok" }))
            .route("/v1/events", post(publish))
            .route("/ws", get(socket))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

async fn publish(State(mock): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if bearer(&headers) != Some(API_KEY) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "bad API key");
    }
    let (Some(user), Some(name)) = (body["user_id"].as_str(), body["event"].as_str()) else {
        return error(StatusCode::BAD_REQUEST, "invalid_event", "user_id and event are required");
    };
    let mut inner = mock.inner.lock().unwrap();
    let id = body["id"].as_str().map(str::to_owned).unwrap_or_else(|| format!("gen-{}", inner.accepted));
    if let Some(first) = inner.receipts.get(&(user.to_owned(), id.clone())) {
        let mut receipt = first.clone();
        receipt["duplicate"] = json!(true);
        return Json(receipt).into_response();
    }
    let run_id = body["run_id"].as_str();
    if name != "custom" {
        let key = (user.to_owned(), run_id.unwrap_or_default().to_owned());
        match (inner.runs.get(&key), name) {
            (None, "agent_started") => {}
            (None, _) => return error(StatusCode::CONFLICT, "run_state", "run has not started"),
            (Some(true), _) => return error(StatusCode::CONFLICT, "run_state", "run already ended"),
            (Some(false), "agent_started") => {
                return error(StatusCode::CONFLICT, "run_state", "run already started");
            }
            (Some(false), _) => {}
        }
        let ended = matches!(name, "agent_completed" | "agent_error" | "agent_cancelled");
        inner.runs.insert(key, ended);
    }
    inner.accepted += 1;
    let log = inner.logs.entry(user.to_owned()).or_default();
    let seq = log.len() as u64 + 1;
    let frame = json!({
        "type": "event", "seq": seq, "id": id, "user_id": user, "thread_id": null, "run_id": run_id,
        "event": name, "data": body.get("data").cloned().unwrap_or(json!({})), "ts": "2025-01-01T00:00:00.000Z",
    });
    log.push(frame.clone());
    let text = frame.to_string();
    let connections = inner.sockets.get(user).map_or(0, Vec::len);
    let dropped = mock.fault == Fault::DropSecondEvent && inner.accepted == 2;
    for (owner, sockets) in &inner.sockets {
        if (owner == user && !dropped) || (owner != user && mock.fault == Fault::Leak) {
            for (_, tx) in sockets {
                let _ = tx.send(text.clone());
            }
        }
    }
    let receipt =
        json!({"id": id, "seq": seq, "epoch": EPOCH, "connections": connections, "duplicate": false});
    inner.receipts.insert((user.to_owned(), id), receipt.clone());
    Json(receipt).into_response()
}

async fn socket(
    State(mock): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let key = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let claims = bearer(&headers).and_then(|t| jsonwebtoken::decode::<Value>(t, &key, &validation).ok());
    let Some(user) = claims.and_then(|c| c.claims["sub"].as_str().map(str::to_owned)) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "bad token");
    };
    let cursor = query.get("after").and_then(|a| a.parse::<usize>().ok()).zip(query.get("epoch").cloned());
    upgrade.on_upgrade(move |ws| serve_socket(mock, ws, user, cursor))
}

async fn serve_socket(mock: Shared, ws: WebSocket, user: String, cursor: Option<(usize, String)>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let id = {
        let mut inner = mock.inner.lock().unwrap();
        let log = inner.logs.get(&user).cloned().unwrap_or_default();
        let (recovery, backlog) = match cursor {
            None => ("none", &[][..]),
            Some((after, epoch)) if epoch == EPOCH && after <= log.len() => ("replayed", &log[after..]),
            Some(_) => ("reset", &[][..]),
        };
        let welcome = json!({"type": "welcome", "v": 1, "connection_id": "c", "user_id": user, "epoch": EPOCH,
            "seq": log.len(), "heartbeat_ms": 25000, "recovery": recovery});
        let _ = tx.send(welcome.to_string());
        for e in backlog {
            let _ = tx.send(e.to_string());
        }
        let _ = tx.send(json!({"type": "synced", "seq": log.len()}).to_string());
        inner.next_socket += 1;
        let id = inner.next_socket;
        inner.sockets.entry(user.clone()).or_default().push((id, tx.clone()));
        id
    };
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Text(text) if text.as_str().contains("\"ping\"") => {
                let _ = tx.send(json!({"type": "pong"}).to_string());
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    if let Some(sockets) = mock.inner.lock().unwrap().sockets.get_mut(&user) {
        sockets.retain(|(s, _)| *s != id);
    }
    writer.abort();
}
