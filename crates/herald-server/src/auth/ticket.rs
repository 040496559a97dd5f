//! Tickets: short-lived, single-use credentials for browsers that cannot set headers.
//!
//! A backend (holding the API key) asks `POST /v1/tickets` for a ticket for one user and hands it
//! to its page, which connects with `/ws?ticket=…`. A ticket is 256 random bits; only its SHA-256
//! is stored (in the engine, so it works across nodes), and taking it deletes it: it opens one
//! connection, once.

use sha2::{Digest, Sha256};
use std::time::Duration;

/// Default ticket lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Longest ticket lifetime.
pub const MAX_TTL: Duration = Duration::from_secs(300);

/// A new random ticket (43 URL-safe characters).
pub fn new_ticket() -> String {
    crate::secret::random_token(32)
}

/// The stored form of a ticket: hex SHA-256, so a leaked store does not leak usable tickets.
pub fn ticket_hash(ticket: &str) -> String {
    Sha256::digest(ticket.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
