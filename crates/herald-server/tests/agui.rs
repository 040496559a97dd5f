//! The AG-UI bridge against a real server over real HTTP: the SSE stream (golden path, exact
//! resume with Last-Event-ID, reset), the inbound endpoint (WebSocket clients see the mapped
//! events; run rules answer 409) and the round trip AG-UI in → AG-UI out.

mod common;

use common::{API_KEY, T, TestServer, names, seqs};
use herald_server::Settings;
use serde_json::{Value, json};

/// One SSE message: its `id:` (if any) and its JSON `data:`.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    id: Option<String>,
    data: Value,
}

/// A minimal SSE reader over a streaming reqwest response.
struct Sse {
    response: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(server: &TestServer, user: &str, query: &str, last_event_id: Option<&str>) -> Sse {
        let mut request = server
            .http()
            .get(format!("{}/v1/agui/stream{query}", server.url))
            .bearer_auth(server.token(user));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Sse { response, buf: String::new() }
    }

    /// The next message with data (comments and id-only messages are skipped).
    async fn next(&mut self) -> Message {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("data is JSON"));
                    }
                }
                if let Some(data) = data {
                    return Message { id, data };
                }
                continue;
            }
            let chunk = tokio::time::timeout(T, self.response.chunk())
                .await
                .expect("an SSE message in time")
                .unwrap()
                .expect("stream still open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Messages up to and including the first of type `until`.
    async fn until(&mut self, until: &str) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await;
            let done = m.data["type"] == until;
            out.push(m);
            if done {
                return out;
            }
        }
    }
}

fn types(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.data["type"].as_str().unwrap().to_owned()).collect()
}

/// Text, reasoning and two tool calls.
fn golden(user: &str, run: &str) -> Vec<Value> {
    let e = |event: &str, data: Value| json!({"user_id": user, "run_id": run, "thread_id": "t1", "event": event, "data": data});
    vec![
        e("agent_started", json!({})),
        e("agent_thinking", json!({"text": "Let me look "})),
        e("agent_thinking", json!({"text": "that up."})),
        e(
            "tool_executing",
            json!({"tool_name": "search", "tool_call_id": "c1", "parameters": {"q": "herald"}}),
        ),
        e("tool_completed", json!({"tool_name": "search", "tool_call_id": "c1", "result": "found"})),
        e("tool_executing", json!({"tool_name": "calc", "tool_call_id": "c2", "parameters": {"e": "1+1"}})),
        e("tool_completed", json!({"tool_name": "calc", "tool_call_id": "c2", "result": {"value": 2}})),
        e("agent_text", json!({"delta": "Herald is "})),
        e("agent_text", json!({"delta": "a gateway."})),
        e("agent_completed", json!({"result": "ok"})),
    ]
}

const GOLDEN_TYPES: [&str; 20] = [
    "RUN_STARTED",
    "REASONING_START",
    "REASONING_MESSAGE_START",
    "REASONING_MESSAGE_CONTENT",
    "REASONING_MESSAGE_CONTENT",
    "REASONING_MESSAGE_END",
    "REASONING_END",
    "TOOL_CALL_START",
    "TOOL_CALL_ARGS",
    "TOOL_CALL_END",
    "TOOL_CALL_RESULT",
    "TOOL_CALL_START",
    "TOOL_CALL_ARGS",
    "TOOL_CALL_END",
    "TOOL_CALL_RESULT",
    "TEXT_MESSAGE_START",
    "TEXT_MESSAGE_CONTENT",
    "TEXT_MESSAGE_CONTENT",
    "TEXT_MESSAGE_END",
    "RUN_FINISHED",
];

async fn publish_all(server: &TestServer, events: &[Value]) {
    let (status, body) = server.publisher.post(&json!({ "events": events })).await.unwrap();
    assert_eq!(status, 200, "{body}");
}

async fn post_agui(server: &TestServer, body: &Value) -> (u16, Value) {
    post_agui_keyed(server, body, None).await
}

/// [`post_agui`] with an `Idempotency-Key` header of these bytes.
async fn post_agui_keyed(server: &TestServer, body: &Value, key: Option<&[u8]>) -> (u16, Value) {
    let mut request = server.http().post(format!("{}/v1/agui/events", server.url)).bearer_auth(API_KEY);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", reqwest::header::HeaderValue::from_bytes(key).unwrap());
    }
    let response = request.json(body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn golden_path_streams_agui_events_with_resume_ids() {
    let server = TestServer::start().await;
    let mut sse = Sse::open(&server, "u", "", None).await;
    publish_all(&server, &golden("u", "r1")).await;
    let got = sse.until("RUN_FINISHED").await;
    assert_eq!(types(&got), GOLDEN_TYPES);
    let first = &got[0].data;
    assert_eq!(first["threadId"], "t1");
    assert_eq!(first["runId"], "r1");
    assert!(first["timestamp"].as_i64().unwrap() > 1_600_000_000_000, "timestamp in ms");
    assert_eq!(got[8].data["delta"], r#"{"q":"herald"}"#);
    assert_eq!(
        got[10].data,
        json!({"type": "TOOL_CALL_RESULT", "messageId": got[10].data["messageId"], "toolCallId": "c1", "content": "found", "role": "tool", "timestamp": got[10].data["timestamp"]})
    );
    assert_eq!(got[14].data["content"], r#"{"value":2}"#);
    assert_eq!(got[19].data["result"], "ok");
    // The last AG-UI event of each Herald event carries `<epoch>:<seq>`; seqs 1..=10 in order.
    let ids: Vec<u64> = got
        .iter()
        .filter_map(|m| m.id.as_deref())
        .map(|id| id.rsplit_once(':').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=10).collect::<Vec<u64>>());
    assert!(got[19].id.is_some(), "RUN_FINISHED ends the last group");
}

#[tokio::test]
async fn last_event_id_mid_run_resumes_with_exactly_the_remaining_events() {
    let server = TestServer::start().await;
    let run = golden("u", "r1");
    // A reference stream that never disconnects.
    let mut whole = Sse::open(&server, "u", "", None).await;
    let mut cut = Sse::open(&server, "u", "", None).await;
    publish_all(&server, &run[..8]).await; // up to the first agent_text: a message is open
    let before = cut.until("TEXT_MESSAGE_CONTENT").await;
    let last_id = before.iter().rev().find_map(|m| m.id.clone()).unwrap();
    assert!(last_id.ends_with(":8"), "{last_id}");
    drop(cut);
    publish_all(&server, &run[8..]).await;
    let reference = whole.until("RUN_FINISHED").await;
    let mut resumed = Sse::open(&server, "u", "", Some(&last_id)).await;
    let rest = resumed.until("RUN_FINISHED").await;
    let at = reference.iter().position(|m| m.id.as_deref() == Some(last_id.as_str())).unwrap();
    // The resumed stream is valid AG-UI on its own: the run and the open message are re-opened
    // (same ids, no resume id), then exactly the remaining events.
    assert_eq!(rest[2..], reference[at + 1..], "exactly the remaining events");
    assert_eq!(
        types(&rest),
        ["RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED"]
    );
    assert_eq!(rest[0].data["runId"], "r1");
    assert_eq!(rest[1].data["messageId"], rest[2].data["messageId"]);
    assert!(rest[..2].iter().all(|m| m.id.is_none()), "{rest:?}");

    // `?after=` with a bare seq resumes the same way.
    let seq = last_id.rsplit_once(':').unwrap().1;
    let mut by_query = Sse::open(&server, "u", &format!("?after={seq}"), None).await;
    assert_eq!(by_query.until("RUN_FINISHED").await, rest);
}

#[tokio::test]
async fn stale_or_foreign_cursor_yields_herald_reset_then_the_active_run() {
    let server = TestServer::with(Settings { history_size: Some(4), ..Default::default() }).await;
    let run = golden("u", "r1");
    publish_all(&server, &run[..2]).await; // r1 active: started, thinking
    for i in 0..4 {
        let e = json!({"user_id": "u", "event": "custom", "data": {"name": "tick", "i": i}});
        server.publisher.post(&e).await.unwrap();
    }
    // Retained: 3..=6; the active run's start is trimmed, yet its compacted state is whole.
    let epoch = {
        let mut s = Sse::open(&server, "u", "", None).await;
        publish_all(&server, &[json!({"user_id": "u", "run_id": "r2", "event": "agent_started"})]).await;
        // The snapshot (r1, no ids) comes first, then r2's start live, with its id.
        let live = loop {
            let m = s.next().await;
            if m.data["runId"] == "r2" {
                break m;
            }
            assert_eq!(m.id, None);
        };
        live.id.unwrap().split_once(':').unwrap().0.to_owned()
    };
    for cursor in [format!("{epoch}:1"), "other-epoch:5".to_owned(), format!("{epoch}:99")] {
        let mut sse = Sse::open(&server, "u", "", Some(&cursor)).await;
        // The reset is a valid AG-UI run of its own: RUN_STARTED, the CUSTOM reset, RUN_FINISHED.
        let started = sse.next().await;
        assert_eq!(
            (started.data["type"].as_str(), started.data["threadId"].as_str()),
            (Some("RUN_STARTED"), Some("herald"))
        );
        let reset = sse.next().await;
        assert_eq!(reset.data["type"], "CUSTOM", "{cursor}");
        assert_eq!(reset.data["name"], "herald.reset");
        assert_eq!(reset.data["value"]["epoch"], epoch.as_str());
        assert_eq!(reset.id, None, "the reset itself moves no cursor");
        let finished = sse.next().await;
        assert_eq!(
            (finished.data["type"].as_str(), &finished.data["runId"]),
            (Some("RUN_FINISHED"), &started.data["runId"])
        );
        // Then the snapshot of the active runs: r1 from its start, then r2. Snapshot messages
        // carry no id (a resume point inside a snapshot would skip the rest of it).
        let snapshot = sse.until("RUN_STARTED").await;
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot[0].data["runId"], "r1");
        let r1 = sse.until("RUN_STARTED").await;
        let types: Vec<&str> = r1.iter().map(|m| m.data["type"].as_str().unwrap()).collect();
        assert_eq!(types[..2], ["REASONING_START", "REASONING_MESSAGE_START"]);
        assert_eq!(r1.last().unwrap().data["runId"], "r2");
        assert!(r1.iter().chain(&snapshot).all(|m| m.id.is_none()), "{r1:?}");
    }
}

fn agui_run(thread: &str, run: &str) -> Value {
    json!([
        {"type": "RUN_STARTED", "threadId": thread, "runId": run},
        {"type": "REASONING_START", "messageId": "p1"},
        {"type": "REASONING_MESSAGE_START", "messageId": "m0", "role": "reasoning"},
        {"type": "REASONING_MESSAGE_CONTENT", "messageId": "m0", "delta": "thinking"},
        {"type": "REASONING_MESSAGE_END", "messageId": "m0"},
        {"type": "REASONING_END", "messageId": "p1"},
        {"type": "TOOL_CALL_START", "toolCallId": "c1", "toolCallName": "search", "parentMessageId": "m1"},
        {"type": "TOOL_CALL_ARGS", "toolCallId": "c1", "delta": "{\"q\":\"herald\"}"},
        {"type": "TOOL_CALL_END", "toolCallId": "c1"},
        {"type": "TOOL_CALL_RESULT", "messageId": "m2", "toolCallId": "c1", "content": "found", "role": "tool"},
        {"type": "TEXT_MESSAGE_START", "messageId": "m3", "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m3", "delta": "Hello "},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m3", "delta": "there"},
        {"type": "TEXT_MESSAGE_END", "messageId": "m3"},
        {"type": "STATE_SNAPSHOT", "snapshot": {"step": 3}},
        {"type": "CUSTOM", "name": "app.note", "value": {"k": 1}},
        {"type": "RUN_FINISHED", "threadId": thread, "runId": run, "result": {"answer": 42}},
    ])
}

#[tokio::test]
async fn inbound_agui_run_reaches_websocket_clients_as_herald_events() {
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    let (status, body) =
        post_agui(&server, &json!({"user_id": "u", "thread_id": "t1", "events": agui_run("t1", "r1")})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 9);
    let events = conn.events(9, T).await.unwrap();
    assert_eq!(
        names(&events),
        [
            "agent_started",
            "agent_thinking",
            "tool_executing",
            "tool_completed",
            "agent_text",
            "agent_text",
            "custom",
            "custom",
            "agent_completed"
        ]
    );
    assert!(events.iter().all(|e| e.run_id.as_deref() == Some("r1") && e.thread_id.as_deref() == Some("t1")));
    assert_eq!(events[1].data["text"], "thinking");
    assert_eq!(events[2].data["parameters"], json!({"q": "herald"}));
    assert_eq!(events[2].data["tool_call_id"], "c1");
    assert_eq!(events[3].data["tool_name"], "search");
    assert_eq!(events[3].data["content"], "found");
    assert_eq!(events[4].data["delta"], "Hello ");
    assert_eq!(events[8].data["result"], json!({"answer": 42}));
}

#[tokio::test]
async fn round_trip_agui_in_agui_out_preserves_the_events() {
    let server = TestServer::start().await;
    let mut sse = Sse::open(&server, "u", "?thread_id=t1", None).await;
    let input = agui_run("t1", "r1");
    let (status, body) =
        post_agui(&server, &json!({"user_id": "u", "thread_id": "t1", "events": input})).await;
    assert_eq!(status, 200, "{body}");
    let out: Vec<Value> = sse
        .until("RUN_FINISHED")
        .await
        .into_iter()
        .map(|m| {
            let mut v = m.data;
            v.as_object_mut().unwrap().remove("timestamp");
            v
        })
        .collect();
    assert_eq!(out, input.as_array().unwrap().clone());
}

#[tokio::test]
async fn inbound_batches_continue_the_threads_active_run() {
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    let start = json!({"user_id": "u", "thread_id": "t9", "events": [{"type": "RUN_STARTED", "threadId": "t9", "runId": "r9"}]});
    assert_eq!(post_agui(&server, &start).await.0, 200);
    let call = json!({"user_id": "u", "thread_id": "t9", "events": [
        {"type": "TOOL_CALL_START", "toolCallId": "k1", "toolCallName": "calc"},
        {"type": "TOOL_CALL_END", "toolCallId": "k1"},
    ]});
    assert_eq!(post_agui(&server, &call).await.0, 200);
    // The result alone: its run and tool name come from the thread's active run.
    let result = json!({"user_id": "u", "thread_id": "t9", "events": [
        {"type": "TOOL_CALL_RESULT", "messageId": "m", "toolCallId": "k1", "content": "2"},
        {"type": "RUN_FINISHED", "threadId": "t9", "runId": "r9"},
    ]});
    let (status, body) = post_agui(&server, &result).await;
    assert_eq!(status, 200, "{body}");
    let events = conn.events(4, T).await.unwrap();
    assert_eq!(names(&events), ["agent_started", "tool_executing", "tool_completed", "agent_completed"]);
    assert_eq!(events[2].data["tool_name"], "calc");
    assert!(events.iter().all(|e| e.run_id.as_deref() == Some("r9")));
}

/// A batch that names its run still gets a tool's name for a result whose call an earlier
/// request started (the run knows it; the batch does not).
#[tokio::test]
async fn a_result_posted_later_to_a_named_run_carries_its_tools_name() {
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    let start = json!({"user_id": "u", "events": [
        {"type": "RUN_STARTED", "threadId": "t8", "runId": "r8"},
        {"type": "TOOL_CALL_START", "toolCallId": "k8", "toolCallName": "search"},
        {"type": "TOOL_CALL_END", "toolCallId": "k8"},
    ]});
    assert_eq!(post_agui(&server, &start).await.0, 200);
    // Another run of the thread is active too: the named run decides, not the latest.
    let other =
        json!({"user_id": "u", "events": [{"type": "RUN_STARTED", "threadId": "t8", "runId": "r8b"}]});
    assert_eq!(post_agui(&server, &other).await.0, 200);
    let result = json!({"user_id": "u", "run_id": "r8", "events": [
        {"type": "TOOL_CALL_RESULT", "messageId": "m", "toolCallId": "k8", "content": "found"},
    ]});
    let (status, body) = post_agui(&server, &result).await;
    assert_eq!(status, 200, "{body}");
    let events = conn.events(4, T).await.unwrap();
    assert_eq!(names(&events), ["agent_started", "tool_executing", "agent_started", "tool_completed"]);
    assert_eq!((events[3].run_id.as_deref(), &events[3].data["tool_name"]), (Some("r8"), &json!("search")));
}

/// The receipts a retry of the request that got `receipts` gets: the same, marked duplicates.
fn as_duplicates(receipts: &Value) -> Value {
    let mut again = receipts.clone();
    for receipt in again["results"].as_array_mut().unwrap() {
        receipt["duplicate"] = json!(true);
    }
    again
}

/// AG-UI events carry no ids: a request retried with its `Idempotency-Key` gets the first
/// request's receipts, nothing is appended twice, and a retried `RUN_STARTED` is not refused.
#[tokio::test]
async fn a_request_retried_with_its_idempotency_key_appends_once() {
    let server = TestServer::start().await;
    let (mut conn, _) = server.open("u").await;
    let start = json!({"user_id": "u", "events": [
        {"type": "RUN_STARTED", "threadId": "t5", "runId": "r5"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "hi"},
    ]});
    let (status, first) = post_agui_keyed(&server, &start, Some(b"req-1")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["results"][0]["id"], "req-1:0");
    assert_eq!(post_agui_keyed(&server, &start, Some(b"req-1")).await, (200, as_duplicates(&first)));
    // The run's end, retried after it ended (the body names the run, which is no longer active).
    let end = json!({"user_id": "u", "run_id": "r5", "events": [
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": " there"},
        {"type": "RUN_FINISHED", "threadId": "t5", "runId": "r5"},
    ]});
    let (status, first) = post_agui_keyed(&server, &end, Some(b"req-2")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(post_agui_keyed(&server, &end, Some(b"req-2")).await, (200, as_duplicates(&first)));

    let events = conn.events(4, T).await.unwrap();
    assert_eq!(seqs(&events), [1, 2, 3, 4]);
    assert_eq!(names(&events), ["agent_started", "agent_text", "agent_text", "agent_completed"]);
    let history = server.history("u").await;
    assert_eq!(history["events"].as_array().unwrap().len(), 4, "nothing twice: {history}");
    // Without a key a retry is a new request: its RUN_STARTED is refused, as before.
    assert_eq!(post_agui(&server, &start).await.0, 409);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_refused_before_anything_is_appended() {
    let server = TestServer::start().await;
    let body = json!({"user_id": "u", "events": [{"type": "RUN_STARTED", "threadId": "t", "runId": "r"}]});
    let long = vec![b'k'; 101];
    for key in [&b""[..], b"two words", "cl\u{e9}".as_bytes(), &long] {
        let (status, answer) = post_agui_keyed(&server, &body, Some(key)).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_request")), "{key:?}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("Idempotency-Key must be 1 to 100 visible ASCII"), "{message}");
    }
    // The longest key is fine, and nothing of the refused requests was stored.
    let (status, answer) = post_agui_keyed(&server, &body, Some(&long[..100])).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["seq"], 1);
}

#[tokio::test]
async fn invalid_agui_is_refused_with_the_rule_named() {
    let server = TestServer::start().await;
    let unknown_call = json!({"user_id": "u", "thread_id": "t1", "events": [
        {"type": "RUN_STARTED", "threadId": "t1", "runId": "r1"},
        {"type": "TOOL_CALL_RESULT", "messageId": "m", "toolCallId": "nope", "content": "x"},
    ]});
    let (status, body) = post_agui(&server, &unknown_call).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "run_state");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("events[1] (TOOL_CALL_RESULT)"), "{message}");
    assert!(
        message.contains("no_open_tool") && message.contains("must match an open tool call"),
        "{message}"
    );

    // Nothing of the refused batch was stored: the same run can start now.
    let after_finish = json!({"user_id": "u", "thread_id": "t1", "events": [
        {"type": "RUN_STARTED", "threadId": "t1", "runId": "r1"},
        {"type": "RUN_FINISHED", "threadId": "t1", "runId": "r1"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "late"},
    ]});
    let (status, body) = post_agui(&server, &after_finish).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("after_terminal"), "{body}");

    let no_run = json!({"user_id": "u", "thread_id": "t-none", "events": [
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "x"},
    ]});
    let (status, body) = post_agui(&server, &no_run).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("RUN_STARTED must come first"), "{body}");

    let malformed = json!({"user_id": "u", "events": [{"type": "RUN_STARTED", "threadId": "t"}]});
    let (status, body) = post_agui(&server, &malformed).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_event")), "{body}");

    let response = server
        .http()
        .post(format!("{}/v1/agui/events", server.url))
        .json(&unknown_call)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn stream_auth_tickets_and_refusals() {
    let server = TestServer::start().await;
    let response = server.http().get(format!("{}/v1/agui/stream", server.url)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let ticket: Value = server
        .http()
        .post(format!("{}/v1/tickets", server.url))
        .bearer_auth(API_KEY)
        .json(&json!({"user_id": "u"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{}/v1/agui/stream?ticket={}", server.url, ticket["ticket"].as_str().unwrap());
    let mut response = server.http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    server.publisher.post(&json!({"user_id": "u", "event": "custom", "data": {"name": "hi"}})).await.unwrap();
    let chunk = tokio::time::timeout(T, response.chunk()).await.unwrap().unwrap().unwrap();
    assert!(std::str::from_utf8(&chunk).unwrap().contains(r#""name":"hi""#));
    // Single use.
    assert_eq!(server.http().get(&url).send().await.unwrap().status(), 401);

    let bad = server
        .http()
        .get(format!("{}/v1/agui/stream?after=x", server.url))
        .bearer_auth(server.token("u"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // HttpAgent always POSTs (a RunAgentInput): the stream answers a POST the same way.
    let post = server
        .http()
        .post(format!("{}/v1/agui/stream", server.url))
        .bearer_auth(server.token("u"))
        .json(&json!({"threadId": "t1", "runId": "x", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    assert_eq!(post.headers()["content-type"], "text/event-stream");

    // CORS preflight from an allowed origin (tests allow any).
    let preflight = server
        .http()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/agui/stream", server.url))
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "http://app.example");
}

/// A stream opened in the middle of a 1,500-delta answer (its start trimmed by `history_size`)
/// gets the run as one valid AG-UI sequence — RUN_STARTED, TEXT_MESSAGE_START, one CONTENT with
/// the text so far — then the rest live, in the same message.
#[tokio::test]
async fn a_stream_opened_mid_answer_gets_the_whole_message_then_the_rest() {
    let server = TestServer::with(Settings { history_size: Some(1000), ..Default::default() }).await;
    publish_all(&server, &[json!({"user_id": "u", "run_id": "r", "event": "agent_started"})]).await;
    for batch in 0..15 {
        let events: Vec<Value> = (0..100)
            .map(|i| json!({"user_id": "u", "run_id": "r", "event": "agent_text", "data": {"delta": format!("{} ", batch * 100 + i)}}))
            .collect();
        publish_all(&server, &events).await;
    }
    let mut sse = Sse::open(&server, "u", "", None).await;
    let snapshot = sse.until("TEXT_MESSAGE_CONTENT").await;
    assert_eq!(types(&snapshot), ["RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"]);
    let text: String = (0..1500).map(|i| format!("{i} ")).collect();
    assert_eq!(snapshot[2].data["delta"].as_str().unwrap(), text);
    assert!(snapshot.iter().all(|m| m.id.is_none()), "snapshot messages are no resume points");
    let message = snapshot[1].data["messageId"].clone();
    publish_all(
        &server,
        &[
            json!({"user_id": "u", "run_id": "r", "event": "agent_text", "data": {"delta": "end"}}),
            json!({"user_id": "u", "run_id": "r", "event": "agent_completed"}),
        ],
    )
    .await;
    let live = sse.until("RUN_FINISHED").await;
    assert_eq!(types(&live), ["TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED"]);
    assert_eq!(live[0].data["messageId"], message, "the live delta continues the same message");
    assert_eq!(live[0].data["delta"], "end");
    assert!(live[0].id.as_deref().unwrap().ends_with(":1502"));
}

/// `@ag-ui/client`'s HttpAgent POSTs one request per run and waits for the stream to end: a POST
/// stream ends right after its run's terminal event, and nothing of the next run leaks into it.
#[tokio::test]
async fn a_post_stream_ends_after_its_runs_terminal_event() {
    let server = TestServer::start().await;
    let response = server
        .http()
        .post(format!("{}/v1/agui/stream", server.url))
        .bearer_auth(server.token("u"))
        .json(&json!({"threadId": "t1", "runId": "client-side-id", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut events = herald_client::golden_run("u", "r1");
    events.push(json!({"user_id": "u", "run_id": "r2", "event": "agent_started", "data": {}}));
    publish_all(&server, &events).await;
    let body = tokio::time::timeout(T, response.text()).await.expect("the POST stream ended").unwrap();
    let types: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types.first().map(String::as_str), Some("RUN_STARTED"), "{body}");
    assert_eq!(types.last().map(String::as_str), Some("RUN_FINISHED"), "{body}");
    assert_eq!(types.iter().filter(|t| *t == "RUN_STARTED").count(), 1, "{body}");
    // The GET stream stays the long-lived one: it carries both runs.
    let mut get = Sse::open(&server, "u", "?after=0", None).await;
    let all = get.until("RUN_FINISHED").await;
    assert_eq!(all[0].data["runId"], "r1");
    assert_eq!(get.next().await.data["runId"], "r2");
}
