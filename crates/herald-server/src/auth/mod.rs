//! Who is this request? One entry point per kind of caller, several credential sources.
//!
//! Browsers and other clients authenticate with a JWT (header `Authorization: Bearer`, or the
//! subprotocol `bearer.<jwt>` next to `herald.v1` for browsers, which cannot set headers); backends
//! authenticate with an API key. This module decides, from headers alone and before any upgrade,
//! and never logs a credential.

pub mod jwks;
pub mod jwt;
pub mod ticket;

use crate::config::{Config, OriginPolicy};
use crate::secret::Secret;
use axum::http::{HeaderMap, header};
use herald_protocol::{BEARER_SUBPROTOCOL_PREFIX, UserId};
use jwt::JwtVerifier;
use std::time::SystemTime;
use subtle::ConstantTimeEq;

/// An authenticated client.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user the token was issued for (`sub`).
    pub user: UserId,
    /// When the token expires (the connection is closed with 4001 then); `None` for tickets,
    /// which are checked once, at the handshake.
    pub expires_at: Option<SystemTime>,
    /// When the token was issued (`iat`, else `nbf`), unix seconds; checked against the user's
    /// revocation. `None` for tickets and for tokens with neither claim.
    pub issued_at: Option<u64>,
}

/// Why a request was refused. Maps to 401 or 403 with a JSON body in one place (`api`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No credential at all.
    #[error("{0}")]
    Missing(&'static str),
    /// A credential that does not verify.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A JWT past its `exp`.
    #[error("token expired: get a fresh token and reconnect")]
    Expired,
    /// An API key that is not configured.
    #[error("invalid API key")]
    BadApiKey,
    /// A token issued before the user's revocation (`revoke_before` of a disconnect), or one
    /// without `iat`/`nbf` while a revocation is in effect.
    #[error("token was revoked: {0}")]
    Revoked(&'static str),
    /// A browser Origin that may not open sockets here.
    #[error("origin {0:?} is not allowed: add it to HERALD_ALLOWED_ORIGINS")]
    Origin(String),
}

impl AuthError {
    /// The error code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Origin(_) => "forbidden",
            _ => "unauthorized",
        }
    }
}

/// Who called an operator route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorKey {
    /// A publisher API key (its index: its rate-limit bucket).
    ApiKey(usize),
    /// The admin token.
    AdminToken,
}

/// Refuses a token issued before `revoked_before` (unix seconds). A token with no issue time
/// cannot show it is newer, so it is refused while a revocation is in effect.
pub fn check_revocation(revoked_before: Option<u64>, issued_at: Option<u64>) -> Result<(), AuthError> {
    match (revoked_before, issued_at) {
        (None, _) => Ok(()),
        (Some(before), Some(iat)) if iat >= before => Ok(()),
        (Some(_), Some(_)) => {
            Err(AuthError::Revoked("it was issued before the user's revoke_before: get a new one"))
        }
        (Some(_), None) => Err(AuthError::Revoked(
            "it has no iat claim and the user has a revocation in effect: issue tokens with iat",
        )),
    }
}

/// Checks every credential kind Herald accepts.
#[derive(Debug)]
pub struct Authenticator {
    jwt: JwtVerifier,
    api_keys: Vec<Secret>,
    admin_token: Option<Secret>,
    origins: OriginPolicy,
}

impl Authenticator {
    /// Builds the authenticator from the validated configuration; fails when the JWT public key
    /// file cannot be used.
    pub fn new(config: &Config) -> Result<Self, jwt::KeyError> {
        Ok(Self {
            jwt: JwtVerifier::new(&config.jwt)?,
            api_keys: config.api_keys.clone(),
            admin_token: config.admin_token.clone(),
            origins: config.origins.clone(),
        })
    }

    /// Starts background work the verifier needs (fetching a JWKS); call inside a runtime.
    pub fn warm_up(&self) {
        self.jwt.warm_up();
    }

    /// Authenticates a WebSocket handshake from its `Authorization` header or `bearer.` subprotocol.
    /// (Tickets are checked by the caller, since taking one needs the engine.) Async because a
    /// JWKS may have to be fetched for a new `kid`.
    pub async fn socket(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        let token = bearer(headers).or_else(|| subprotocol_token(headers)).ok_or(AuthError::Missing(
            "no token: send Authorization: Bearer <jwt>, subprotocols herald.v1, bearer.<jwt>, or ?ticket=",
        ))?;
        self.jwt.verify(token).await
    }

    /// Checks the publisher API key in `Authorization: Bearer`, comparing against every
    /// configured key in constant time; returns which key matched (its rate-limit bucket).
    pub fn api_key(&self, headers: &HeaderMap) -> Result<usize, AuthError> {
        use subtle::ConditionallySelectable;
        let given =
            bearer(headers).ok_or(AuthError::Missing("no API key: send Authorization: Bearer <API key>"))?;
        let mut ok = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, key) in self.api_keys.iter().enumerate() {
            let eq = key.expose().as_bytes().ct_eq(given.as_bytes());
            index.conditional_assign(&(i as u32), eq);
            ok |= eq;
        }
        if bool::from(ok) { Ok(index as usize) } else { Err(AuthError::BadApiKey) }
    }

    /// Checks an operator credential in `Authorization: Bearer`: a publisher API key or the
    /// admin token (compared in constant time).
    pub fn operator(&self, headers: &HeaderMap) -> Result<OperatorKey, AuthError> {
        if let (Some(admin), Some(given)) = (&self.admin_token, bearer(headers))
            && bool::from(admin.expose().as_bytes().ct_eq(given.as_bytes()))
        {
            return Ok(OperatorKey::AdminToken);
        }
        self.api_key(headers).map(OperatorKey::ApiKey)
    }

    /// Verifies a JWT given in a frame (a `refresh`), with the same rules as at the handshake.
    pub async fn token(&self, token: &str) -> Result<Identity, AuthError> {
        self.jwt.verify(token).await
    }

    /// Refuses a browser Origin that the policy does not allow (cross-site WebSocket hijacking).
    /// Requests without an Origin (non-browser clients) are allowed.
    pub fn origin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return Ok(());
        };
        let allowed = match &self.origins {
            OriginPolicy::Any => true,
            OriginPolicy::List(list) => {
                list.iter().any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
            }
            OriginPolicy::SameOrigin => {
                let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
                origin
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.trim_end_matches('/').eq_ignore_ascii_case(host))
            }
        };
        if allowed { Ok(()) } else { Err(AuthError::Origin(origin.to_owned())) }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn subprotocol_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_refuses_older_and_undated_tokens_only_while_in_effect() {
        assert!(check_revocation(None, None).is_ok());
        assert!(check_revocation(None, Some(5)).is_ok());
        assert!(check_revocation(Some(100), Some(100)).is_ok());
        assert!(check_revocation(Some(100), Some(101)).is_ok());
        assert!(matches!(check_revocation(Some(100), Some(99)), Err(AuthError::Revoked(_))));
        let undated = check_revocation(Some(100), None).unwrap_err();
        assert!(undated.to_string().contains("iat"), "{undated}");
    }
}
