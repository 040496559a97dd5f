//! The OpenAPI document: served at `/openapi.json` without auth, identical to the committed
//! `docs/openapi.json`, and describing what the server really answers.
//!
//! Regenerate the committed file after changing a route or a wire type:
//! `HERALD_WRITE_OPENAPI=1 cargo test -p herald-server --test openapi`.

mod common;

use common::{API_KEY, TestServer};
use serde_json::{Value, json};
use std::path::PathBuf;

const REGENERATE: &str = "HERALD_WRITE_OPENAPI=1 cargo test -p herald-server --test openapi";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

async fn served(server: &TestServer) -> (reqwest::header::HeaderMap, String) {
    let response = reqwest::get(format!("{}/openapi.json", server.url)).await.unwrap();
    assert_eq!(response.status(), 200, "/openapi.json needs no auth");
    let headers = response.headers().clone();
    (headers, response.text().await.unwrap())
}

#[tokio::test]
async fn committed_document_matches_the_served_one() {
    let server = TestServer::start().await;
    let (headers, text) = served(&server).await;
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(text, herald_server::api::routes::json());
    let path = committed_path();
    if std::env::var_os("HERALD_WRITE_OPENAPI").is_some() {
        std::fs::write(&path, &text).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "docs/openapi.json is not what the server generates (a route or wire type changed).\n\
         Regenerate it with:\n\n    {REGENERATE}\n"
    );
}

/// The router is the document's only source (`api::routes`), so every operation the document
/// lists is served: none falls through to the 404 or 405 fallback. Requests carry no credential,
/// so streams are refused before they open.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let server = TestServer::start().await;
    let doc: Value = serde_json::from_str(herald_server::api::routes::json()).unwrap();
    let http = reqwest::Client::new();
    let mut checked = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        // Path parameters (`{user_id}`) get a valid value.
        let concrete: Vec<&str> =
            path.split('/').map(|part| if part.starts_with('{') { "user-42" } else { part }).collect();
        let url = format!("{}{}", server.url, concrete.join("/"));
        for method in item.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = http.request(method.clone(), &url).send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path} is documented but not routed: {body}");
            assert!(!body.contains("no such route"), "{method} {path} is documented but not routed: {body}");
            checked.push(format!("{method} {path}"));
        }
    }
    for known in [
        "POST /v1/events",
        "GET /v1/publish",
        "POST /v1/users/{user_id}/disconnect",
        "GET /ws",
        "POST /v1/agui/stream",
        "OPTIONS /v1/agui/stream",
        "GET /metrics",
    ] {
        assert!(checked.iter().any(|c| c == known), "{known} is not in the document: {checked:?}");
    }
}

#[tokio::test]
async fn document_describes_the_shared_errors() {
    let doc: Value = serde_json::from_str(herald_server::api::routes::json()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    let publish = &paths["/v1/events"]["post"];
    for status in ["200", "400", "401", "409", "413", "429", "503"] {
        assert!(publish["responses"][status].is_object(), "POST /v1/events lacks {status}");
    }
    assert_eq!(publish["security"], json!([{"api_key": []}]));
    let examples = publish["requestBody"]["content"]["application/json"]["examples"].as_object().unwrap();
    for event in ["agent_started", "tool_executing", "tool_completed", "agent_text", "agent_completed"] {
        assert_eq!(examples[event]["value"]["event"], event, "example for {event}");
    }
    let responses = doc["components"]["responses"].as_object().unwrap();
    for (name, response) in responses {
        let schema = &response["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(schema, "#/components/schemas/ApiError", "{name} has the shared error body");
    }
    assert!(responses["RateLimited"]["headers"]["Retry-After"].is_object());
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    check_refs(&doc, &doc);
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operationIds must be unique (client generators name functions by them)");
}

/// Every `$ref` points at something in the document (a dangling one makes tools skip it).
fn check_refs(doc: &Value, node: &Value) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("external $ref {target}"));
                assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
            }
            map.values().for_each(|v| check_refs(doc, v));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(doc, v)),
        _ => {}
    }
}

/// The examples in the document are accepted by the server (in order, on a fresh server) and
/// every answer has the documented shape's fields.
#[tokio::test]
async fn documented_examples_are_accepted() {
    let server = TestServer::start().await;
    let doc: Value = serde_json::from_str(herald_server::api::routes::json()).unwrap();
    let http = reqwest::Client::new();
    let examples =
        doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["examples"]
            .as_object()
            .unwrap();
    for name in [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_text",
        "agent_completed",
    ] {
        let response = http
            .post(format!("{}/v1/events", server.url))
            .bearer_auth(API_KEY)
            .json(&examples[name]["value"])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "example {name}: {}", response.text().await.unwrap());
        let receipt: Value = response.json().await.unwrap();
        assert!(receipt["seq"].is_u64() && receipt["duplicate"] == false, "{receipt}");
    }
    let batch = http
        .post(format!("{}/v1/events", server.url))
        .bearer_auth(API_KEY)
        .json(&examples["batch"]["value"])
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 200);
    let batch: Value = batch.json().await.unwrap();
    assert_eq!(batch["results"].as_array().unwrap().len(), 3, "{batch}");

    let agui =
        &doc["paths"]["/v1/agui/events"]["post"]["requestBody"]["content"]["application/json"]["example"];
    let response = http
        .post(format!("{}/v1/agui/events", server.url))
        .bearer_auth(API_KEY)
        .json(agui)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let ticket =
        &doc["paths"]["/v1/tickets"]["post"]["requestBody"]["content"]["application/json"]["example"];
    let response = http
        .post(format!("{}/v1/tickets", server.url))
        .bearer_auth(API_KEY)
        .json(ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ticket: Value = response.json().await.unwrap();
    assert!(ticket["ticket"].is_string() && ticket["expires_at"].is_string(), "{ticket}");

    let history: Value = http
        .get(format!("{}/v1/users/user-42/events?limit=2", server.url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["events"].as_array().unwrap().len(), 2, "{history}");
    assert_eq!(history["reset"], false);
}

/// Wrong methods and unknown routes answer with the shared error body, as JSON.
#[tokio::test]
async fn wrong_method_and_unknown_route_are_json_errors() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let response = http.get(format!("{}/v1/events", server.url)).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let response = http.get(format!("{}/v2/nothing", server.url)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}
