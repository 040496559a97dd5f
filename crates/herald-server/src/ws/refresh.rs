//! The `refresh` frame: a fresh token on an open socket, checked exactly as at the handshake
//! (signature, claims, revocation) and required to be for the connection's own user.

use crate::AppState;
use crate::auth::AuthError;
use herald_protocol::{ServerFrame, UserId};
use std::sync::Arc;
use std::time::SystemTime;

/// What a connection needs to take a `refresh` frame.
#[derive(Clone)]
pub struct Refresher(Arc<AppState>);

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refresher")
    }
}

impl Refresher {
    /// Checks tokens with `state`'s authenticator and engine.
    pub fn new(state: Arc<AppState>) -> Self {
        Self(state)
    }

    /// The new expiry of a connection of `user`, or the error frame that refuses `token`:
    /// `invalid_token` (does not verify, or expired), `wrong_user` (another `sub`),
    /// `token_revoked` (issued before the user's revocation), `not_ready` (revocations cannot
    /// be read now).
    pub async fn check(&self, user: &UserId, token: &str) -> Result<SystemTime, ServerFrame> {
        let identity =
            self.0.auth.token(token).await.map_err(|e| ServerFrame::error("invalid_token", e.to_string()))?;
        if &identity.user != user {
            return Err(ServerFrame::error(
                "wrong_user",
                format!("the token is for another user ({}); a connection keeps its user", identity.user),
            ));
        }
        let revoked_before = self.0.engine.revoked_before(user).await.map_err(|e| {
            ServerFrame::error("not_ready", format!("{e}; the old token stays in use, retry the refresh"))
        })?;
        crate::auth::check_revocation(revoked_before, identity.issued_at).map_err(|e| match e {
            AuthError::Revoked(_) => ServerFrame::error("token_revoked", e.to_string()),
            other => ServerFrame::error("invalid_token", other.to_string()),
        })?;
        identity.expires_at.ok_or_else(|| ServerFrame::error("invalid_token", "the token has no exp"))
    }
}
