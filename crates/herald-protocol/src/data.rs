//! An event's `data` object, delivered exactly as the publisher wrote it.
//!
//! serde_json reads every number into an `i64`, a `u64` or an `f64`, so an integer beyond 64 bits
//! (`123456789012345678901234567890`) or a decimal with more digits than a double holds would
//! reach clients changed. Herald must never change what a backend sends, so when `data` holds a
//! number that went through a float, its original text is kept and is what gets encoded; the
//! parsed fields are still there for the rules that read them (`tool_name`, `message`, …).

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::ops::Deref;

/// The `data` object of an event: its fields, and its original text when re-encoding the fields
/// would not give back the same numbers.
#[derive(Clone, Debug, Default)]
pub struct EventData {
    fields: Map<String, Value>,
    text: Option<Box<RawValue>>,
}

impl EventData {
    /// The fields, for reading (the original text, when kept, is only used for encoding).
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The fields as an owned map (numbers as serde_json reads them).
    pub fn into_fields(self) -> Map<String, Value> {
        self.fields
    }

    /// True when a number of the fields was read as a float, so re-encoding the fields might not
    /// give back what was written (`1e2`, `0.1000000000000000055511`, a 40-digit integer).
    pub fn holds_float(&self) -> bool {
        self.fields.values().any(holds_float)
    }

    /// Keeps `text`, the JSON these fields were read from, to be encoded instead of the fields.
    pub fn keep_text(&mut self, text: Box<RawValue>) {
        self.text = Some(text);
    }

    /// True when the original text is kept.
    pub fn keeps_text(&self) -> bool {
        self.text.is_some()
    }
}

/// True when `value` holds a number serde_json read as a float (possibly rounded).
fn holds_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(holds_float),
        Value::Object(map) => map.values().any(holds_float),
        _ => false,
    }
}

impl From<Map<String, Value>> for EventData {
    fn from(fields: Map<String, Value>) -> Self {
        Self { fields, text: None }
    }
}

impl Deref for EventData {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Self::Target {
        &self.fields
    }
}

impl PartialEq for EventData {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields
            && self.text.as_deref().map(RawValue::get) == other.text.as_deref().map(RawValue::get)
    }
}

impl Serialize for EventData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.text {
            Some(text) => text.serialize(serializer),
            None => self.fields.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> EventData {
        let mut data = EventData::from(serde_json::from_str::<Map<String, Value>>(text).unwrap());
        if data.holds_float() {
            data.keep_text(serde_json::from_str(text).unwrap());
        }
        data
    }

    #[test]
    fn floats_anywhere_are_found() {
        assert!(read(r#"{"deep":[{"x":[1, 2.5]}]}"#).holds_float());
        assert!(read(r#"{"n":123456789012345678901234567890}"#).holds_float());
        assert!(
            !read(r#"{"a":18446744073709551615,"b":[-9223372036854775808],"c":{"s":"1.5"}}"#).holds_float()
        );
    }

    #[test]
    fn kept_text_is_what_gets_encoded() {
        let text = r#"{"n":123456789012345678901234567890123456789,"deep":[{"x":0.1000000000000000055511151231257827}]}"#;
        let data = read(text);
        assert!(data.keeps_text());
        assert_eq!(serde_json::to_string(&data).unwrap(), text);
        assert_eq!(data["deep"][0]["x"], 0.1);
    }

    #[test]
    fn data_without_floats_is_encoded_from_its_fields() {
        let data = read(r#"{ "a": 18446744073709551615 }"#);
        assert!(!data.keeps_text());
        assert_eq!(serde_json::to_string(&data).unwrap(), r#"{"a":18446744073709551615}"#);
    }
}
