//! The publisher API refuses bad input with the documented status and code, and stores nothing.

mod common;

use common::{API_KEY, TestServer};
use serde_json::{Value, json};

async fn post_raw(server: &TestServer, key: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let mut request = server.http().post(format!("{}/v1/events", server.url)).body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.expect("every response is JSON"))
}

async fn post(server: &TestServer, body: Value) -> (u16, Value) {
    post_raw(server, Some(API_KEY), body.to_string()).await
}

fn error(body: &Value) -> (&str, &str) {
    (body["error"]["code"].as_str().unwrap(), body["error"]["message"].as_str().unwrap())
}

async fn head_seq(server: &TestServer, user: &str) -> u64 {
    let url = format!("{}/v1/users/{user}/events", server.url);
    let body: Value = server.http().get(url).bearer_auth(API_KEY).send().await.unwrap().json().await.unwrap();
    body["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn missing_or_wrong_api_key_is_401() {
    let server = TestServer::start().await;
    let event = json!({"user_id": "u", "event": "agent_started", "run_id": "r"}).to_string();
    let (status, body) = post_raw(&server, None, event.clone()).await;
    assert_eq!((status, error(&body).0), (401, "unauthorized"));
    let (status, body) = post_raw(&server, Some("nope"), event).await;
    assert_eq!((status, error(&body).0), (401, "unauthorized"));
    assert_eq!(head_seq(&server, "u").await, 0);
}

#[tokio::test]
async fn invalid_json_is_400_invalid_json() {
    let server = TestServer::start().await;
    let (status, body) = post_raw(&server, Some(API_KEY), "{not json").await;
    assert_eq!((status, error(&body).0), (400, "invalid_json"));
}

#[tokio::test]
async fn missing_user_id_is_400_naming_the_field() {
    let server = TestServer::start().await;
    let (status, body) = post(&server, json!({"event": "agent_started", "run_id": "r"})).await;
    assert_eq!(status, 400);
    assert_eq!(error(&body), ("invalid_event", "user_id is required"));
}

#[tokio::test]
async fn unknown_event_is_400_listing_the_known_ones() {
    let server = TestServer::start().await;
    let (status, body) =
        post(&server, json!({"user_id": "u", "event": "agent_exploded", "run_id": "r"})).await;
    assert_eq!(status, 400);
    let (code, message) = error(&body);
    assert_eq!(code, "invalid_event");
    assert!(
        message.contains("agent_exploded") && message.contains("agent_started, agent_thinking"),
        "{message}"
    );
}

#[tokio::test]
async fn missing_required_data_field_is_400_naming_it() {
    let server = TestServer::start().await;
    post(&server, json!({"user_id": "u", "event": "agent_started", "run_id": "r"})).await;
    let (status, body) =
        post(&server, json!({"user_id": "u", "event": "tool_executing", "run_id": "r"})).await;
    assert_eq!(status, 400);
    assert_eq!(error(&body).1, "data.tool_name is required for tool_executing");
}

#[tokio::test]
async fn tool_completed_without_tool_executing_is_409() {
    let server = TestServer::start().await;
    post(&server, json!({"user_id": "u", "event": "agent_started", "run_id": "r"})).await;
    let (status, body) = post(
        &server,
        json!({"user_id": "u", "event": "tool_completed", "run_id": "r", "data": {"tool_name": "search"}}),
    )
    .await;
    assert_eq!(status, 409);
    let (code, message) = error(&body);
    assert_eq!(code, "run_state");
    assert!(message.contains("tool_completed must match an open tool call"), "{message}");
}

#[tokio::test]
async fn event_after_agent_completed_is_409() {
    let server = TestServer::start().await;
    server.publisher.publish_run("u", "r").await.unwrap();
    let (status, body) =
        post(&server, json!({"user_id": "u", "event": "agent_thinking", "run_id": "r"})).await;
    assert_eq!(status, 409);
    assert!(error(&body).1.contains("already ended with agent_completed"), "{body}");
    assert_eq!(head_seq(&server, "u").await, 5);
}

#[tokio::test]
async fn second_agent_started_is_409() {
    let server = TestServer::start().await;
    post(&server, json!({"user_id": "u", "event": "agent_started", "run_id": "r"})).await;
    let (status, body) =
        post(&server, json!({"user_id": "u", "event": "agent_started", "run_id": "r"})).await;
    assert_eq!(status, 409);
    assert!(error(&body).1.contains("second agent_started"), "{body}");
}

#[tokio::test]
async fn event_for_a_run_that_never_started_is_409() {
    let server = TestServer::start().await;
    let (status, body) =
        post(&server, json!({"user_id": "u", "event": "agent_thinking", "run_id": "ghost"})).await;
    assert_eq!(status, 409);
    assert!(error(&body).1.contains("agent_started must be the run's first event"), "{body}");
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let server = TestServer::start().await;
    let big = json!({"user_id": "u", "event": "custom", "data": {"name": "x", "blob": "a".repeat(2 << 20)}});
    let (status, body) = post(&server, big).await;
    assert_eq!((status, error(&body).0), (413, "too_large"));
    assert_eq!(head_seq(&server, "u").await, 0);
}

#[tokio::test]
async fn invalid_batch_appends_nothing_and_names_the_index() {
    let server = TestServer::start().await;
    let mut events = herald_client::golden_run("u", "r");
    events[3]["data"] = json!({}); // tool_completed without tool_name
    let (status, body) = post(&server, json!({ "events": events })).await;
    assert_eq!(status, 400);
    assert_eq!(error(&body).1, "events[3]: data.tool_name is required for tool_completed");
    assert_eq!(head_seq(&server, "u").await, 0);

    // A run-rule violation in the middle of a batch: also nothing appended.
    let mut events = herald_client::golden_run("u", "r");
    events.swap(2, 3);
    let (status, body) = post(&server, json!({ "events": events })).await;
    assert_eq!(status, 409);
    assert!(error(&body).1.starts_with("events[2]: "), "{body}");
    assert_eq!(head_seq(&server, "u").await, 0);
}

#[tokio::test]
async fn batch_over_1000_events_is_413() {
    let server = TestServer::start().await;
    let events: Vec<Value> = (0..1001)
        .map(|i| json!({"user_id": "u", "event": "custom", "data": {"name": format!("n{i}")}}))
        .collect();
    let (status, body) = post(&server, json!({ "events": events })).await;
    assert_eq!((status, error(&body).0), (413, "too_large"));
}

#[tokio::test]
async fn batch_receipts_come_in_order() {
    let server = TestServer::start().await;
    let (status, body) = post(&server, json!({ "events": herald_client::golden_run("u", "r") })).await;
    assert_eq!(status, 200);
    let seqs: Vec<u64> =
        body["results"].as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let server = TestServer::start().await;
    let response = server.http().get(format!("{}/v2/nothing", server.url)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn health_endpoints_answer() {
    let server = TestServer::start().await;
    for path in ["/health/live", "/health/ready"] {
        let response = server.http().get(format!("{}{path}", server.url)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn repeated_envelope_keys_are_400_invalid_json_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let body = r#"{"user_id":"dup-a","event":"custom","data":{"name":"x"},"user_id":"dup-b"}"#;
    let (status, reply) = post_raw(&server, Some(API_KEY), body).await;
    assert_eq!(status, 400, "{reply}");
    let (code, message) = error(&reply);
    assert_eq!(code, "invalid_json");
    assert!(message.contains("duplicate key \"user_id\""), "{message}");
    let batch = r#"{"events":[{"user_id":"dup-a","event":"custom","data":{"name":"x"}},
        {"user_id":"dup-a","event":"custom","data":{"name":"x"},"id":"1","id":"2"}]}"#;
    let (status, reply) = post_raw(&server, Some(API_KEY), batch).await;
    assert_eq!((status, error(&reply).0), (400, "invalid_json"));
    assert_eq!(head_seq(&server, "dup-a").await, 0);
    assert_eq!(head_seq(&server, "dup-b").await, 0);
}

#[tokio::test]
async fn numbers_in_data_reach_history_and_sockets_exactly_as_sent() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = TestServer::start().await;
    let mut request = herald_client::ws_url(&server.url).into_client_request().unwrap();
    let bearer = format!("Bearer {}", server.token("big"));
    request.headers_mut().insert("authorization", bearer.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let big = "123456789012345678901234567890123456789";
    let decimal = "0.1000000000000000055511151231257827";
    let body =
        format!(r#"{{"user_id":"big","event":"custom","data":{{"name":"n","big":{big},"d":[{decimal}]}}}}"#);
    let (status, reply) = post_raw(&server, Some(API_KEY), body).await;
    assert_eq!(status, 200, "{reply}");
    let exact = format!(r#""big":{big},"d":[{decimal}]"#);

    let url = format!("{}/v1/users/big/events", server.url);
    let text = server.http().get(url).bearer_auth(API_KEY).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(&exact), "{text}");
    loop {
        let message = tokio::time::timeout(common::T, socket.next()).await.unwrap().unwrap().unwrap();
        let text = message.into_text().unwrap();
        if text.contains(r#""type":"event""#) {
            assert!(text.contains(&exact), "{text}");
            break;
        }
    }
}
