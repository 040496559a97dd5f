//! Bodies of the publisher HTTP API (docs/protocol.md, "Publishing"): what a backend sends, what it gets back.

use crate::{EventData, EventKind, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// Longest accepted `id`, `run_id` or `thread_id`, in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// One validated event, ready to append. Field rules are checked; run rules are not (they need the
/// run's state, which only the engine has).
#[derive(Clone, Debug, PartialEq)]
pub struct EventInput {
    /// Owner of the event.
    pub user_id: UserId,
    /// What happened.
    pub kind: EventKind,
    /// The run, required for every kind but `custom`.
    pub run_id: Option<String>,
    /// Conversation thread.
    pub thread_id: Option<String>,
    /// The data object (`{}` when absent), encoded exactly as sent.
    pub data: EventData,
    /// Idempotency key; generated on append when absent.
    pub id: Option<String>,
}

/// A field that broke a rule, named so the publisher can fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    /// What is wrong, starting with the field's name.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

/// Why a publish body was refused as a whole (nothing was appended).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body is not JSON.
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// One event is invalid; `index` is its position in a batch.
    #[error("{}{error}", index.map(|i| format!("events[{i}]: ")).unwrap_or_default())]
    Invalid {
        /// Position in `events`, or `None` for a single event.
        index: Option<usize>,
        /// The broken field rule.
        error: FieldError,
    },
    /// More events than the batch limit.
    #[error("batch has {len} events; the limit is {max} per request, split it")]
    TooMany {
        /// Events sent.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A parsed `POST /v1/events` body: one event or a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum PublishBody {
    /// `{ "user_id": …, "event": … }`
    Single(EventInput),
    /// `{ "events": [ … ] }`, all-or-nothing.
    Batch(Vec<EventInput>),
}

/// In the OpenAPI document (as `PublishRequest`): the body's wire form, one event
/// ([`WireEvent`]) or a batch ([`PublishBatch`]). Written by hand because the parsed form holds
/// checked events, not the wire types the document shows.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for PublishBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::ToSchema;
        use utoipa::openapi::OneOfBuilder;
        use utoipa::openapi::schema::RefBuilder;
        let variant = |name: std::borrow::Cow<'static, str>, description: &str| {
            RefBuilder::new().ref_location_from_schema_name(name).description(Some(description))
        };
        OneOfBuilder::new()
            .item(variant(WireEvent::name(), "One event."))
            .item(variant(PublishBatch::name(), "`{\"events\":[…]}`, all-or-nothing."))
            .description(Some(
                "A `POST /v1/events` body as the OpenAPI document shows it: one event, or a batch.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for PublishBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "PublishRequest".into()
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use utoipa::{PartialSchema, ToSchema};
        schemas.push((WireEvent::name().into(), WireEvent::schema()));
        <WireEvent as ToSchema>::schemas(schemas);
        schemas.push((PublishBatch::name().into(), PublishBatch::schema()));
        <PublishBatch as ToSchema>::schemas(schemas);
    }
}

// Every field is optional here so that a missing one gets an error that names it
// ([`EventInput::from_value`] checks them); the OpenAPI document marks the required ones.
/// One agent event to publish (`POST /v1/events`).
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = PublishEvent))]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    /// Owner of the event: the user whose connections receive it.
    #[cfg_attr(feature = "openapi", schema(value_type = UserId, required = true))]
    pub user_id: Option<String>,
    /// The event name; `run_stalled` is emitted by Herald only.
    #[cfg_attr(feature = "openapi", schema(value_type = EventKind, required = true))]
    pub event: Option<EventName>,
    /// The run; required for every event but `custom`.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub run_id: Option<String>,
    /// Conversation thread.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub thread_id: Option<String>,
    /// The event's data object (`{}` when absent); required fields depend on `event`:
    /// `tool_name` for `tool_executing`/`tool_completed`, `message` for `agent_error`, `name` for
    /// `custom`; `tool_call_id`, when given, is a string.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub data: Option<Value>,
    /// Idempotency key: the same id for the same user returns the first receipt
    /// (`duplicate: true`) and is not delivered twice. Generated when absent.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub id: Option<String>,
}

/// An event's name as read: its kind, or the unknown name (for the error that quotes it). Read
/// from the body's text without a string of its own, once per published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventName(pub Result<EventKind, String>);

impl<'de> Deserialize<'de> for EventName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = EventName;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<EventName, E> {
                Ok(EventName(EventKind::from_name(name).ok_or_else(|| name.to_owned())))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// A batch for `POST /v1/events`: appended all-or-nothing, in order.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    /// The events (at most `max_batch`, default 1000; more is 413 `too_large`).
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub events: Vec<WireEvent>,
}

impl PublishBody {
    /// Parses and validates a body; a batch is validated as a whole, up to `max_batch` events.
    pub fn parse(body: &[u8], max_batch: usize) -> Result<Self, BatchError> {
        let invalid = |index, error| BatchError::Invalid { index, error };
        // Fast path: a well-formed body deserializes straight into the wire types, without a
        // `serde_json::Value` in between. Anything else takes the path below, which names what
        // is wrong (field, index) at the cost of a second parse.
        if let Ok(batch) = serde_json::from_slice::<PublishBatch>(body) {
            if !batch.events.is_empty() && batch.events.len() <= max_batch {
                let events = Self::batch_from_wires(batch.events)?;
                return Ok(PublishBody::Batch(keep_float_texts(body, events)));
            }
        } else if let Ok(wire) = serde_json::from_slice::<WireEvent>(body) {
            let event = EventInput::from_wire(wire).map_err(|e| invalid(None, e))?;
            return Ok(PublishBody::Single(keep_float_texts(body, vec![event]).remove(0)));
        }
        // serde_json keeps the last of repeated keys, so they must be refused before reading.
        crate::unique_keys::check_unique_keys(body).map_err(BatchError::InvalidJson)?;
        let value: Value =
            serde_json::from_slice(body).map_err(|e| BatchError::InvalidJson(e.to_string()))?;
        match value {
            Value::Object(mut obj) if obj.contains_key("events") && !obj.contains_key("event") => {
                if obj.len() != 1 {
                    let extra = obj.keys().find(|k| *k != "events").cloned().unwrap_or_default();
                    return Err(invalid(
                        None,
                        FieldError::new(format!(
                            "unknown field {extra:?} next to \"events\"; a batch is {{\"events\":[…]}}"
                        )),
                    ));
                }
                let items = obj.remove("events").unwrap_or_default();
                Self::batch_from_value(items, max_batch).map(PublishBody::Batch)
            }
            other => EventInput::from_value(other).map(PublishBody::Single).map_err(|e| invalid(None, e)),
        }
    }

    /// Parses and validates one event object (the publisher socket's `"event"`).
    pub fn parse_event(body: &[u8]) -> Result<EventInput, BatchError> {
        let invalid = |error| BatchError::Invalid { index: None, error };
        if let Ok(wire) = serde_json::from_slice::<WireEvent>(body) {
            let event = EventInput::from_wire(wire).map_err(invalid)?;
            return Ok(keep_float_texts(body, vec![event]).remove(0));
        }
        crate::unique_keys::check_unique_keys(body).map_err(BatchError::InvalidJson)?;
        let value: Value =
            serde_json::from_slice(body).map_err(|e| BatchError::InvalidJson(e.to_string()))?;
        EventInput::from_value(value).map_err(invalid)
    }

    /// Parses and validates the array of a batch (the publisher socket's `"events"`), as a whole,
    /// up to `max_batch` events.
    pub fn parse_events(items: &[u8], max_batch: usize) -> Result<Vec<EventInput>, BatchError> {
        if let Ok(wires) = serde_json::from_slice::<Vec<WireEvent>>(items)
            && !wires.is_empty()
            && wires.len() <= max_batch
        {
            return Ok(keep_float_texts(items, Self::batch_from_wires(wires)?));
        }
        crate::unique_keys::check_unique_keys(items).map_err(BatchError::InvalidJson)?;
        let value: Value =
            serde_json::from_slice(items).map_err(|e| BatchError::InvalidJson(e.to_string()))?;
        Self::batch_from_value(value, max_batch)
    }

    /// Validates deserialized batch items; an error names the item's index.
    fn batch_from_wires(wires: Vec<WireEvent>) -> Result<Vec<EventInput>, BatchError> {
        wires
            .into_iter()
            .enumerate()
            .map(|(i, wire)| {
                EventInput::from_wire(wire).map_err(|error| BatchError::Invalid { index: Some(i), error })
            })
            .collect()
    }

    /// Validates the value of `events`: a non-empty array of at most `max_batch` event objects.
    fn batch_from_value(items: Value, max_batch: usize) -> Result<Vec<EventInput>, BatchError> {
        let invalid = |index, error| BatchError::Invalid { index, error };
        let Value::Array(items) = items else {
            return Err(invalid(None, FieldError::new("events must be an array of event objects")));
        };
        if items.is_empty() {
            return Err(invalid(None, FieldError::new("events must not be empty")));
        }
        if items.len() > max_batch {
            return Err(BatchError::TooMany { len: items.len(), max: max_batch });
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| EventInput::from_value(item).map_err(|e| invalid(Some(i), e)))
            .collect()
    }

    /// The events in body order, borrowed.
    pub fn events(&self) -> &[EventInput] {
        match self {
            PublishBody::Single(e) => std::slice::from_ref(e),
            PublishBody::Batch(v) => v,
        }
    }

    /// The events in body order.
    pub fn into_events(self) -> Vec<EventInput> {
        match self {
            PublishBody::Single(e) => vec![e],
            PublishBody::Batch(v) => v,
        }
    }
}

impl EventInput {
    /// Validates one event object.
    pub fn from_value(value: Value) -> Result<Self, FieldError> {
        if !value.is_object() {
            return Err(FieldError::new("an event must be a JSON object"));
        }
        let wire: WireEvent = serde_json::from_value(value).map_err(|e| FieldError::new(e.to_string()))?;
        Self::from_wire(wire)
    }

    /// Validates one deserialized event object.
    pub fn from_wire(wire: WireEvent) -> Result<Self, FieldError> {
        let user_id = wire.user_id.ok_or_else(|| FieldError::new("user_id is required"))?;
        let user_id = UserId::parse_owned(user_id).map_err(|e| FieldError::new(e.to_string()))?;
        let EventName(name) = wire.event.ok_or_else(|| FieldError::new("event is required"))?;
        let kind = match name {
            Ok(EventKind::RunStalled) => {
                return Err(FieldError::new("event run_stalled is emitted by Herald only"));
            }
            Ok(kind) => kind,
            Err(name) => {
                return Err(FieldError::new(format!(
                    "event {name:?} is unknown; known events: {}",
                    EventKind::known_names()
                )));
            }
        };
        let run_id = check_key("run_id", wire.run_id)?;
        if kind.requires_run_id() && run_id.is_none() {
            return Err(FieldError::new(format!("run_id is required for {kind}")));
        }
        let data: EventData = match wire.data {
            None | Some(Value::Null) => Default::default(),
            Some(Value::Object(map)) => map.into(),
            Some(_) => return Err(FieldError::new("data must be a JSON object")),
        };
        kind.check_data(&data).map_err(FieldError::new)?;
        Ok(EventInput {
            user_id,
            kind,
            run_id,
            thread_id: check_key("thread_id", wire.thread_id)?,
            data,
            id: check_key("id", wire.id)?,
        })
    }
}

/// Just the `data` of an event, as written; every other field is skipped.
#[derive(Deserialize)]
struct DataText {
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

/// Just the `data` of each event of a batch.
#[derive(Deserialize)]
struct DataTexts {
    events: Vec<DataText>,
}

/// Keeps the written text of every `data` that holds a float, so that its numbers reach clients
/// exactly as sent (see [`EventData`]). Costs a second, shallow read of `body`, and only when some
/// event has a non-integer or beyond-64-bit number in its data.
fn keep_float_texts(body: &[u8], mut events: Vec<EventInput>) -> Vec<EventInput> {
    if !events.iter().any(|e| e.data.holds_float()) {
        return events;
    }
    // A batch body, a batch's bare array (the publisher socket's "events"), or one event.
    let texts = serde_json::from_slice::<DataTexts>(body)
        .map(|batch| batch.events)
        .or_else(|_| serde_json::from_slice::<Vec<DataText>>(body))
        .or_else(|_| serde_json::from_slice::<DataText>(body).map(|one| vec![one]))
        .unwrap_or_default();
    for (event, text) in events.iter_mut().zip(texts) {
        if let Some(text) = text.data
            && event.data.holds_float()
        {
            event.data.keep_text(text);
        }
    }
    events
}

fn check_key(field: &str, value: Option<String>) -> Result<Option<String>, FieldError> {
    match value {
        Some(v) if v.is_empty() => Err(FieldError::new(format!("{field} must not be empty"))),
        Some(v) if v.len() > MAX_KEY_LEN => {
            Err(FieldError::new(format!("{field} is {} bytes long; the limit is {MAX_KEY_LEN}", v.len())))
        }
        other => Ok(other),
    }
}

/// What a publisher gets back for each accepted event, once it is in the user's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Receipt {
    /// The event id (the idempotency key).
    pub id: String,
    /// The event's position in the user's log.
    pub seq: u64,
    /// The log's epoch.
    pub epoch: String,
    /// Connections of the user open when the event was appended.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub connections: usize,
    /// True when this id was already accepted: the first receipt is returned, nothing delivered.
    pub duplicate: bool,
}

/// Receipts of a batch, in request order: `{"results":[…]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Receipts {
    /// One receipt per event.
    pub results: Vec<Receipt>,
}

/// The body of every HTTP error: `{"error":{"code","message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// The error.
    pub error: ApiErrorBody,
}

/// The inside of [`ApiError`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorBody {
    /// Machine-readable code, e.g. `invalid_event`.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl ApiError {
    /// Builds an error body.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { error: ApiErrorBody { code: code.to_owned(), message: message.into() } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PublishBody, BatchError> {
        PublishBody::parse(s.as_bytes(), 3)
    }

    #[test]
    fn single_and_batch_parse() {
        let one = parse(r#"{"user_id":"u","event":"agent_started","run_id":"r"}"#).unwrap();
        assert_eq!(one.into_events().len(), 1);
        let two = parse(
            r#"{"events":[{"user_id":"u","event":"agent_started","run_id":"r"},
            {"user_id":"u","event":"custom","data":{"name":"x"}}]}"#,
        )
        .unwrap();
        assert_eq!(two.into_events().len(), 2);
    }

    #[test]
    fn errors_name_the_field_and_index() {
        assert!(matches!(parse("{"), Err(BatchError::InvalidJson(_))));
        let e = parse(r#"{"event":"agent_started","run_id":"r"}"#).unwrap_err();
        assert_eq!(e.to_string(), "user_id is required");
        let e = parse(r#"{"user_id":"u","event":"agent_starts","run_id":"r"}"#).unwrap_err();
        assert!(e.to_string().contains("known events: agent_started"), "{e}");
        let e = parse(r#"{"user_id":"u","event":"agent_thinking"}"#).unwrap_err();
        assert_eq!(e.to_string(), "run_id is required for agent_thinking");
        let e = parse(r#"{"user_id":"u","event":"progress","run_id":"r","data":[1]}"#).unwrap_err();
        assert_eq!(e.to_string(), "data must be a JSON object");
        let e = parse(
            r#"{"events":[{"user_id":"u","event":"agent_started","run_id":"r"},
            {"user_id":"u","event":"tool_executing","run_id":"r"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "events[1]: data.tool_name is required for tool_executing");
        let e = parse(r#"{"user_id":"u","event":"custom","data":{"name":"x"},"colour":1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let e = parse(r#"{"events":[1,2,3,4]}"#).unwrap_err();
        assert_eq!(e, BatchError::TooMany { len: 4, max: 3 });
        assert!(parse(r#"{"events":[]}"#).is_err());
        assert!(parse(r#"{"user_id":"u","event":"run_stalled","run_id":"r"}"#).is_err());
    }

    /// The event name is read without a string of its own: escapes still read as the name they
    /// spell, an unknown name is quoted in the error, a name that is not a string says so.
    #[test]
    fn event_names_are_read_in_place() {
        let one = parse(r#"{"user_id":"u","event":"agent\u005ftext","run_id":"r"}"#).unwrap();
        assert_eq!(one.events()[0].kind, EventKind::AgentText);
        let e = parse(r#"{"user_id":"u","event":"agent_\u00e9","run_id":"r"}"#).unwrap_err();
        assert!(e.to_string().starts_with(r#"event "agent_é" is unknown"#), "{e}");
        let e = parse(r#"{"user_id":"u","event":7,"run_id":"r"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type: integer `7`, expected a string"), "{e}");
        let e = parse(r#"{"events":[{"user_id":"u","event":null,"run_id":"r"}]}"#).unwrap_err();
        assert_eq!(e.to_string(), "events[0]: event is required");
    }

    #[test]
    fn repeated_envelope_keys_are_invalid_json() {
        let e = parse(r#"{"user_id":"A","event":"custom","data":{"name":"x"},"user_id":"B"}"#).unwrap_err();
        assert!(
            matches!(&e, BatchError::InvalidJson(m) if m.starts_with("duplicate key \"user_id\"")),
            "{e}"
        );
        let e = parse(
            r#"{"events":[{"user_id":"A","event":"custom","data":{"name":"x"}},
            {"user_id":"A","event":"custom","event":"progress","data":{"name":"x"}}]}"#,
        )
        .unwrap_err();
        assert!(matches!(&e, BatchError::InvalidJson(m) if m.starts_with("duplicate key \"event\"")), "{e}");
    }

    #[test]
    fn big_numbers_in_data_are_kept_exactly() {
        let text =
            r#"{"n":123456789012345678901234567890123456789,"f":0.1000000000000000055511151231257827}"#;
        let body = format!(r#"{{"user_id":"u","event":"custom","data":{{"name":"x","v":{text}}}}}"#);
        let event = parse(&body).unwrap().into_events().remove(0);
        let encoded = serde_json::to_string(&event.data).unwrap();
        assert_eq!(encoded, format!(r#"{{"name":"x","v":{text}}}"#));
        assert_eq!(event.data["name"], "x");
        let batch = format!(
            r#"{{"events":[{{"user_id":"u","event":"custom","data":{{"name":"x"}}}},
            {{"user_id":"u","event":"custom","data":{{"name":"y","v":{text}}}}}]}}"#
        );
        let events = parse(&batch).unwrap().into_events();
        assert!(!events[0].data.keeps_text());
        assert_eq!(serde_json::to_string(&events[1].data).unwrap(), format!(r#"{{"name":"y","v":{text}}}"#));
    }
}
