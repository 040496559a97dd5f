//! Frames of the publisher socket (`GET /v1/publish`): one long-lived connection that carries
//! the same event bodies as `POST /v1/events`, so a token stream costs a frame per event rather
//! than a request per event.
//!
//! A frame is `{"ref":…,"event":{…}}` or `{"ref":…,"events":[…]}`; the inner objects are parsed
//! by [`PublishBody`]'s own functions, so both transports accept and refuse exactly the same
//! events. Every frame gets one [`PublishAnswer`] carrying its `ref` back verbatim.

use crate::publish::{BatchError, FieldError, PublishBody, Receipt};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A frame's `ref` as the publisher wrote it (a JSON string or number), echoed in the answer.
/// `None` when the frame had none, or when none could be read.
pub type FrameRef = Option<Box<RawValue>>;

/// One publish frame read from the socket.
#[derive(Debug)]
pub struct PublishFrame {
    /// The publisher's correlation value.
    pub reference: FrameRef,
    /// The event or batch, validated.
    pub body: PublishBody,
}

/// A frame refused before anything was appended, with the `ref` when it could be read.
#[derive(Debug)]
pub struct FrameError {
    /// The frame's `ref`, if it could be read.
    pub reference: FrameRef,
    /// Why the frame was refused; the same errors as the HTTP body's.
    pub error: BatchError,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(rename = "ref", borrow, default)]
    reference: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    events: Option<&'a RawValue>,
}

impl PublishFrame {
    /// Parses one text frame; a batch is validated as a whole, up to `max_batch` events.
    pub fn parse(text: &str, max_batch: usize) -> Result<PublishFrame, FrameError> {
        let invalid = |reference, message: &str| FrameError {
            reference,
            error: BatchError::Invalid { index: None, error: FieldError::new(message) },
        };
        let envelope: Envelope = match serde_json::from_str(text) {
            Ok(envelope) => envelope,
            Err(e) if e.is_data() => {
                let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                let reference = value.get("ref").and_then(|r| RawValue::from_string(r.to_string()).ok());
                let message = if value.is_object() { format!("frame: {e}") } else { SHAPE.to_owned() };
                return Err(invalid(reference.filter(|r| is_scalar(r)), &message));
            }
            Err(e) => {
                return Err(FrameError {
                    reference: salvage_ref(text),
                    error: BatchError::InvalidJson(e.to_string()),
                });
            }
        };
        if let Some(r) = envelope.reference
            && !is_scalar(r)
        {
            return Err(invalid(None, "ref must be a string or a number"));
        }
        let reference = envelope.reference.map(RawValue::to_owned);
        let body = match (envelope.event, envelope.events) {
            (Some(event), None) => PublishBody::parse_event(event.get().as_bytes()).map(PublishBody::Single),
            (None, Some(events)) => {
                PublishBody::parse_events(events.get().as_bytes(), max_batch).map(PublishBody::Batch)
            }
            (Some(_), Some(_)) => {
                return Err(invalid(reference, "a frame has \"event\" or \"events\", not both"));
            }
            (None, None) => return Err(invalid(reference, SHAPE)),
        };
        match body {
            Ok(body) => Ok(PublishFrame { reference, body }),
            Err(error) => Err(FrameError { reference, error }),
        }
    }
}

/// What a frame must look like, for error messages.
const SHAPE: &str =
    "a frame is a JSON object {\"ref\":…,\"event\":{…}} (one event) or {\"ref\":…,\"events\":[…]} (a batch)";

/// True for a JSON string or number: the `ref`s that are echoed.
fn is_scalar(raw: &RawValue) -> bool {
    raw.get().starts_with(|c: char| c == '"' || c == '-' || c.is_ascii_digit())
}

/// The `ref` of a frame refused before parsing (too large) or that is not valid JSON: read from
/// a valid frame whatever its key order, and from a broken one when `ref` is its first key and
/// intact (`{"ref":"a","event":{…` cut short still gets its answer correlated).
pub fn salvage_ref(text: &str) -> FrameRef {
    #[derive(Deserialize)]
    struct RefOnly {
        #[serde(rename = "ref", default)]
        reference: FrameRef,
    }
    let first_key = || {
        let rest = text.trim_start().strip_prefix('{')?.trim_start().strip_prefix("\"ref\"")?;
        let rest = rest.trim_start().strip_prefix(':')?;
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Box<RawValue>>();
        values.next()?.ok()
    };
    let reference = first_key().or_else(|| serde_json::from_str::<RefOnly>(text).ok()?.reference)?;
    is_scalar(&reference).then_some(reference)
}

/// The error of a refused frame: the HTTP API's code and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerError {
    /// Machine-readable code, the same as the HTTP API's (`invalid_event`, `run_state`, …).
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// For `rate_limited`: milliseconds after which a retry can succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// What a frame achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The receipt of an `event` frame.
    Receipt(Receipt),
    /// The receipts of an `events` frame, in order.
    Receipts(Vec<Receipt>),
    /// Nothing of the frame was appended.
    Error(AnswerError),
}

/// The server's answer to one frame: `{"ref","receipt"}`, `{"ref","receipts"}` or
/// `{"ref","error"}`.
#[derive(Debug)]
pub struct PublishAnswer {
    /// The frame's `ref`, verbatim (`null` when it had none or none could be read).
    pub reference: FrameRef,
    /// What happened.
    pub outcome: Outcome,
}

impl PublishAnswer {
    /// The answer's JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("answers serialize")
    }
}

impl Serialize for PublishAnswer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("ref", &self.reference)?;
        match &self.outcome {
            Outcome::Receipt(r) => map.serialize_entry("receipt", r)?,
            Outcome::Receipts(r) => map.serialize_entry("receipts", r)?,
            Outcome::Error(e) => map.serialize_entry("error", e)?,
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PublishAnswer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(rename = "ref", default)]
            reference: FrameRef,
            receipt: Option<Receipt>,
            receipts: Option<Vec<Receipt>>,
            error: Option<AnswerError>,
        }
        let wire = Wire::deserialize(d)?;
        let outcome = match (wire.receipt, wire.receipts, wire.error) {
            (Some(r), None, None) => Outcome::Receipt(r),
            (None, Some(r), None) => Outcome::Receipts(r),
            (None, None, Some(e)) => Outcome::Error(e),
            _ => return Err(serde::de::Error::custom("an answer has one of receipt, receipts, error")),
        };
        Ok(PublishAnswer { reference: wire.reference, outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PublishFrame, FrameError> {
        PublishFrame::parse(text, 3)
    }

    fn refused(text: &str) -> (Option<String>, String, String) {
        let e = parse(text).unwrap_err();
        let code = match e.error {
            BatchError::InvalidJson(_) => "invalid_json",
            BatchError::Invalid { .. } => "invalid_event",
            BatchError::TooMany { .. } => "too_large",
        };
        (e.reference.map(|r| r.get().to_owned()), code.to_owned(), e.error.to_string())
    }

    #[test]
    fn event_and_events_frames_parse_with_their_ref() {
        let one =
            parse(r#"{"ref":"a1","event":{"user_id":"u","event":"agent_started","run_id":"r"}}"#).unwrap();
        assert_eq!(one.reference.unwrap().get(), r#""a1""#);
        assert!(matches!(one.body, PublishBody::Single(_)));
        let batch =
            parse(r#"{"ref":7,"events":[{"user_id":"u","event":"custom","data":{"name":"n"}}]}"#).unwrap();
        assert_eq!(batch.reference.unwrap().get(), "7");
        assert_eq!(batch.body.into_events().len(), 1);
        let no_ref = parse(r#"{"event":{"user_id":"u","event":"custom","data":{"name":"n"}}}"#).unwrap();
        assert!(no_ref.reference.is_none());
    }

    #[test]
    fn refusals_use_the_http_codes_and_keep_the_ref_when_readable() {
        assert_eq!(refused("not json").0, None);
        assert_eq!(refused("not json").1, "invalid_json");
        let (r, code, _) = refused(r#"{"ref":"cut","event":{"user_id":"#);
        assert_eq!((r.as_deref(), code.as_str()), (Some(r#""cut""#), "invalid_json"));
        let (r, code, message) = refused(r#"{"ref":"b","event":{"event":"agent_started","run_id":"r"}}"#);
        assert_eq!(
            (r.as_deref(), code.as_str(), message.as_str()),
            (Some(r#""b""#), "invalid_event", "user_id is required")
        );
        let (_, _, message) = refused(
            r#"{"ref":"b","events":[{"user_id":"u","event":"custom","data":{"name":"n"}},{"user_id":"u","event":"nope"}]}"#,
        );
        assert!(message.starts_with("events[1]: event \"nope\" is unknown"), "{message}");
        let (r, code, _) = refused(r#"{"ref":"c","events":[1,2,3,4]}"#);
        assert_eq!((r.as_deref(), code.as_str()), (Some(r#""c""#), "too_large"));
        let (r, _, message) = refused(r#"{"ref":"d","evnt":{}}"#);
        assert_eq!(r.as_deref(), Some(r#""d""#));
        assert!(message.contains("unknown field `evnt`"), "{message}");
        assert_eq!(refused(r#"{"ref":"e"}"#).2, SHAPE);
        assert_eq!(refused("[1]").2, SHAPE);
        assert!(refused(r#"{"ref":"f","event":{},"events":[]}"#).2.contains("not both"));
        let (r, _, message) = refused(r#"{"ref":{"x":1},"event":{}}"#);
        assert_eq!((r, message.as_str()), (None, "ref must be a string or a number"));
    }

    #[test]
    fn answers_round_trip() {
        let receipt = Receipt { id: "i".into(), seq: 3, epoch: "e".into(), connections: 1, duplicate: false };
        let answer = PublishAnswer {
            reference: Some(RawValue::from_string("\"a\"".into()).unwrap()),
            outcome: Outcome::Receipt(receipt.clone()),
        };
        let text = answer.to_json();
        assert_eq!(
            text,
            r#"{"ref":"a","receipt":{"id":"i","seq":3,"epoch":"e","connections":1,"duplicate":false}}"#
        );
        let back: PublishAnswer = serde_json::from_str(&text).unwrap();
        assert_eq!(back.outcome, Outcome::Receipt(receipt));
        let error = PublishAnswer {
            reference: None,
            outcome: Outcome::Error(AnswerError {
                code: "invalid_json".into(),
                message: "m".into(),
                retry_after_ms: None,
            }),
        };
        assert_eq!(error.to_json(), r#"{"ref":null,"error":{"code":"invalid_json","message":"m"}}"#);
        let back: PublishAnswer = serde_json::from_str(&error.to_json()).unwrap();
        assert!(back.reference.is_none());
    }
}
