//! Upstream: client frames reach a real HTTP backend, signed, with the user from the token, and
//! the backend's answer comes back on the same socket without ever blocking event delivery.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{T, TestServer};
use herald_protocol::ServerFrame;
use herald_server::Settings;
use herald_server::config::Secret;
use herald_server::upstream::{SignatureError, verify_signature};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

const UPSTREAM_SECRET: &str = "upstream-secret-for-tests";

/// What the backend saw: the signature header and the raw body.
struct Seen {
    signature: String,
    body: Bytes,
}

/// A backend that records every request and answers by `data.mode`: ok, fail (500), slow.
async fn backend() -> (String, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    async fn handle(
        State(tx): State<mpsc::UnboundedSender<Seen>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, String) {
        let signature =
            headers.get("herald-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let _ = tx.send(Seen { signature, body: body.clone() });
        match value["data"]["mode"].as_str() {
            Some("fail") => (StatusCode::INTERNAL_SERVER_ERROR, "{}".into()),
            Some("slow") => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                (StatusCode::OK, "{}".into())
            }
            _ => (
                StatusCode::OK,
                json!({"accepted": true, "type": value["type"], "run": value["run_id"]}).to_string(),
            ),
        }
    }
    let app = Router::new().route("/herald", post(handle)).with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/herald", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

async fn herald_with_upstream(url: &str, timeout_ms: u64) -> TestServer {
    TestServer::with(Settings {
        upstream_url: Some(url.into()),
        upstream_secret: Some(Secret::new(UPSTREAM_SECRET)),
        upstream_timeout_ms: Some(timeout_ms),
        ..Default::default()
    })
    .await
}

fn verify(seen: &Seen) -> Result<(), SignatureError> {
    verify_signature(
        UPSTREAM_SECRET,
        &seen.signature,
        &seen.body,
        Duration::from_secs(300),
        SystemTime::now(),
    )
}

#[tokio::test]
async fn message_reaches_the_backend_signed_with_the_token_user_and_is_acked() {
    let (url, mut seen) = backend().await;
    let server = herald_with_upstream(&url, 5000).await;
    let (mut conn, opened) = server.open("alice").await;
    conn.send_text(r#"{"type":"message","ref":"m-1","thread_id":"t-1","data":{"text":"hello"}}"#)
        .await
        .unwrap();

    let request = seen.recv().await.unwrap();
    assert_eq!(verify(&request), Ok(()));
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["user_id"], "alice");
    assert_eq!(body["connection_id"], opened.connection_id.as_str());
    assert_eq!(body["ref"], "m-1");
    assert_eq!(body["thread_id"], "t-1");
    assert_eq!(body["data"]["text"], "hello");

    match conn.next_frame(T).await.unwrap() {
        ServerFrame::Ack { reference, status, body } => {
            assert_eq!(reference.as_deref(), Some("m-1"));
            assert_eq!(status, 200);
            assert_eq!(body["accepted"], true);
        }
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[tokio::test]
async fn cancel_is_forwarded_and_acked() {
    let (url, mut seen) = backend().await;
    let server = herald_with_upstream(&url, 5000).await;
    let (mut conn, _) = server.open("alice").await;
    conn.send_text(r#"{"type":"cancel","run_id":"run-9","ref":"c-1"}"#).await.unwrap();
    let body: Value = serde_json::from_slice(&seen.recv().await.unwrap().body).unwrap();
    assert_eq!(body, json!({"type": "cancel", "user_id": "alice", "run_id": "run-9", "ref": "c-1"}));
    match conn.next_frame(T).await.unwrap() {
        ServerFrame::Ack { reference, body, .. } => {
            assert_eq!(reference.as_deref(), Some("c-1"));
            assert_eq!(body["run"], "run-9");
        }
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[tokio::test]
async fn backend_500_becomes_upstream_error_with_the_ref() {
    let (url, _seen) = backend().await;
    let server = herald_with_upstream(&url, 5000).await;
    let (mut conn, _) = server.open("alice").await;
    conn.send_text(r#"{"type":"message","ref":"m-2","data":{"mode":"fail"}}"#).await.unwrap();
    match conn.next_frame(T).await.unwrap() {
        ServerFrame::Error { code, reference, message } => {
            assert_eq!(code, "upstream_error");
            assert_eq!(reference.as_deref(), Some("m-2"));
            assert!(message.contains("500"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn backend_down_becomes_upstream_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = herald_with_upstream(&format!("http://127.0.0.1:{port}/gone"), 5000).await;
    let (mut conn, _) = server.open("alice").await;
    conn.send_text(r#"{"type":"message","ref":"m-3","data":{}}"#).await.unwrap();
    match conn.next_frame(T).await.unwrap() {
        ServerFrame::Error { code, reference, .. } => {
            assert_eq!(code, "upstream_unavailable");
            assert_eq!(reference.as_deref(), Some("m-3"));
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_slow_backend_times_out_while_events_keep_flowing() {
    let (url, mut seen) = backend().await;
    let server = herald_with_upstream(&url, 500).await;
    let (mut conn, _) = server.open("alice").await;
    conn.send_text(r#"{"type":"message","ref":"slow-1","data":{"mode":"slow"}}"#).await.unwrap();
    seen.recv().await.unwrap(); // the backend is now sitting on the request
    server.publisher.publish_run("alice", "r").await.unwrap();
    // All five events arrive before the timeout error: delivery is not blocked by the request.
    let events = conn.events(5, T).await.unwrap();
    assert_eq!(events.len(), 5);
    match conn.next_frame(T).await.unwrap() {
        ServerFrame::Error { code, reference, message } => {
            assert_eq!(code, "upstream_unavailable");
            assert_eq!(reference.as_deref(), Some("slow-1"));
            assert!(message.contains("timed out"), "{message}");
        }
        other => panic!("expected the timeout error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_cannot_speak_for_another_user() {
    let (url, mut seen) = backend().await;
    let server = herald_with_upstream(&url, 5000).await;
    let (mut conn, _) = server.open("mallory").await;
    conn.send_text(r#"{"type":"message","ref":"x","user_id":"victim","data":{}}"#).await.unwrap();
    match conn.next_frame(T).await.unwrap() {
        ServerFrame::Error { code, .. } => assert_eq!(code, "invalid_frame"),
        other => panic!("a frame naming a user must be refused, got {other:?}"),
    }
    conn.send_text(r#"{"type":"message","ref":"y","data":{"user_id":"victim"}}"#).await.unwrap();
    let body: Value = serde_json::from_slice(&seen.recv().await.unwrap().body).unwrap();
    assert_eq!(body["user_id"], "mallory", "the backend sees the token's user, whatever the frame says");
    assert_eq!(body["ref"], "y", "the refused frame never reached the backend");
}

#[tokio::test]
async fn signature_verification_rejects_tampering_and_old_timestamps() {
    let (url, mut seen) = backend().await;
    let server = herald_with_upstream(&url, 5000).await;
    let (mut conn, _) = server.open("alice").await;
    conn.send_text(r#"{"type":"message","ref":"s","data":{"n":1}}"#).await.unwrap();
    let request = seen.recv().await.unwrap();
    assert_eq!(verify(&request), Ok(()));
    let body = String::from_utf8_lossy(&request.body).replace(r#""n":1"#, r#""n":2"#);
    let tampered = Seen { signature: request.signature.clone(), body: Bytes::from(body) };
    assert_eq!(verify(&tampered), Err(SignatureError::Mismatch));
    let much_later = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        verify_signature(
            UPSTREAM_SECRET,
            &request.signature,
            &request.body,
            Duration::from_secs(300),
            much_later
        ),
        Err(SignatureError::Stale)
    );
}

#[tokio::test]
async fn bad_upstream_config_is_refused_at_start() {
    let missing_secret = Settings { upstream_url: Some("http://127.0.0.1:1/x".into()), ..Default::default() }
        .or(Settings {
            jwt_secret: Some(Secret::new("0123456789abcdef0123")),
            api_key: Some(Secret::new("k")),
            ..Default::default()
        });
    let e = missing_secret.validate().unwrap_err().to_string();
    assert!(e.contains("HERALD_UPSTREAM_SECRET"), "{e}");
}
