//! The publisher socket (`GET /v1/publish`) on real sockets: answers in order with the HTTP
//! API's codes, per-user append order under many frames in flight, batches all-or-nothing,
//! backpressure on a publisher that does not read, idempotent retries and the drain.

mod common;

use common::{API_KEY, T, TestServer};
use herald_client::publish_socket::{PublishSocket, frame, publish_url, receipts};
use herald_client::{ClientError, PUBLISH_TIMEOUT};
use herald_protocol::{Outcome, PublishAnswer};
use herald_server::Settings;
use herald_server::engine::Engine;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::RwLock;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// `herald_publish_in_flight` is one gauge for the whole test process: the test that checks its
/// bound runs alone (write), the others may overlap each other (read).
static IN_FLIGHT_GAUGE: RwLock<()> = RwLock::const_new(());

fn custom(user: &str, i: usize) -> Value {
    json!({"user_id": user, "event": "custom", "data": {"name": "n", "i": i}})
}

fn text(user: &str, run: &str, delta: &str) -> Value {
    json!({"user_id": user, "event": "agent_text", "run_id": run, "data": {"delta": delta}})
}

fn started(user: &str, run: &str) -> Value {
    json!({"user_id": user, "event": "agent_started", "run_id": run})
}

/// The answer's ref as JSON text (`"a"`, `7`, `null`).
fn reference(answer: &PublishAnswer) -> String {
    answer.reference.as_ref().map_or("null".to_owned(), |r| r.get().to_owned())
}

/// The answer's error code, or a panic naming what came instead.
fn code(answer: &PublishAnswer) -> &str {
    match &answer.outcome {
        Outcome::Error(e) => &e.code,
        other => panic!("expected an error answer, got {other:?}"),
    }
}

async fn connect(server: &TestServer) -> PublishSocket {
    PublishSocket::connect(&server.url, API_KEY).await.expect("publisher socket opens")
}

/// Seq of `user`'s log head, from the (memory) engine itself.
async fn head_seq(server: &TestServer, user: &str) -> u64 {
    let user = herald_protocol::UserId::parse(user).unwrap();
    server.memory().history(&user, 0, None, 1).await.unwrap().seq
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let text =
        server.http().get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    text.lines().filter_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok()).sum()
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_401_json_before_the_upgrade() {
    let _turn = IN_FLIGHT_GAUGE.read().await;
    let server = TestServer::start().await;
    for key in ["wrong-key", ""] {
        match PublishSocket::connect(&server.url, key).await {
            Err(ClientError::Refused { status, body }) => {
                assert_eq!(status, 401);
                let body: Value = serde_json::from_str(&body).expect("JSON error body");
                assert_eq!(body["error"]["code"], "unauthorized");
            }
            other => panic!("expected 401, got {:?}", other.err()),
        }
    }
    let mut request = publish_url(&server.url).into_client_request().unwrap();
    request.headers_mut().remove("authorization");
    assert!(matches!(
        tokio_tungstenite::connect_async(request).await,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401
    ));
    let plain =
        server.http().get(format!("{}/v1/publish", server.url)).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(plain.status(), 400, "a GET that is not an upgrade is told so");
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_websocket");
}

#[tokio::test]
async fn frames_in_flight_are_appended_per_user_in_the_order_sent_and_answered_in_order() {
    let _turn = IN_FLIGHT_GAUGE.read().await;
    keeps_order_with_frames_in_flight(TestServer::start().await, 1500).await;
}

/// On Redis appends take a round trip each, so frames of different users really overlap.
#[tokio::test]
async fn frames_in_flight_keep_their_order_on_redis() {
    let _turn = IN_FLIGHT_GAUGE.read().await;
    let server = TestServer::redis(&common::unique_prefix("publish-socket"), Settings::default()).await;
    keeps_order_with_frames_in_flight(server, 300).await;
}

async fn keeps_order_with_frames_in_flight(server: TestServer, tokens: usize) {
    let (mut alice, _) = server.open("alice").await;
    let (mut bob, _) = server.open("bob").await;
    let (mut tx, mut rx) = connect(&server).await.split();
    // Two runs interleaved, every frame sent before any answer is read.
    let mut sent = Vec::new();
    for (user, run) in [("alice", "ra"), ("bob", "rb")] {
        sent.push((user, started(user, run)));
    }
    for i in 0..tokens {
        for (user, run) in [("alice", "ra"), ("bob", "rb")] {
            sent.push((user, text(user, run, &format!("{user}-{i}"))));
        }
    }
    for (i, (_, event)) in sent.iter().enumerate() {
        tx.feed_text(frame(&format!("f{i}"), std::slice::from_ref(event))).await.unwrap();
    }
    tx.flush().await.unwrap();
    let mut last_seq = std::collections::HashMap::new();
    for (i, (user, _)) in sent.iter().enumerate() {
        let answer = rx.next_answer(T).await.unwrap();
        assert_eq!(reference(&answer), format!("\"f{i}\""), "answers come in the order sent");
        let receipt = receipts(answer).unwrap().remove(0);
        let previous = last_seq.insert(*user, receipt.seq).unwrap_or(0);
        assert_eq!(receipt.seq, previous + 1, "{user}'s frames are appended in the order sent");
    }
    for (user, conn) in [("alice", &mut alice), ("bob", &mut bob)] {
        let events = conn.events(tokens + 1, T).await.unwrap();
        assert_eq!(events[0].event, "agent_started");
        let deltas: Vec<_> =
            events[1..].iter().map(|e| e.data["delta"].as_str().unwrap().to_owned()).collect();
        let expected: Vec<_> = (0..tokens).map(|i| format!("{user}-{i}")).collect();
        assert_eq!(deltas, expected, "{user} receives the tokens in order");
    }
}

#[tokio::test]
async fn a_batch_is_all_or_nothing_and_a_refused_frame_keeps_the_socket() {
    let _turn = IN_FLIGHT_GAUGE.read().await;
    let server = TestServer::start().await;
    let mut socket = connect(&server).await;
    let bad_field = [
        started("u", "r"),
        text("u", "r", "a"),
        json!({"user_id": "u", "event": "tool_executing", "run_id": "r"}),
    ];
    socket.send_text(frame("b1", &bad_field)).await.unwrap();
    let answer = socket.next_answer(T).await.unwrap();
    assert_eq!((reference(&answer).as_str(), code(&answer)), ("\"b1\"", "invalid_event"));
    match answer.outcome {
        Outcome::Error(e) => assert!(e.message.starts_with("events[2]: data.tool_name"), "{}", e.message),
        _ => unreachable!(),
    }
    let bad_rule = [started("u", "r"), text("u", "r", "a"), started("u", "r")];
    socket.send_text(frame("b2", &bad_rule)).await.unwrap();
    let answer = socket.next_answer(T).await.unwrap();
    assert_eq!(code(&answer), "run_state");
    assert_eq!(head_seq(&server, "u").await, 0, "nothing of a refused batch is stored");
    let good = [started("u", "r"), text("u", "r", "a"), text("u", "r", "b")];
    let seqs: Vec<u64> = socket.publish("b3", &good).await.unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
}

#[tokio::test]
async fn every_refusal_has_the_http_code_and_the_socket_stays_open() {
    let _turn = IN_FLIGHT_GAUGE.read().await;
    let server =
        TestServer::with(Settings { max_body_bytes: Some(4096), max_batch: Some(3), ..Settings::default() })
            .await;
    let mut socket = connect(&server).await;
    let mut expect = async |text: String, want_ref: &str, want_code: &str| {
        socket.send_text(text).await.unwrap();
        let answer = socket.next_answer(T).await.unwrap();
        assert_eq!((reference(&answer).as_str(), code(&answer)), (want_ref, want_code));
    };
    expect("not json".into(), "null", "invalid_json").await;
    expect(r#"{"ref":"cut","event":{"user_id":"#.into(), "\"cut\"", "invalid_json").await;
    expect(frame("e1", &[json!({"event": "agent_started", "run_id": "r"})]), "\"e1\"", "invalid_event").await;
    expect(r#"{"ref":"e2","evnt":{}}"#.into(), "\"e2\"", "invalid_event").await;
    expect(r#"{"ref":3}"#.into(), "3", "invalid_event").await;
    expect(frame("r1", &[text("u", "never-started", "x")]), "\"r1\"", "run_state").await;
    expect(
        frame("t1", &[custom("u", 1), custom("u", 2), custom("u", 3), custom("u", 4)]),
        "\"t1\"",
        "too_large",
    )
    .await;
    let big = json!({"user_id": "u", "event": "custom", "data": {"name": "n", "pad": "x".repeat(5000)}});
    expect(frame("t2", &[big]), "\"t2\"", "too_large").await;
    socket.send_raw(Message::binary(b"{}".to_vec())).await.unwrap();
    assert_eq!(code(&socket.next_answer(T).await.unwrap()), "invalid_json");
    assert_eq!(head_seq(&server, "u").await, 0, "nothing refused was stored");
    let receipt = socket.publish("ok", &[custom("u", 0)]).await.unwrap();
    assert_eq!(receipt[0].seq, 1, "the socket still publishes after every refusal");
}

#[tokio::test]
async fn a_frame_over_twice_the_body_limit_closes_with_1009() {
    let _turn = IN_FLIGHT_GAUGE.read().await;
    let server = TestServer::with(Settings { max_body_bytes: Some(1024), ..Settings::default() }).await;
    let mut socket = connect(&server).await;
    socket.send_text("x".repeat(4096)).await.unwrap();
    match socket.next_answer(T).await {
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn the_publish_rate_limit_refuses_frames_with_a_retry_hint() {
    let _turn = IN_FLIGHT_GAUGE.read().await;
    let server = TestServer::with(Settings { publish_rate_per_s: Some(3), ..Settings::default() }).await;
    let (mut tx, mut rx) = connect(&server).await.split();
    const FRAMES: usize = 20;
    for i in 0..FRAMES {
        tx.feed_text(frame(&i.to_string(), &[custom("u", i)])).await.unwrap();
    }
    tx.flush().await.unwrap();
    let (mut ok, mut limited) = (0, 0);
    for i in 0..FRAMES {
        let answer = rx.next_answer(T).await.unwrap();
        assert_eq!(reference(&answer), format!("\"{i}\""));
        match answer.outcome {
            Outcome::Receipt(_) => ok += 1,
            Outcome::Error(e) => {
                assert_eq!(e.code, "rate_limited");
                assert!(e.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 1000), "{e:?}");
                limited += 1;
            }
            Outcome::Receipts(_) => panic!("a single event gets a receipt"),
        }
    }
    assert!(limited > 0, "a burst of {FRAMES} over a rate of 3/s is limited");
    assert_eq!(head_seq(&server, "u").await, ok as u64, "only accepted frames are stored");
}

#[tokio::test]
async fn an_unreachable_engine_answers_not_ready_and_keeps_the_socket() {
    let _turn = IN_FLIGHT_GAUGE.read().await;
    let redis = common::servers::PrivateRedis::start(&[]);
    let port = redis.port;
    let server = TestServer::redis_at(Settings {
        engine: Some("redis".into()),
        redis_url: Some(format!("redis://127.0.0.1:{port}/0")),
        ..Settings::default()
    })
    .await;
    let mut socket = connect(&server).await;
    socket.publish("up", &[custom("u", 0)]).await.unwrap();
    redis.stop();
    socket.send_text(frame("down", &[custom("u", 1)])).await.unwrap();
    let answer = socket.next_answer(PUBLISH_TIMEOUT).await.unwrap();
    assert_eq!((reference(&answer).as_str(), code(&answer)), ("\"down\"", "not_ready"));
    socket.send_text("{").await.unwrap();
    assert_eq!(code(&socket.next_answer(T).await.unwrap()), "invalid_json", "the socket stays open");
}

#[tokio::test]
async fn a_retry_with_the_same_id_after_a_dropped_socket_is_delivered_once() {
    let _turn = IN_FLIGHT_GAUGE.read().await;
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    let event = json!({"user_id": "u", "event": "custom", "id": "evt-1", "data": {"name": "n"}});
    let mut first = connect(&server).await;
    first.send_text(frame("try-1", std::slice::from_ref(&event))).await.unwrap();
    drop(first); // gone before the answer: the publisher cannot know whether it was stored
    let mut second = connect(&server).await;
    let receipt = second.publish("try-2", std::slice::from_ref(&event)).await.unwrap().remove(0);
    assert_eq!((receipt.id.as_str(), receipt.seq), ("evt-1", 1));
    let again = second.publish("try-3", &[event]).await.unwrap().remove(0);
    assert_eq!((again.seq, again.duplicate), (1, true), "a retry returns the first receipt");
    second.publish("after", &[custom("u", 9)]).await.unwrap();
    let delivered = conn.events(2, T).await.unwrap();
    assert_eq!(delivered[0].id, "evt-1");
    assert_eq!(delivered[1].data["i"], 9, "the retried event was delivered once");
}

#[tokio::test]
async fn a_publisher_that_does_not_read_its_answers_is_not_read_either() {
    let _turn = IN_FLIGHT_GAUGE.write().await;
    const MAX: usize = 4;
    const FRAMES: usize = 2000;
    // A long heartbeat: a publisher that reads nothing would otherwise be closed (4000) after two.
    let server = TestServer::with(Settings {
        publish_max_in_flight: Some(MAX),
        heartbeat_ms: Some(600_000),
        ..Settings::default()
    })
    .await;
    // A small receive buffer on our side and 4 KiB answers (the ref is echoed): the answers of
    // all frames cannot fit in the kernel's buffers (server send buffer at most 4 MiB here).
    let addr = server.url.strip_prefix("http://").unwrap().parse().unwrap();
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp.connect(addr).await.unwrap();
    let mut request = publish_url(&server.url).into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {API_KEY}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let (mut tx, mut rx) = PublishSocket::from_stream(ws).split();
    let pad = "r".repeat(4096);
    let writer = tokio::spawn(async move {
        for i in 0..FRAMES {
            tx.feed_text(frame(&format!("{i}-{pad}"), &[custom("bp", i)])).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx
    });
    // Wait until the server holds MAX frames and its count of stored events stops moving.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = None;
    let stored = loop {
        assert!(tokio::time::Instant::now() < deadline, "the server never stopped reading");
        let in_flight = metric(&server, "herald_publish_in_flight").await;
        assert!(in_flight <= MAX as f64, "in flight {in_flight} over the bound {MAX}");
        let stored = head_seq(&server, "bp").await;
        if in_flight == MAX as f64 && last == Some(stored) {
            break stored;
        }
        last = (in_flight == MAX as f64).then_some(stored);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        (stored as usize) < FRAMES - MAX,
        "the server stored {stored} of {FRAMES} frames for a publisher that reads nothing"
    );
    // Reading the answers lets the rest through, all of it, in order.
    for i in 0..FRAMES {
        let answer = rx.next_answer(T).await.unwrap();
        assert!(reference(&answer).starts_with(&format!("\"{i}-")), "answer {i} in order");
        assert_eq!(receipts(answer).unwrap()[0].seq, i as u64 + 1);
    }
    writer.await.unwrap();
}

#[tokio::test]
async fn on_drain_the_socket_answers_what_it_read_then_closes_with_1001() {
    let _turn = IN_FLIGHT_GAUGE.read().await;
    let server = TestServer::start().await;
    let (mut tx, mut rx) = connect(&server).await.split();
    const FRAMES: usize = 300;
    for i in 0..FRAMES {
        tx.feed_text(frame(&i.to_string(), &[custom("d", i)])).await.unwrap();
    }
    tx.flush().await.unwrap();
    let first = rx.next_answer(T).await.unwrap();
    assert_eq!(reference(&first), "\"0\"");
    server.drain();
    let mut answered = 1;
    let close = loop {
        match rx.next_answer(T).await {
            Ok(answer) => {
                assert_eq!(reference(&answer), format!("\"{answered}\""), "answers stay in order");
                assert!(matches!(answer.outcome, Outcome::Receipt(_)), "{answer:?}");
                answered += 1;
            }
            Err(ClientError::Closed { code, .. }) => break code,
            Err(e) => panic!("expected answers then close 1001, got {e}"),
        }
    };
    assert_eq!(close, 1001);
    assert_eq!(
        head_seq(&server, "d").await,
        answered as u64,
        "every frame read was answered, none stored unanswered"
    );
}

#[tokio::test]
async fn a_publisher_that_never_answers_pings_is_closed_with_4000() {
    let _turn = IN_FLIGHT_GAUGE.read().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::with(Settings { heartbeat_ms: Some(50), ..Settings::default() }).await;
    // A raw client: it reads what the server sends but, unlike a WebSocket library, never pongs.
    let mut tcp = tokio::net::TcpStream::connect(server.url.strip_prefix("http://").unwrap()).await.unwrap();
    let handshake = format!(
        "GET /v1/publish HTTP/1.1\r\nHost: herald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {API_KEY}\r\n\r\n"
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let mut pings = 0;
    let code = tokio::time::timeout(T, async {
        loop {
            let (opcode, len) = (tcp.read_u8().await.unwrap() & 0x0f, tcp.read_u8().await.unwrap() & 0x7f);
            let mut payload = vec![0; usize::from(len)];
            tcp.read_exact(&mut payload).await.unwrap();
            match opcode {
                0x9 => pings += 1,
                0x8 => break u16::from_be_bytes([payload[0], payload[1]]),
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    })
    .await
    .expect("the server closes a silent publisher");
    assert_eq!((pings, code), (2, 4000), "two unanswered pings, then close 4000");
}

/// RFC 8441: a backend whose HTTP client speaks HTTP/2 opens the publisher socket with an
/// extended CONNECT (prior knowledge, no TLS); it is answered like `GET /v1/publish`, the key
/// is checked before the upgrade, and the connection's other streams still work after it.
#[tokio::test]
async fn the_publisher_socket_opens_over_http2_with_an_extended_connect() {
    use common::http2::Http2;
    use futures_util::{SinkExt, StreamExt};
    let _turn = IN_FLIGHT_GAUGE.read().await;
    let server = TestServer::start().await;
    let mut h2 = Http2::connect(&server).await;

    let refused = h2.extended_connect("/v1/publish", "not-the-key").await;
    assert_eq!(refused.status(), 401, "the key is checked before the upgrade");

    let mut response = h2.extended_connect("/v1/publish", API_KEY).await;
    assert_eq!(response.status(), 200, "an extended CONNECT is accepted with a 2xx");
    let mut ws = Http2::websocket(&mut response).await;
    ws.send(Message::text(frame("h2", &[custom("u", 1), custom("u", 2)]))).await.unwrap();
    let message = tokio::time::timeout(T, ws.next()).await.expect("an answer").unwrap().unwrap();
    let answer: PublishAnswer = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(reference(&answer), "\"h2\"");
    let seqs: Vec<u64> = receipts(answer).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(head_seq(&server, "u").await, 2);
    h2.assert_usable().await;
}
