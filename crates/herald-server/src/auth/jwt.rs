//! Client JWTs: verification pinned to the configured key, and signing for `herald token`.

use super::{AuthError, Identity};
use crate::config::JwtConfig;
use herald_protocol::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds of clock skew tolerated on `exp`/`nbf`.
const LEEWAY_S: u64 = 5;

/// Verifies client JWTs with one key and one algorithm: a token naming another algorithm (`none`,
/// or HS256 when a public key is configured) is refused before its signature is looked at.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("algorithms", &self.validation.algorithms).finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    exp: u64,
}

impl JwtVerifier {
    /// A verifier for the configured HS256 secret, audience and issuer.
    pub fn new(config: &JwtConfig) -> Self {
        install_crypto_provider();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        Self { key: DecodingKey::from_secret(config.secret.expose().as_bytes()), validation }
    }

    /// Checks signature, algorithm, `exp`, `nbf`, `aud`, `iss` and `sub`.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => {
                AuthError::Invalid("signature does not match the configured key".into())
            }
            ErrorKind::InvalidAlgorithm => {
                AuthError::Invalid("token algorithm is not the one configured (HS256)".into())
            }
            ErrorKind::InvalidAudience => {
                AuthError::Invalid("token aud is not the configured audience".into())
            }
            ErrorKind::InvalidIssuer => AuthError::Invalid("token iss is not the configured issuer".into()),
            ErrorKind::ImmatureSignature => AuthError::Invalid("token is not valid yet (nbf)".into()),
            ErrorKind::MissingRequiredClaim(c) => AuthError::Invalid(format!("token has no {c} claim")),
            _ => AuthError::Invalid(format!("malformed token: {e}")),
        })?;
        let sub = data.claims.sub.ok_or_else(|| AuthError::Invalid("token has no sub claim".into()))?;
        let user = UserId::parse(&sub).map_err(|e| AuthError::Invalid(format!("token sub: {e}")))?;
        Ok(Identity { user, expires_at: Some(UNIX_EPOCH + Duration::from_secs(data.claims.exp)) })
    }
}

/// Signs an HS256 token for `sub` valid for `ttl` (used by `herald token`, `--dev` and tests).
pub fn sign_token(secret: &str, sub: &str, ttl: Duration) -> String {
    install_crypto_provider();
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + ttl;
    let claims = Claims { sub: Some(sub.to_owned()), exp: exp.as_secs() };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

fn install_crypto_provider() {
    // Err means one is installed already, which is fine.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}
