//! The attack suite: what a hostile client, page or publisher may try, each with the exact refusal.
//!
//! Real servers on 127.0.0.1:0, real sockets. RSA and EC keys are generated at test time.

mod common;

use common::{API_KEY, SECRET, T, TestServer};
use herald_client::{AuthMode, ClientError, Connection};
use herald_protocol::ServerFrame;
use herald_server::config::{Config, Secret, Settings};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

// ---------------------------------------------------------------- helpers

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn hs256(secret: &str, claims: Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret.as_bytes()), None, claims)
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600})
}

/// Opens a socket with a JWT in the Authorization header; returns the HTTP refusal, if any.
async fn refused(server: &TestServer, token: &str) -> (u16, Value) {
    match Connection::connect(&server.url, token, None, AuthMode::Header).await {
        Err(ClientError::Refused { status, body }) => {
            (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON error body: {body}")))
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("token was accepted"),
    }
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

/// A 401 with code `unauthorized` whose message contains `needle`.
async fn assert_401(server: &TestServer, token: &str, needle: &str) {
    let (status, body) = refused(server, token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    assert!(message(&body).contains(needle), "expected {needle:?} in {body}");
}

/// A WebSocket handshake to `/ws{query}` with arbitrary headers.
async fn handshake(
    server: &TestServer,
    query: &str,
    headers: &[(&'static str, String)],
) -> Result<Connection, (u16, Value)> {
    let url = format!("{}{query}", herald_client::ws_url(&server.url));
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, HeaderValue::from_str(value).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(Connection::from_stream(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
            let body = body.unwrap_or_default();
            Err((response.status().as_u16(), serde_json::from_str(&body).unwrap_or(Value::String(body))))
        }
        Err(e) => panic!("handshake failed at the transport: {e}"),
    }
}

fn base_settings() -> Settings {
    Settings {
        listen: Some("127.0.0.1:0".into()),
        api_key: Some(Secret::new(API_KEY)),
        allowed_origins: Some("*".into()),
        ..Settings::default()
    }
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "herald-attacks-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A fresh 2048-bit RSA key pair: (private key for signing, public key PEM).
fn rsa_key() -> (EncodingKey, String) {
    rsa_key_of(2048)
}

/// An RSA key only used as the *wrong* key: smaller, so a debug build generates it quickly.
fn other_rsa_key() -> EncodingKey {
    rsa_key_of(1024).0
}

fn rsa_key_of(bits: usize) -> (EncodingKey, String) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap();
    let public_pem = private.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
    let private_pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
    (EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(), public_pem)
}

/// A fresh P-256 key pair: (private key for signing, public key PEM, public JWK x and y).
fn ec_key() -> (EncodingKey, String, (String, String)) {
    use base64::Engine;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
    let public = private.public_key();
    let point = public.to_encoded_point(false);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let xy = (b64(point.x().unwrap()), b64(point.y().unwrap()));
    let private_pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
    let public_pem = public.to_public_key_pem(LineEnding::LF).unwrap();
    (EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(), public_pem, xy)
}

async fn public_key_server(public_pem: &str, extra: Settings) -> TestServer {
    let path = temp_file("jwt.pub.pem", public_pem);
    let config: Config = Settings { jwt_public_key: Some(path), ..extra }
        .or(base_settings())
        .validate()
        .expect("valid config");
    TestServer::with_config(config).await
}

// ---------------------------------------------------------------- tokens (HS256 server)

#[tokio::test]
async fn alg_none_is_refused() {
    let server = TestServer::start().await;
    let token = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims("u")));
    assert_401(&server, &token, "malformed token header").await;
    // Same with a signature segment that is not empty, and with "None" spelled differently.
    let token = format!("{}.{}.AAAA", b64(&json!({"alg": "NONE"})), b64(&claims("u")));
    assert_401(&server, &token, "malformed token header").await;
}

#[tokio::test]
async fn wrong_key_is_refused() {
    let server = TestServer::start().await;
    assert_401(&server, &hs256("another-secret-0123456789", claims("u")), "signature does not match").await;
}

#[tokio::test]
async fn expired_token_is_refused() {
    let server = TestServer::start().await;
    let token = hs256(SECRET, json!({"sub": "u", "exp": now() - 60}));
    assert_401(&server, &token, "token expired").await;
}

#[tokio::test]
async fn token_not_yet_valid_is_refused() {
    let server = TestServer::start().await;
    let token = hs256(SECRET, json!({"sub": "u", "exp": now() + 600, "nbf": now() + 300}));
    assert_401(&server, &token, "not valid yet (nbf)").await;
    // Within the leeway (5 s default) a slightly early nbf is fine.
    let token = hs256(SECRET, json!({"sub": "u", "exp": now() + 600, "nbf": now() + 2}));
    Connection::connect(&server.url, &token, None, AuthMode::Header).await.expect("nbf within leeway");
}

#[tokio::test]
async fn wrong_audience_and_issuer_are_refused() {
    let server = TestServer::with(Settings {
        jwt_audience: Some("herald".into()),
        jwt_issuer: Some("https://id.example".into()),
        ..Settings::default()
    })
    .await;
    let good = json!({"sub": "u", "exp": now() + 600, "aud": "herald", "iss": "https://id.example"});
    Connection::connect(&server.url, &hs256(SECRET, good.clone()), None, AuthMode::Header)
        .await
        .expect("right aud and iss");
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("another-service");
    assert_401(&server, &hs256(SECRET, wrong_aud), "aud").await;
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    assert_401(&server, &hs256(SECRET, wrong_iss), "iss").await;
    // Leaving the claim out is no way around it.
    let mut no_aud = good.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_401(&server, &hs256(SECRET, no_aud), "no aud claim").await;
    let mut no_iss = good;
    no_iss.as_object_mut().unwrap().remove("iss");
    assert_401(&server, &hs256(SECRET, no_iss), "no iss claim").await;
}

#[tokio::test]
async fn missing_sub_is_refused() {
    let server = TestServer::start().await;
    assert_401(&server, &hs256(SECRET, json!({"exp": now() + 600})), "no sub claim").await;
    assert_401(&server, &hs256(SECRET, json!({"sub": "", "exp": now() + 600})), "token sub").await;
}

#[tokio::test]
async fn oversized_token_is_a_clean_401() {
    let server = TestServer::start().await;
    // A validly signed token padded to 64 KiB: refused on size, before any decoding.
    let token = hs256(SECRET, json!({"sub": "u", "exp": now() + 600, "pad": "x".repeat(64 * 1024)}));
    assert_401(&server, &token, "longer than 8192 bytes").await;
    // The same through the subprotocol header.
    match Connection::connect(&server.url, &token, None, AuthMode::Subprotocol).await {
        Err(ClientError::Refused { status, .. }) => assert_eq!(status, 401),
        other => panic!("expected 401, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn huge_request_head_gets_431() {
    let server = TestServer::start().await;
    // Far over hyper's request-head buffer (~400 KiB), but sent in full before reading.
    let status = raw_status(&server, &format!("X-Pad: {}\r\n", "x".repeat(500 * 1024))).await;
    assert_eq!(status.as_deref(), Some("431"), "a huge request head is refused with 431");
}

/// Sends `GET /ws` with extra header lines over raw TCP; returns the status code of the answer,
/// or `None` if the server closed without one.
async fn raw_status(server: &TestServer, extra_headers: &str) -> Option<String> {
    let addr = server.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n{extra_headers}\r\n");
    let (mut read, mut write) = stream.split();
    let writing = async {
        let _ = write.write_all(request.as_bytes()).await;
    };
    let mut answer = Vec::new();
    let reading = async {
        let _ = tokio::time::timeout(T, read.read_to_end(&mut answer)).await;
    };
    tokio::join!(writing, reading);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ").map(|rest| rest[..3].to_owned())
}

// ---------------------------------------------------------------- public keys

#[tokio::test]
async fn rs256_key_confusion_is_refused() {
    let (private, public_pem) = rsa_key();
    let server = public_key_server(&public_pem, Settings::default()).await;
    // The real thing works.
    let good = sign(Algorithm::RS256, &private, None, claims("u"));
    let (mut conn, _) = Connection::open(&server.url, &good, None, T).await.expect("RS256 token accepted");
    conn.send_text(r#"{"type":"ping"}"#).await.unwrap();
    assert_eq!(conn.next_frame(T).await.unwrap(), ServerFrame::Pong);
    // Key confusion: an HS256 token whose HMAC secret is the server's public key.
    let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(public_pem.as_bytes()), None, claims("u"));
    assert_401(&server, &forged, "not the one configured (RS256)").await;
    // alg none and a token signed by another RSA key.
    let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims("u")));
    assert_401(&server, &none, "malformed token header").await;
    let other = other_rsa_key();
    assert_401(&server, &sign(Algorithm::RS256, &other, None, claims("u")), "signature does not match").await;
    // The HS256 test secret means nothing to this server.
    assert_401(&server, &hs256(SECRET, claims("u")), "not the one configured (RS256)").await;
}

#[tokio::test]
async fn es256_public_key_verifies_and_pins_its_algorithm() {
    let (private, public_pem, _) = ec_key();
    let server = public_key_server(&public_pem, Settings::default()).await;
    let good = sign(Algorithm::ES256, &private, None, claims("u"));
    Connection::open(&server.url, &good, None, T).await.expect("ES256 token accepted");
    let rsa_private = other_rsa_key();
    assert_401(&server, &sign(Algorithm::RS256, &rsa_private, None, claims("u")), "(ES256)").await;
    let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(public_pem.as_bytes()), None, claims("u"));
    assert_401(&server, &forged, "(ES256)").await;
    let (other, _, _) = ec_key();
    assert_401(&server, &sign(Algorithm::ES256, &other, None, claims("u")), "signature").await;
}

#[test]
fn unusable_pem_files_are_startup_errors_naming_the_file() {
    // Config is plain data: it names the file; auth reads it and says what is wrong.
    let key_error = |path: PathBuf| {
        let config = Settings { jwt_public_key: Some(path), ..base_settings() }.validate().expect("a path");
        herald_server::auth::Authenticator::new(&config).unwrap_err().to_string()
    };
    let e = key_error(PathBuf::from("/nonexistent/herald/jwt.pem"));
    assert!(e.contains("/nonexistent/herald/jwt.pem"), "{e}");
    let junk = temp_file("junk.pem", "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n");
    let e = key_error(junk.clone());
    assert!(e.contains(junk.to_str().unwrap()) && e.contains("RS256"), "{e}");
    let both =
        Settings { jwt_public_key: Some(junk), jwt_secret: Some(Secret::new(SECRET)), ..base_settings() };
    let e = both.validate().unwrap_err().to_string();
    assert!(e.contains("exactly one"), "{e}");
}

// ---------------------------------------------------------------- JWKS

/// A JWKS endpoint under the test's control: the document, whether it is up, and a fetch count.
#[derive(Clone)]
struct Jwks {
    doc: Arc<parking_lot::Mutex<Value>>,
    up: Arc<std::sync::atomic::AtomicBool>,
    fetches: Arc<AtomicUsize>,
    url: String,
}

impl Jwks {
    async fn start(doc: Value) -> Jwks {
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        let jwks = Jwks {
            doc: Arc::new(parking_lot::Mutex::new(doc)),
            up: Arc::new(true.into()),
            fetches: Arc::default(),
            url: String::new(),
        };
        let state = jwks.clone();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    if state.up.load(Ordering::SeqCst) {
                        axum::Json(state.doc.lock().clone()).into_response()
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Jwks { url, ..jwks }
    }
}

fn ec_jwk(kid: &str, (x, y): &(String, String)) -> Value {
    json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256"})
}

#[tokio::test]
async fn jwks_key_rotation_is_picked_up_and_a_down_endpoint_keeps_the_cache() {
    let (key1, _, xy1) = ec_key();
    let (key2, _, xy2) = ec_key();
    let jwks = Jwks::start(json!({"keys": [ec_jwk("k1", &xy1)]})).await;
    let config =
        Settings { jwks_url: Some(jwks.url.clone()), jwks_min_refresh_s: Some(1), ..base_settings() }
            .validate()
            .unwrap();
    let server = TestServer::with_config(config).await;

    let token1 = sign(Algorithm::ES256, &key1, Some("k1"), claims("u"));
    Connection::open(&server.url, &token1, None, T).await.expect("k1 accepted");

    // Rotate: the provider now publishes only k2. A k2 token makes Herald refetch the set.
    *jwks.doc.lock() = json!({"keys": [ec_jwk("k2", &xy2)]});
    tokio::time::sleep(Duration::from_millis(1100)).await; // past jwks_min_refresh_s
    let token2 = sign(Algorithm::ES256, &key2, Some("k2"), claims("u"));
    Connection::open(&server.url, &token2, None, T).await.expect("rotated k2 accepted");
    // k1 is gone from the provider, and so from Herald.
    assert_401(&server, &token1, "no key with kid \"k1\"").await;

    // Refresh is rate limited: a burst of unknown kids costs at most one fetch per interval.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = jwks.fetches.load(Ordering::SeqCst);
    for i in 0..10 {
        let forged = sign(Algorithm::ES256, &key2, Some(&format!("random-{i}")), claims("u"));
        assert_401(&server, &forged, "no key with kid").await;
    }
    let fetched = jwks.fetches.load(Ordering::SeqCst) - before;
    assert!(fetched <= 1, "{fetched} fetches for 10 unknown kids within the interval");

    // The endpoint goes down: the cached k2 keeps working.
    jwks.up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let unknown = sign(Algorithm::ES256, &key2, Some("k3"), claims("u"));
    assert_401(&server, &unknown, "no key with kid").await; // triggers a failing refresh
    Connection::open(&server.url, &token2, None, T).await.expect("stale k2 still accepted");

    // Key confusion through JWKS: an HS256 token naming k2 is refused.
    let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(b"whatever"), Some("k2"), claims("u"));
    assert_401(&server, &forged, "(ES256)").await;
}

// ---------------------------------------------------------------- resume and tickets

#[tokio::test]
async fn resume_with_another_users_cursor_yields_only_own_events() {
    let server = TestServer::start().await;
    let alice = server.publisher.publish_run("alice", "ra").await.unwrap();
    let bob = server.publisher.publish_run("bob", "rb").await.unwrap();
    let alice_epoch = alice[0].epoch.clone();
    let alice_ids: Vec<_> = alice.iter().map(|r| r.id.clone()).collect();
    let bob_ids: Vec<_> = bob.iter().map(|r| r.id.clone()).collect();
    // Bob presents Alice's epoch and various seqs: whatever comes back is Bob's.
    for after in [0, 2, 4, 5, 1000] {
        let (mut conn, opened) = server.resume("bob", after, &alice_epoch).await;
        server.publisher.publish("bob", "custom", None, json!({"name": "tick"})).await.unwrap();
        let mut seen = opened.backlog.clone();
        seen.push(conn.next_event(T).await.unwrap());
        for event in &seen {
            assert_eq!(event.user_id, "bob", "after={after}: {event:?}");
            assert!(!alice_ids.contains(&event.id), "after={after}: Alice's event leaked: {event:?}");
        }
        assert!(seen.iter().all(|e| bob_ids.contains(&e.id) || e.event == "custom"));
    }
}

async fn ticket(server: &TestServer, user: &str, ttl_s: u64) -> String {
    let response = server
        .http()
        .post(format!("{}/v1/tickets", server.url))
        .bearer_auth(API_KEY)
        .json(&json!({"user_id": user, "ttl_s": ttl_s}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["ticket"].as_str().unwrap().to_owned()
}

async fn assert_ticket_refused(server: &TestServer, ticket: &str) {
    let (status, body) = handshake(server, &format!("?ticket={ticket}"), &[]).await.err().expect("refused");
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("ticket is unknown, expired or already used"), "{body}");
}

#[tokio::test]
async fn ticket_reuse_is_refused() {
    let server = TestServer::start().await;
    let t = ticket(&server, "u", 60).await;
    let mut conn = handshake(&server, &format!("?ticket={t}"), &[]).await.expect("first use");
    conn.read_opening(T).await.unwrap();
    assert_ticket_refused(&server, &t).await;
}

#[tokio::test]
async fn expired_ticket_is_refused() {
    let server = TestServer::start().await;
    let t = ticket(&server, "u", 1).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_ticket_refused(&server, &t).await;
}

#[tokio::test]
async fn forged_tickets_are_refused() {
    let server = TestServer::start().await;
    let real = ticket(&server, "u", 60).await;
    let mut flipped = real.into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    for forged in [String::from_utf8(flipped).unwrap(), "A".repeat(43), "x".into(), "%00".into()] {
        assert_ticket_refused(&server, &forged).await;
    }
}

// ---------------------------------------------------------------- origin and connection limits

#[tokio::test]
async fn origin_not_allowed_is_403() {
    let server = TestServer::with(Settings {
        allowed_origins: Some("https://app.example".into()),
        ..Settings::default()
    })
    .await;
    let auth = ("authorization", format!("Bearer {}", server.token("u")));
    let (status, body) = handshake(&server, "", &[auth.clone(), ("origin", "https://evil.example".into())])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(message(&body).contains("https://evil.example"), "{body}");
    // Look-alikes of the allowed origin are refused too.
    for origin in ["https://app.example.evil.example", "http://app.example", "null"] {
        let (status, _) =
            handshake(&server, "", &[auth.clone(), ("origin", origin.into())]).await.err().unwrap();
        assert_eq!(status, 403, "{origin}");
    }
    let mut ok = handshake(&server, "", &[auth, ("origin", "https://app.example".into())])
        .await
        .expect("allowed origin");
    ok.read_opening(T).await.unwrap();
}

#[tokio::test]
async fn the_33rd_connection_of_a_user_is_closed_with_4029() {
    let server = TestServer::start().await;
    let mut open = Vec::new();
    for _ in 0..32 {
        open.push(server.open("u").await.0);
    }
    let mut extra =
        Connection::connect(&server.url, &server.token("u"), None, AuthMode::Header).await.unwrap();
    match extra.next_frame(T).await {
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, 4029),
        other => panic!("expected close 4029, got {other:?}"),
    }
    // Another user is not affected.
    server.open("v").await;
}

#[tokio::test]
async fn connections_per_ip_over_the_limit_get_429_before_the_upgrade() {
    let server = TestServer::with(Settings { max_connections_per_ip: Some(3), ..Settings::default() }).await;
    let mut open = Vec::new();
    for user in ["a", "b", "c"] {
        open.push(server.open(user).await.0);
    }
    let (status, body) = refused(&server, &server.token("d")).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(message(&body).contains("max_connections_per_ip"), "{body}");
    // Closing one frees its slot.
    open.pop().unwrap().close().await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match Connection::connect(&server.url, &server.token("d"), None, AuthMode::Header).await {
            Ok(_) => break,
            Err(ClientError::Refused { status: 429, .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("slot was not freed: {e}"),
        }
    }
}

#[tokio::test]
async fn handshake_that_never_finishes_is_dropped() {
    let server = TestServer::with(Settings { handshake_timeout_s: Some(1), ..Settings::default() }).await;
    let addr = server.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap(); // and never the rest
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a half-sent handshake open for 5 s");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

// ---------------------------------------------------------------- frames

#[tokio::test]
async fn frame_of_100_kib_closes_with_1009() {
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(100 * 1024));
    conn.send_text(big).await.unwrap();
    match conn.next_frame(T).await {
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn flood_of_client_messages_is_refused_then_closed_with_1008() {
    let server = TestServer::start().await; // max_client_msgs_per_s = 20
    let (mut conn, _) = server.open("u").await;
    for _ in 0..200 {
        if conn.send_text(r#"{"type":"ping"}"#).await.is_err() {
            break;
        }
    }
    let (mut pongs, mut limited) = (0, 0);
    let code = loop {
        match conn.next_frame(T).await {
            Ok(ServerFrame::Pong) => pongs += 1,
            Ok(ServerFrame::Error { code, .. }) if code == "rate_limited" => limited += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(ClientError::Closed { code, .. }) => break code,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    };
    assert_eq!(code, 1008);
    assert!((20..30).contains(&pongs), "{pongs} pongs: the burst is 20");
    assert!(limited >= 20, "{limited} rate_limited error frames before the close");
}

#[tokio::test]
async fn a_client_within_the_rate_is_never_limited() {
    let server = TestServer::with(Settings { max_client_msgs_per_s: Some(50), ..Settings::default() }).await;
    let (mut conn, _) = server.open("u").await;
    for _ in 0..60 {
        conn.send_text(r#"{"type":"ping"}"#).await.unwrap();
        assert_eq!(conn.next_frame(T).await.unwrap(), ServerFrame::Pong);
        tokio::time::sleep(Duration::from_millis(25)).await; // 40/s
    }
}

// ---------------------------------------------------------------- publish API

#[tokio::test]
async fn publish_body_of_2_mib_is_413() {
    let server = TestServer::start().await;
    let body = json!({"user_id": "u", "event": "custom", "data": {"name": "x", "pad": "x".repeat(2 << 20)}});
    let response = server
        .http()
        .post(format!("{}/v1/events", server.url))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "too_large");
}

#[tokio::test]
async fn publish_without_or_with_a_wrong_api_key_is_401() {
    let server = TestServer::start().await;
    let body = json!({"user_id": "u", "event": "custom", "data": {"name": "x"}});
    let url = format!("{}/v1/events", server.url);
    let without = server.http().post(&url).json(&body).send().await.unwrap();
    assert_eq!(without.status(), 401);
    assert_eq!(without.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    for wrong in [&format!("{API_KEY}x"), "test-api-ke", "", "Bearer"] {
        let response = server.http().post(&url).bearer_auth(wrong).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 401, "{wrong:?}");
    }
    // A client JWT is not an API key.
    let response = server.http().post(&url).bearer_auth(server.token("u")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        server.http().get(format!("{}/v1/users/u/events", server.url)).send().await.unwrap().status(),
        401
    );
}

#[tokio::test]
async fn publish_rate_per_api_key_is_429_with_retry_after() {
    let server = TestServer::with(Settings {
        api_key: Some(Secret::new(format!("{API_KEY},second-key"))),
        publish_rate_per_s: Some(3),
        ..Settings::default()
    })
    .await;
    let body = json!({"user_id": "u", "event": "custom", "data": {"name": "x"}});
    let url = format!("{}/v1/events", server.url);
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let response = server.http().post(&url).bearer_auth(API_KEY).json(&body).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    assert!(statuses.len() >= 4, "{statuses:?}: the burst is 3");
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(limited.json::<Value>().await.unwrap()["error"]["code"], "rate_limited");
    // The other key has its own bucket.
    let response = server.http().post(&url).bearer_auth("second-key").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // After Retry-After, the first key publishes again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let response = server.http().post(&url).bearer_auth(API_KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

// ---------------------------------------------------------------- closing handshake

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    // Autobahn reported every closing handshake UNCLEAN: the server dropped the TCP connection
    // without flushing its reply to the client's close frame.
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    let bye = CloseFrame { code: 1000.into(), reason: "bye".into() };
    conn.send_raw(Message::Close(Some(bye))).await.unwrap();
    match conn.next_frame(T).await {
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, 1000),
        other => panic!("expected the server's close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn idle_tcp_connections_count_against_the_per_ip_limit() {
    let settings =
        Settings { max_connections_per_ip: Some(3), handshake_timeout_s: Some(60), ..Settings::default() };
    let server = TestServer::with(settings).await;
    let addr: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    // Three connections that never send a byte take 127.0.0.1's three slots.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // A fourth is closed at once, not after the 60 s handshake timeout.
    let mut fourth = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a 4th idle connection was kept open: {read:?}");
    // Another address is not affected.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = other.connect(addr).await.unwrap();
    other.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(T, other.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A connection that sends its request frees its slot: with one idle connection gone, the
    // freed slot serves requests again.
    drop(idle.pop());
    let health = format!("{}/health/live", server.url);
    let status = tokio::time::timeout(T, async {
        loop {
            // The server notices the close asynchronously; retry until the slot is free.
            match reqwest::Client::new().get(&health).send().await {
                Ok(r) => return r.status().as_u16(),
                Err(_) => tokio::task::yield_now().await,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
}
