//! User ids: the one key every stream is partitioned by.

use std::fmt;

/// Longest accepted user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 128;

/// A validated user id.
///
/// Every per-user structure (manager, log, Redis keys) is keyed by this type, so a string that was
/// never validated cannot reach them. Allowed: 1 to 128 characters from `A-Z a-z 0-9` and
/// `_ - . @ : | + =`. Braces are excluded on purpose: they are Redis Cluster hash-tag delimiters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

/// Why a string is not a valid user id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    /// The id was empty; there is no anonymous or shared user.
    #[error("user_id must not be empty (there is no anonymous or shared user)")]
    Empty,
    /// The id was longer than [`MAX_USER_ID_LEN`].
    #[error("user_id is {0} bytes long; the limit is {MAX_USER_ID_LEN}")]
    TooLong(usize),
    /// The id contained a character outside the allowed set.
    #[error("user_id contains {0:?}; allowed are letters, digits and _ - . @ : | + =")]
    BadChar(char),
}

impl UserId {
    /// Validates `raw` as a user id.
    pub fn parse(raw: &str) -> Result<Self, UserIdError> {
        check(raw)?;
        Ok(Self(raw.to_owned()))
    }

    /// Validates `raw` as a user id and keeps it: no copy, for a string parsed just for this
    /// (every published event's `user_id`).
    pub fn parse_owned(raw: String) -> Result<Self, UserIdError> {
        check(&raw)?;
        Ok(Self(raw))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check(raw: &str) -> Result<(), UserIdError> {
    if raw.is_empty() {
        return Err(UserIdError::Empty);
    }
    if raw.len() > MAX_USER_ID_LEN {
        return Err(UserIdError::TooLong(raw.len()));
    }
    if let Some(c) = raw.chars().find(|c| !is_allowed(*c)) {
        return Err(UserIdError::BadChar(c));
    }
    Ok(())
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':' | '|' | '+' | '=')
}

/// In the OpenAPI document: a string of 1 to 128 allowed characters.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for UserId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A user id: letters, digits and _ - . @ : | + = (no braces: they are Redis Cluster hash tags).",
            ))
            .min_length(Some(1))
            .max_length(Some(MAX_USER_ID_LEN))
            .pattern(Some(format!("^[A-Za-z0-9_.@:|+=-]{{1,{MAX_USER_ID_LEN}}}$")))
            .examples([serde_json::json!("user-42")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for UserId {}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for ok in ["u1", "alice@example.com", "org:42|user-7", "a.b_c+d="] {
            assert_eq!(UserId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_empty_long_and_odd_ids() {
        assert_eq!(UserId::parse(""), Err(UserIdError::Empty));
        assert_eq!(UserId::parse(&"x".repeat(129)), Err(UserIdError::TooLong(129)));
        assert_eq!(UserId::parse("a b"), Err(UserIdError::BadChar(' ')));
        assert_eq!(UserId::parse("{u}"), Err(UserIdError::BadChar('{')));
        assert_eq!(UserId::parse("u/1"), Err(UserIdError::BadChar('/')));
    }

    #[test]
    fn an_owned_string_is_checked_alike() {
        assert_eq!(UserId::parse_owned("org:42|user-7".into()).unwrap().as_str(), "org:42|user-7");
        assert_eq!(UserId::parse_owned(String::new()), Err(UserIdError::Empty));
        assert_eq!(UserId::parse_owned("x".repeat(129)), Err(UserIdError::TooLong(129)));
        assert_eq!(UserId::parse_owned("{u}".into()), Err(UserIdError::BadChar('{')));
    }
}
