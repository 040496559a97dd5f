//! The socket's own rules: ping/pong, error frames that keep the connection, size and type limits,
//! the per-user connection limit.

mod common;

use common::{T, TestServer};
use herald_client::ClientError;
use herald_protocol::ServerFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control as OpCtl, Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

fn error_code(frame: ServerFrame) -> String {
    match frame {
        ServerFrame::Error { code, .. } => code,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    conn.send_text(r#"{"type":"ping"}"#).await.unwrap();
    assert_eq!(conn.next_frame(T).await.unwrap(), ServerFrame::Pong);
}

#[tokio::test]
async fn bad_client_frames_get_error_frames_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    conn.send_text("this is not json").await.unwrap();
    assert_eq!(error_code(conn.next_frame(T).await.unwrap()), "invalid_json");
    conn.send_text(r#"{"type":"teleport"}"#).await.unwrap();
    assert_eq!(error_code(conn.next_frame(T).await.unwrap()), "unknown_type");
    conn.send_text(r#"{"type":"cancel"}"#).await.unwrap();
    assert_eq!(error_code(conn.next_frame(T).await.unwrap()), "invalid_frame");
    // Still open and delivering.
    server.publisher.publish("u", "agent_started", Some("r"), serde_json::json!({})).await.unwrap();
    assert_eq!(conn.next_event(T).await.unwrap().event, "agent_started");
}

#[tokio::test]
async fn cancel_without_upstream_is_an_error_frame_with_the_ref() {
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    conn.send_text(r#"{"type":"cancel","run_id":"r","ref":"c-1"}"#).await.unwrap();
    match conn.next_frame(T).await.unwrap() {
        ServerFrame::Error { code, reference, .. } => {
            assert_eq!(code, "upstream_unavailable");
            assert_eq!(reference.as_deref(), Some("c-1"));
        }
        other => panic!("{other:?}"),
    }
}

// A frame over max_message_bytes (100 KiB) closing with 1009 is in tests/attacks.rs.

#[tokio::test]
async fn binary_frame_closes_with_1003() {
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    conn.send_raw(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    match conn.next_frame(T).await {
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, 1003),
        other => panic!("expected close 1003, got {other:?}"),
    }
}

/// Sends one raw frame (any opcode, any payload) and expects the server to fail the connection
/// with a close frame carrying `code` (RFC 6455 §7.4.1), not a dropped TCP connection.
async fn raw_frame_closes_with(opcode: OpCode, payload: &[u8], code: u16) {
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    let header = FrameHeader { opcode, ..FrameHeader::default() };
    let frame = Frame::from_payload(header, payload.to_vec().into());
    conn.send_raw(Message::Frame(frame)).await.unwrap();
    match conn.next_frame(T).await {
        Err(ClientError::Closed { code: got, .. }) => assert_eq!(got, code),
        other => panic!("expected close {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn text_frame_with_invalid_utf8_closes_with_1007() {
    raw_frame_closes_with(OpCode::Data(OpData::Text), b"{\"type\":\"ping\xff\"}", 1007).await;
}

#[tokio::test]
async fn reserved_opcodes_close_with_1002() {
    raw_frame_closes_with(OpCode::Data(OpData::Reserved(3)), b"x", 1002).await;
    raw_frame_closes_with(OpCode::Control(OpCtl::Reserved(11)), b"", 1002).await;
}

#[tokio::test]
async fn connection_over_the_per_user_limit_closes_with_4029() {
    let server =
        TestServer::with(herald_server::Settings { max_connections_per_user: Some(2), ..Default::default() })
            .await;
    let (_a, _) = server.open("u").await;
    let (_b, _) = server.open("u").await;
    let mut third = herald_client::Connection::connect(
        &server.url,
        &server.token("u"),
        None,
        herald_client::AuthMode::Header,
    )
    .await
    .unwrap();
    match third.next_frame(T).await {
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, 4029),
        other => panic!("expected close 4029, got {other:?}"),
    }
    // Another user is not affected.
    let (_c, opened) = server.open("other").await;
    assert_eq!(opened.seq, 0);
}

#[tokio::test]
async fn server_pings_and_closes_a_client_that_never_answers() {
    // A raw TCP client that completes the handshake and then never reads or answers pings.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server =
        TestServer::with(herald_server::Settings { heartbeat_ms: Some(100), ..Default::default() }).await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {}\r\n\r\n",
        server.token("u")
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // Read everything until the server closes the TCP connection; it must, within a few beats.
    let mut received = Vec::new();
    let read = tokio::time::timeout(T, tcp.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "server never closed a connection that ignores pings");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // The close frame carries 4000 (0x0FA0) after the welcome and synced frames.
    assert!(received.windows(2).any(|w| w == [0x0F, 0xA0]), "no 4000 close frame in {received:?}");
}

/// Event frames go to the stream directly while tungstenite answers the client's pings on the
/// same stream. A client that pings between batches and reads nothing until the end (so the
/// server's writes block and the pongs wait behind them) gets every event and every pong whole
/// and in order.
#[tokio::test]
async fn pings_between_events_are_answered_and_every_frame_arrives_whole() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    const ROUNDS: u8 = 40;
    const PER_ROUND: usize = 5;
    let server = TestServer::start().await;
    let mut request = herald_client::ws_url(&server.url).into_client_request().unwrap();
    let bearer = format!("Bearer {}", server.token("u"));
    request.headers_mut().insert("authorization", bearer.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let pad = "p".repeat(1500);
    for round in 0..ROUNDS {
        ws.send(Message::Ping(vec![round; 125].into())).await.unwrap();
        let events: Vec<_> = (0..PER_ROUND)
            .map(|i| {
                serde_json::json!({"user_id": "u", "event": "custom",
                "data": {"name": format!("{round}-{i}"), "pad": pad}})
            })
            .collect();
        let (status, body) = server.publisher.post(&serde_json::json!({ "events": events })).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (mut pongs, mut names) = (Vec::new(), Vec::new());
    while names.len() < ROUNDS as usize * PER_ROUND || pongs.len() < ROUNDS as usize {
        let message = tokio::time::timeout(T, ws.next()).await.expect("frames keep coming").unwrap().unwrap();
        match message {
            Message::Pong(payload) => pongs.push(payload.to_vec()),
            Message::Text(text) => match serde_json::from_str::<ServerFrame>(text.as_str()).unwrap() {
                ServerFrame::Event(e) => {
                    assert_eq!(e.seq, names.len() as u64 + 1, "in order, no gaps");
                    assert_eq!(e.data["pad"], pad.as_str());
                    names.push(e.data["name"].as_str().unwrap().to_owned());
                }
                ServerFrame::Welcome { .. } | ServerFrame::Synced { .. } => {}
                other => panic!("unexpected frame {other:?}"),
            },
            other => panic!("unexpected message {other:?}"),
        }
    }
    let expected: Vec<String> =
        (0..ROUNDS).flat_map(|r| (0..PER_ROUND).map(move |i| format!("{r}-{i}"))).collect();
    assert_eq!(names, expected);
    assert_eq!(pongs, (0..ROUNDS).map(|r| vec![r; 125]).collect::<Vec<_>>());
}

/// A client that stops reading while event frames are written by the log (its socket caught
/// up, so each append goes straight to the stream) fills the socket mid-frame: the connection
/// takes over the frame's rest, and the pongs it owes go out after it. Reading again, the client
/// gets every event whole and in order, and every pong.
#[tokio::test]
async fn a_socket_filled_mid_frame_by_live_events_sends_the_rest_before_its_pongs() {
    use futures_util::{SinkExt, StreamExt};
    use herald_server::config::Settings;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    // 24 MiB: more than the kernel buffers of both ends hold on loopback.
    const REQUESTS: u8 = 24;
    const PER_REQUEST: usize = 20;
    let server = TestServer::with(Settings {
        max_pending_bytes: Some(256 << 20),
        max_body_bytes: Some(4 << 20),
        ..Settings::default()
    })
    .await;
    let mut request = herald_client::ws_url(&server.url).into_client_request().unwrap();
    let bearer = format!("Bearer {}", server.token("u"));
    request.headers_mut().insert("authorization", bearer.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // Welcome and synced: the connection is at the head, so its socket is tapped.
    for _ in 0..2 {
        tokio::time::timeout(T, ws.next()).await.unwrap().unwrap().unwrap();
    }
    let pad = "p".repeat(50_000);
    for round in 0..REQUESTS {
        ws.send(Message::Ping(vec![round; 16].into())).await.unwrap();
        let events: Vec<_> = (0..PER_REQUEST)
            .map(|i| serde_json::json!({"user_id": "u", "event": "custom", "data": {"name": format!("{round}-{i}"), "pad": pad}}))
            .collect();
        let (status, body) = server.publisher.post(&serde_json::json!({ "events": events })).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (mut pongs, mut seqs) = (Vec::new(), Vec::new());
    while seqs.len() < REQUESTS as usize * PER_REQUEST || pongs.len() < REQUESTS as usize {
        match tokio::time::timeout(T, ws.next()).await.expect("frames keep coming").unwrap().unwrap() {
            Message::Pong(payload) => pongs.push(payload.to_vec()),
            Message::Text(text) => match serde_json::from_str::<ServerFrame>(text.as_str()).unwrap() {
                ServerFrame::Event(e) => {
                    assert_eq!(e.data["pad"], pad.as_str(), "seq {}: the frame is whole", e.seq);
                    seqs.push(e.seq);
                }
                other => panic!("unexpected frame {other:?}"),
            },
            other => panic!("unexpected message {other:?}"),
        }
    }
    assert_eq!(seqs, (1..=(REQUESTS as u64 * PER_REQUEST as u64)).collect::<Vec<_>>(), "in order, no gaps");
    assert_eq!(pongs, (0..REQUESTS).map(|r| vec![r; 16]).collect::<Vec<_>>());
}

/// RFC 8441: a WebSocket opened by an extended CONNECT over an HTTP/2 connection (prior
/// knowledge, no TLS) gets the same stream as over HTTP/1.1. It shares its TCP connection with
/// other HTTP/2 streams, so its frames go through HTTP/2 framing, never raw to the connection:
/// a request on another stream of the same connection still gets its answer afterwards.
#[tokio::test]
async fn a_websocket_over_http2_gets_its_events_and_leaves_the_connection_usable() {
    use common::http2::Http2;
    use futures_util::StreamExt;
    let server = TestServer::start().await;
    let mut h2 = Http2::connect(&server).await;
    let mut response = h2.extended_connect("/ws", &server.token("u")).await;
    assert_eq!(response.status(), 200, "an extended CONNECT is accepted with a 2xx");
    let mut ws = Http2::websocket(&mut response).await;
    let mut next = async || -> ServerFrame {
        let message = tokio::time::timeout(T, ws.next()).await.expect("a frame").unwrap().unwrap();
        serde_json::from_str(message.to_text().unwrap()).unwrap()
    };
    assert!(matches!(next().await, ServerFrame::Welcome { .. }));
    assert!(matches!(next().await, ServerFrame::Synced { .. }));
    for i in 0..3 {
        let (status, body) = server
            .publisher
            .post(&serde_json::json!({"user_id": "u", "event": "custom", "data": {"name": format!("e{i}")}}))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        match next().await {
            ServerFrame::Event(e) => assert_eq!(e.data["name"], format!("e{i}")),
            other => panic!("expected an event, got {other:?}"),
        }
    }
    h2.assert_usable().await;
}
