//! Refusals before the upgrade: each bad credential gets 401/403 with the JSON error body.

mod common;

use common::{SECRET, TestServer};
use herald_client::{AuthMode, ClientError, Connection};
use serde_json::{Value, json};
use std::time::Duration;

async fn refused(server: &TestServer, token: &str) -> (u16, Value) {
    match Connection::connect(&server.url, token, None, AuthMode::Header).await {
        Err(ClientError::Refused { status, body }) => {
            (status, serde_json::from_str(&body).expect("JSON error body"))
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("token {token:?} was accepted"),
    }
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn exp_in(secs: i64) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    now + secs
}

fn hs256(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn no_token_is_401_with_a_json_error() {
    let server = TestServer::start().await;
    let response = server.http().get(format!("{}/ws", server.url)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(body["error"]["message"].as_str().unwrap().contains("Authorization: Bearer"));
}

#[tokio::test]
async fn expired_token_is_401() {
    let server = TestServer::start().await;
    let (status, body) = refused(&server, &hs256(SECRET, json!({"sub": "u", "exp": exp_in(-600)}))).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"), "{body}");
}

#[tokio::test]
async fn token_signed_with_another_key_is_401() {
    let server = TestServer::start().await;
    let (status, body) =
        refused(&server, &hs256("another-secret-0123456789", json!({"sub": "u", "exp": exp_in(600)}))).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("signature"), "{body}");
}

#[tokio::test]
async fn alg_none_is_401() {
    let server = TestServer::start().await;
    let token = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": "u", "exp": exp_in(600)}))
    );
    let (status, body) = refused(&server, &token).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn token_without_sub_or_exp_is_401() {
    let server = TestServer::start().await;
    let (status, body) = refused(&server, &hs256(SECRET, json!({"exp": exp_in(600)}))).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("sub"), "{body}");
    let (status, body) = refused(&server, &hs256(SECRET, json!({"sub": "u"}))).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("exp"), "{body}");
}

#[tokio::test]
async fn origin_not_on_the_list_is_403() {
    let server = TestServer::with(herald_server::Settings {
        allowed_origins: Some("https://app.example.com".into()),
        ..Default::default()
    })
    .await;
    let request = |origin: &'static str| {
        server
            .http()
            .get(format!("{}/ws", server.url))
            .bearer_auth(server.token("u"))
            .header("origin", origin)
            .send()
    };
    let response = request("https://evil.example.net").await.unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    // An allowed origin passes auth and only fails for not being an upgrade.
    assert_eq!(request("https://app.example.com").await.unwrap().status(), 400);
}

#[tokio::test]
async fn token_expiring_during_a_connection_closes_with_4001() {
    let server = TestServer::start().await;
    // exp is 1 s away; the server's 5 s leeway applies to the handshake, not to the open socket.
    let token = hs256(SECRET, json!({"sub": "u", "exp": exp_in(1)}));
    let mut conn = Connection::connect(&server.url, &token, None, AuthMode::Header).await.unwrap();
    conn.read_opening(common::T).await.unwrap();
    match conn.next_frame(Duration::from_secs(10)).await {
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, 4001),
        other => panic!("expected close 4001, got {other:?}"),
    }
}

#[tokio::test]
async fn tickets_open_one_connection_once() {
    let server = TestServer::start().await;
    let http = server.http();
    let response = http
        .post(format!("{}/v1/tickets", server.url))
        .bearer_auth(common::API_KEY)
        .json(&json!({"user_id": "tess", "ttl_s": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    assert!(ticket.len() >= 43, "256-bit ticket");
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));

    let url = format!("{}?ticket={ticket}", herald_client::ws_url(&server.url));
    let (mut ws, _) = tokio_tungstenite::connect_async(url.clone()).await.expect("ticket accepted");
    use futures_util::StreamExt;
    let welcome = ws.next().await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains(r#""user_id":"tess""#));

    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("ticket reuse must be refused, got {:?}", other.map(|_| ())),
    }
    let forged = format!("{}?ticket=AAAA", herald_client::ws_url(&server.url));
    assert!(tokio_tungstenite::connect_async(forged).await.is_err());
}

#[tokio::test]
async fn ticket_requests_are_validated() {
    let server = TestServer::start().await;
    let post = |body: Value, key: &'static str| {
        server.http().post(format!("{}/v1/tickets", server.url)).bearer_auth(key).json(&body).send()
    };
    assert_eq!(post(json!({"user_id": "u"}), "wrong").await.unwrap().status(), 401);
    assert_eq!(post(json!({"user_id": ""}), common::API_KEY).await.unwrap().status(), 400);
    assert_eq!(post(json!({"user_id": "u", "ttl_s": 301}), common::API_KEY).await.unwrap().status(), 400);
    assert_eq!(post(json!({"ttl_s": 3}), common::API_KEY).await.unwrap().status(), 400);
}
