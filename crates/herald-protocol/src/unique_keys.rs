//! Refusing repeated keys in an event's envelope.
//!
//! JSON parsers disagree about `{"user_id":"A","user_id":"B"}`: serde_json keeps the last value,
//! others the first. A proxy that checks the first `user_id` and Herald delivering to the last one
//! would disagree about who gets the event, so a publish body whose envelope repeats a key is
//! refused. What the backend puts inside `data` is its own business and is not checked.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// Checks that no object of `body` outside a `data` value repeats a key; the error says which key
/// and where. Also fails on JSON syntax errors, with serde_json's message.
pub fn check_unique_keys(body: &[u8]) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    Envelope { check: true }.deserialize(&mut de).and_then(|()| de.end()).map_err(|e| e.to_string())
}

/// Walks a JSON value; `check` is false inside `data`.
#[derive(Clone, Copy)]
struct Envelope {
    check: bool,
}

impl<'de> DeserializeSeed<'de> for Envelope {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Envelope {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let check = self.check && key != "data";
            if self.check && !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {key:?}: every key of an event (and of a batch) must appear once"
                )));
            }
            map.next_value_seed(Envelope { check })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_envelope_keys_are_found() {
        let e = check_unique_keys(br#"{"user_id":"A","event":"custom","user_id":"B"}"#).unwrap_err();
        assert!(e.starts_with("duplicate key \"user_id\""), "{e}");
        let e =
            check_unique_keys(br#"{"events":[{"user_id":"A"},{"run_id":"r","run_id":"r"}]}"#).unwrap_err();
        assert!(e.starts_with("duplicate key \"run_id\""), "{e}");
        assert!(check_unique_keys(br#"{"events":[],"events":[]}"#).is_err());
    }

    #[test]
    fn data_and_distinct_keys_pass() {
        check_unique_keys(br#"{"user_id":"A","data":{"x":1,"x":2,"y":[{"z":1,"z":2}]}}"#).unwrap();
        check_unique_keys(br#"{"events":[{"user_id":"A"},{"user_id":"A"}]}"#).unwrap();
        assert!(check_unique_keys(b"{").is_err());
        assert!(check_unique_keys(b"{} x").is_err());
    }
}
