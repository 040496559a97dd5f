//! Stable-toolchain fuzzing of the two parsers that take bytes from the network: random bytes,
//! JSON-shaped token soup and mutated valid frames, a bounded number of cases each. They must
//! never panic, and every refusal must be one the server can turn into a clean error.
//! (The cargo-fuzz targets in `fuzz/` run the same parsers open-ended; see docs/conformance.md.)

use herald_protocol::{BatchError, ClientFrame, PublishBody, PublishFrame};
use proptest::prelude::*;
use serde_json::{Value, json};

const MAX_BATCH: usize = 8;

fn check_client_frame(text: &str) {
    if let Err(e) = ClientFrame::parse(text) {
        assert!(["invalid_json", "unknown_type", "invalid_frame"].contains(&e.code()));
        assert!(!e.to_string().is_empty());
    }
}

fn check_publish_body(bytes: &[u8]) {
    match PublishBody::parse(bytes, MAX_BATCH) {
        Ok(body) => {
            let n = body.into_events().len();
            assert!((1..=MAX_BATCH).contains(&n), "{n} events");
        }
        Err(BatchError::TooMany { .. }) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The publisher socket's frames: never a panic; an accepted frame holds 1..=MAX_BATCH events.
fn check_publish_frame(text: &str) {
    match PublishFrame::parse(text, MAX_BATCH) {
        Ok(frame) => assert!((1..=MAX_BATCH).contains(&frame.body.events().len())),
        Err(refused) => assert!(!refused.error.to_string().is_empty()),
    }
}

/// Pieces of JSON that mean something to the parsers, glued at random.
fn json_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{"),
        Just("}"),
        Just("["),
        Just("]"),
        Just(":"),
        Just(","),
        Just("\""),
        Just("\"type\""),
        Just("\"ping\""),
        Just("\"cancel\""),
        Just("\"message\""),
        Just("\"run_id\""),
        Just("\"ref\""),
        Just("\"data\""),
        Just("\"events\""),
        Just("\"event\""),
        Just("\"user_id\""),
        Just("\"agent_started\""),
        Just("\"tool_completed\""),
        Just("\"tool_name\""),
        Just("\"custom\""),
        Just("\"name\""),
        Just("\"id\""),
        Just("null"),
        Just("true"),
        Just("0"),
        Just("-1"),
        Just("1e999"),
        Just("\"\\u0000\""),
        Just("\"\\ud800\""),
        Just("\"u\""),
        Just(" "),
    ];
    prop::collection::vec(token, 0..48).prop_map(|parts| parts.concat())
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid event with one field replaced by an arbitrary value.
fn mutated_event() -> impl Strategy<Value = Value> {
    let fields = prop_oneof![
        Just("user_id"),
        Just("event"),
        Just("run_id"),
        Just("thread_id"),
        Just("data"),
        Just("id"),
        Just("extra"),
    ];
    (fields, any_json()).prop_map(|(field, value)| {
        let mut event = json!({"user_id": "u", "run_id": "r", "event": "tool_executing",
                               "data": {"tool_name": "search", "tool_call_id": "c1"}});
        event[field] = value;
        event
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_publish_body(&bytes);
        check_client_frame(&String::from_utf8_lossy(&bytes));
        check_publish_frame(&String::from_utf8_lossy(&bytes));
    }


    #[test]
    fn mutated_client_frames(kind in prop_oneof![Just("ping"), Just("cancel"), Just("message")],
                             field in "[a-z_]{1,8}", value in any_json()) {
        let mut frame = json!({"type": kind, "run_id": "r", "ref": "c1", "data": {}});
        frame[field.as_str()] = value;
        check_client_frame(&frame.to_string());
    }

}

proptest! {
    // Structured inputs cost more to generate: fewer cases.
    #![proptest_config(ProptestConfig { cases: 800, ..ProptestConfig::default() })]

    #[test]
    fn json_shaped_soup(text in json_soup()) {
        check_client_frame(&text);
        check_publish_body(text.as_bytes());
        check_publish_frame(&text);
    }

    #[test]
    fn mutated_events_single_and_batched(events in prop::collection::vec(mutated_event(), 1..12)) {
        check_publish_body(events[0].to_string().as_bytes());
        check_publish_body(json!({"events": events}).to_string().as_bytes());
        check_publish_frame(&json!({"ref": "f", "event": events[0]}).to_string());
        check_publish_frame(&json!({"ref": 1, "events": events}).to_string());
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    check_client_frame(&deep);
    check_publish_body(deep.as_bytes());
    check_publish_frame(&deep);
    check_publish_frame(&format!(r#"{{"ref":"d","events":{deep}}}"#));
    let deep_data = format!(
        r#"{{"user_id":"u","event":"custom","data":{{"name":"n","x":{}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(PublishBody::parse(deep_data.as_bytes(), 1).is_err());
}
