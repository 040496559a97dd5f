//! Client JWTs: verification pinned to the configured key, and signing for `herald token`.
//!
//! Three key sources (docs/security.md), exactly one configured:
//! - an HS256 secret (`HERALD_JWT_SECRET`);
//! - an RS256 or ES256 public key from a PEM file (`HERALD_JWT_PUBLIC_KEY`);
//! - a JWKS URL (`HERALD_JWKS_URL`), see [`super::jwks`].
//!
//! The algorithm is always taken from the key, never from the token: a token whose header names
//! another algorithm (`none`, or HS256 signed with an RSA public key as the HMAC secret: key
//! confusion) is refused before its signature is looked at.

use super::jwks::JwksCache;
use super::{AuthError, Identity};
use crate::config::{JwtConfig, JwtKey};
use herald_protocol::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest token accepted, in bytes. Longer ones are refused before any decoding: real tokens
/// are well under 2 KiB, and this bounds the work an unauthenticated request can cause.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A public key read from a PEM file, with the one algorithm it verifies.
#[derive(Clone)]
pub struct PublicKey {
    key: DecodingKey,
    algorithm: Algorithm,
    path: PathBuf,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("algorithm", &self.algorithm).field("path", &self.path).finish()
    }
}

/// Why a PEM file cannot be used as the JWT public key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("cannot read JWT public key file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds a private key: Herald only needs (and should only get) the public half.
    #[error(
        "JWT public key file {path} holds a private key: give Herald only the public key \
         (openssl pkey -in key.pem -pubout)"
    )]
    Private {
        /// The file.
        path: PathBuf,
    },
    /// The file is not an RSA or P-256 public key in PEM form.
    #[error(
        "JWT public key file {path} is not an RSA (RS256) or EC P-256 (ES256) public key in PEM \
         form (-----BEGIN PUBLIC KEY-----)"
    )]
    NotAKey {
        /// The file.
        path: PathBuf,
    },
}

impl PublicKey {
    /// Reads and parses a PEM public key file: RSA → RS256, EC P-256 → ES256.
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
        Self::from_pem(&pem, path)
    }

    /// Parses PEM bytes; `path` only names the source in errors.
    pub fn from_pem(pem: &[u8], path: &Path) -> Result<Self, KeyError> {
        install_crypto_provider();
        let text = String::from_utf8_lossy(pem);
        if text.contains("PRIVATE KEY-----") {
            return Err(KeyError::Private { path: path.to_owned() });
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self { key, algorithm: Algorithm::RS256, path: path.to_owned() });
        }
        // jsonwebtoken accepts any EC curve here; ES256 needs P-256, so check the curve too.
        use p256::pkcs8::DecodePublicKey;
        if p256::PublicKey::from_public_key_pem(&text).is_ok()
            && let Ok(key) = DecodingKey::from_ec_pem(pem)
        {
            return Ok(Self { key, algorithm: Algorithm::ES256, path: path.to_owned() });
        }
        Err(KeyError::NotAKey { path: path.to_owned() })
    }

    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// What verification checks besides the signature.
#[derive(Debug, Clone)]
struct Rules {
    audience: Option<String>,
    issuer: Option<String>,
    leeway_s: u64,
}

impl Rules {
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_s;
        validation.validate_nbf = true;
        // A configured aud/iss is also required: jsonwebtoken alone accepts a token that
        // simply leaves the claim out.
        let mut required = vec!["exp"];
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// Checks one token against one key and its algorithm.
    fn decode(&self, token: &str, key: &DecodingKey, algorithm: Algorithm) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let validation = self.validation(algorithm);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => {
                AuthError::Invalid("signature does not match the configured key".into())
            }
            ErrorKind::InvalidAlgorithm => {
                AuthError::Invalid(format!("token algorithm is not the one configured ({algorithm:?})"))
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
        Ok(Identity {
            user,
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(data.claims.exp)),
            issued_at: data.claims.iat.or(data.claims.nbf),
        })
    }
}

enum Keys {
    /// One key, one algorithm (HS256 secret or a PEM public key).
    Fixed { key: DecodingKey, algorithm: Algorithm },
    /// Keys by `kid` from a JWKS document.
    Jwks(JwksCache),
}

/// Verifies client JWTs with the configured key source; the algorithm comes from the key.
pub struct JwtVerifier {
    keys: Keys,
    rules: Rules,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.keys {
            Keys::Fixed { algorithm, .. } => format!("{algorithm:?}"),
            Keys::Jwks(cache) => format!("JWKS {}", cache.url()),
        };
        f.debug_struct("JwtVerifier").field("keys", &keys).field("rules", &self.rules).finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    exp: u64,
    /// Issued-at, unix seconds: compared with a user's revocation (`revoke_before`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    /// Not-before: stands in for a missing `iat` when checking revocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

/// The parts of a token header that select the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    /// The algorithm the token claims (never trusted to pick the algorithm, only compared).
    pub alg: Algorithm,
    /// The key id, used to find the key in a JWKS.
    pub kid: Option<String>,
}

/// Parses a token's header without verifying anything: size check, three segments, base64url,
/// JSON with a known `alg`. Errors are what a client sees (401).
pub fn peek_header(token: &str) -> Result<TokenHeader, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid(format!("token is longer than {MAX_TOKEN_BYTES} bytes")));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| AuthError::Invalid(format!("malformed token header: {e}")))?;
    Ok(TokenHeader { alg: header.alg, kid: header.kid })
}

impl JwtVerifier {
    /// A verifier for the configured key, audience, issuer and leeway; reads the public key
    /// file when one is configured.
    pub fn new(config: &JwtConfig) -> Result<Self, KeyError> {
        install_crypto_provider();
        let keys = match &config.key {
            JwtKey::Secret(secret) => Keys::Fixed {
                key: DecodingKey::from_secret(secret.expose().as_bytes()),
                algorithm: Algorithm::HS256,
            },
            JwtKey::PublicKey(path) => {
                let public = PublicKey::from_pem_file(path)?;
                Keys::Fixed { key: public.key, algorithm: public.algorithm }
            }
            JwtKey::Jwks { url, min_refresh } => Keys::Jwks(JwksCache::new(url.clone(), *min_refresh)),
        };
        let rules = Rules {
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            leeway_s: config.leeway.as_secs(),
        };
        Ok(Self { keys, rules })
    }

    /// Starts fetching the JWKS in the background, if one is configured, so the first client
    /// does not wait for it. Needs a Tokio runtime; a no-op otherwise.
    pub fn warm_up(&self) {
        if let Keys::Jwks(cache) = &self.keys {
            cache.warm_up();
        }
    }

    /// Checks size, header, algorithm, signature, `exp`, `nbf`, `aud`, `iss` and `sub`.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = peek_header(token)?;
        match &self.keys {
            Keys::Fixed { key, algorithm } => self.rules.decode(token, key, *algorithm),
            Keys::Jwks(cache) => {
                let (key, algorithm) = cache.key_for(header.kid.as_deref()).await?;
                self.rules.decode(token, &key, algorithm)
            }
        }
    }
}

/// Signs an HS256 token for `sub` valid for `ttl` (used by `herald token`, `--dev` and tests).
pub fn sign_token(secret: &str, sub: &str, ttl: Duration) -> String {
    install_crypto_provider();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let claims =
        Claims { sub: Some(sub.to_owned()), exp: (now + ttl).as_secs(), iat: Some(now.as_secs()), nbf: None };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// Installs jsonwebtoken's pure-Rust crypto provider (once per process).
pub(crate) fn install_crypto_provider() {
    // Err means one is installed already, which is fine.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_header_refuses_junk_and_huge_tokens() {
        assert!(peek_header("").is_err());
        assert!(peek_header("a.b.c").is_err());
        assert!(peek_header(&"a".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        let token = sign_token("0123456789abcdef", "u", Duration::from_secs(60));
        assert_eq!(peek_header(&token).unwrap().alg, Algorithm::HS256);
    }

    fn verify_now(verifier: &JwtVerifier, token: &str) -> Result<Identity, AuthError> {
        use std::task::{Context, Poll, Waker};
        let mut verify = std::pin::pin!(verifier.verify(token));
        match verify.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("fixed-key verification awaited"),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1000, ..Default::default() })]

        /// Random and JWT-shaped input never verifies and never panics (stable-toolchain
        /// counterpart of the `jwt` cargo-fuzz target).
        #[test]
        fn random_tokens_never_verify(
            raw in "\\PC{0,200}",
            parts in proptest::collection::vec("[A-Za-z0-9_\\-]{0,60}", 1..5),
        ) {
            let verifier = JwtVerifier::new(&JwtConfig {
                key: JwtKey::Secret(crate::config::Secret::new("0123456789abcdef0123")),
                audience: Some("herald".into()),
                issuer: None,
                leeway: Duration::from_secs(5),
            })
            .expect("an HS256 secret needs no file");
            let _ = peek_header(&raw);
            proptest::prop_assert!(verify_now(&verifier, &raw).is_err());
            let dotted = parts.join(".");
            proptest::prop_assert!(verify_now(&verifier, &dotted).is_err());
            // A real header in front of random segments.
            let token = format!("eyJhbGciOiJIUzI1NiJ9.{dotted}");
            proptest::prop_assert!(verify_now(&verifier, &token).is_err());
        }
    }

    #[test]
    fn private_and_junk_pem_files_are_named_in_the_error() {
        let path = Path::new("/etc/herald/key.pem");
        let e = PublicKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n", path)
            .unwrap_err();
        assert!(e.to_string().contains("/etc/herald/key.pem") && e.to_string().contains("private"), "{e}");
        let e = PublicKey::from_pem(b"hello", path).unwrap_err();
        assert!(e.to_string().contains("/etc/herald/key.pem"), "{e}");
    }
}
