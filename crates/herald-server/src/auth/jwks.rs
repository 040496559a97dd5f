//! JWKS: client JWT keys fetched from an identity provider's `jwks_uri`, cached by `kid`.
//!
//! - The set is fetched at startup (in the background) and kept in memory.
//! - A token whose `kid` is not in the cache, or a cache older than [`MAX_AGE`], triggers a
//!   refresh; refreshes are single-flight and at most one per `jwks_min_refresh_s`, so tokens
//!   with random `kid`s cannot turn Herald into a request amplifier against the provider.
//! - When the endpoint is down or returns garbage, the last good set is kept (stale) and used.
//! - Only asymmetric signing keys are taken (RSA → RS256/RS384/RS512/PS*, EC → ES256/ES384):
//!   a symmetric (`oct`) key in a public document would let anyone sign tokens.

use super::AuthError;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// A cached set older than this is refreshed on the next verification (the stale set is still
/// used if the refresh fails).
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// Timeout of one JWKS request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest JWKS document accepted.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Why a JWKS fetch failed (logged; the stale set stays in use).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The request failed or the status was not 2xx.
    #[error("GET {url}: {reason}")]
    Http {
        /// The JWKS URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The document is not a JWKS with at least one usable key.
    #[error("JWKS at {url} is unusable: {reason}")]
    Document {
        /// The JWKS URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One usable key: the decoding key and the algorithm it is pinned to.
#[derive(Clone)]
struct Entry {
    key: DecodingKey,
    algorithm: Algorithm,
}

#[derive(Default)]
struct Snapshot {
    by_kid: HashMap<String, Entry>,
    /// Keys without a `kid` (usable only when the set has exactly one key).
    anonymous: Vec<Entry>,
    fetched_at: Option<Instant>,
}

impl Snapshot {
    fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    fn lookup(&self, kid: Option<&str>) -> Option<Entry> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None if self.len() == 1 => self.by_kid.values().chain(&self.anonymous).next().cloned(),
            None => None,
        }
    }

    fn fresh(&self) -> bool {
        self.fetched_at.is_some_and(|at| at.elapsed() < MAX_AGE)
    }
}

struct Inner {
    url: String,
    http: reqwest::Client,
    min_refresh: Duration,
    keys: RwLock<Arc<Snapshot>>,
    /// Held while fetching (single flight); holds the time of the last attempt.
    refresh: tokio::sync::Mutex<Option<Instant>>,
}

/// A cached JWKS. Cheap to clone (shared).
#[derive(Clone)]
pub struct JwksCache {
    inner: Arc<Inner>,
}

impl JwksCache {
    /// A cache for the JWKS at `url`; nothing is fetched until [`warm_up`](Self::warm_up) or the
    /// first token.
    pub fn new(url: String, min_refresh: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()
            .expect("a reqwest client with timeouts builds");
        Self {
            inner: Arc::new(Inner {
                url,
                http,
                min_refresh,
                keys: RwLock::new(Arc::default()),
                refresh: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The JWKS URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Fetches the set in the background (if a Tokio runtime is running).
    pub fn warm_up(&self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let cache = self.clone();
            runtime.spawn(async move { cache.refresh().await });
        }
    }

    /// The key for a token's `kid` (or the only key, when the token has none), refreshing the
    /// set when the `kid` is unknown or the set is old.
    pub async fn key_for(&self, kid: Option<&str>) -> Result<(DecodingKey, Algorithm), AuthError> {
        let snapshot = self.inner.keys.read().clone();
        if snapshot.fresh()
            && let Some(entry) = snapshot.lookup(kid)
        {
            return Ok((entry.key, entry.algorithm));
        }
        self.refresh().await;
        let snapshot = self.inner.keys.read().clone();
        match snapshot.lookup(kid) {
            Some(entry) => Ok((entry.key, entry.algorithm)),
            None if snapshot.fetched_at.is_none() => {
                Err(AuthError::Invalid("the JWKS could not be fetched yet; retry shortly".into()))
            }
            None => Err(AuthError::Invalid(match kid {
                Some(kid) => format!("no key with kid {kid:?} in the JWKS"),
                None => format!("token has no kid and the JWKS has {} keys", snapshot.len()),
            })),
        }
    }

    /// Fetches the set unless another task is fetching or one did within the minimum interval.
    /// A failure keeps the previous set.
    async fn refresh(&self) {
        let mut last = self.inner.refresh.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.inner.min_refresh) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(snapshot) => {
                info!(url = %self.inner.url, keys = snapshot.len(), "JWKS loaded");
                *self.inner.keys.write() = Arc::new(snapshot);
            }
            Err(e) => {
                let kept = self.inner.keys.read().len();
                warn!("JWKS refresh failed, keeping the {kept} cached keys: {e}");
                crate::metrics::jwks_refresh_failed();
            }
        }
    }

    async fn fetch(&self) -> Result<Snapshot, JwksError> {
        let url = &self.inner.url;
        let http = |reason: String| JwksError::Http { url: url.clone(), reason };
        let mut response = self.inner.http.get(url).send().await.map_err(|e| http(e.to_string()))?;
        if !response.status().is_success() {
            return Err(http(format!("status {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| http(e.to_string()))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(http(format!("document is over {MAX_DOCUMENT_BYTES} bytes")));
            }
        }
        parse_jwks(&body).map_err(|reason| JwksError::Document { url: url.clone(), reason })
    }
}

/// Parses a JWKS document, keeping every usable signing key and skipping the rest (unknown key
/// types, encryption keys, symmetric keys). Fails when no key is usable.
fn parse_jwks(body: &[u8]) -> Result<Snapshot, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut snapshot = Snapshot { fetched_at: Some(Instant::now()), ..Snapshot::default() };
    for value in document.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
        let Some(entry) = usable(&jwk) else { continue };
        match jwk.common.key_id {
            Some(kid) => {
                snapshot.by_kid.insert(kid, entry);
            }
            None => snapshot.anonymous.push(entry),
        }
    }
    if snapshot.len() == 0 {
        return Err("no RSA or EC signing key in it".into());
    }
    Ok(snapshot)
}

fn usable(jwk: &Jwk) -> Option<Entry> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let declared = jwk.common.key_algorithm.as_ref().and_then(|a| a.to_string().parse::<Algorithm>().ok());
    let algorithm = match (&jwk.algorithm, declared) {
        (
            AlgorithmParameters::RSA(_),
            Some(
                a @ (Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512),
            ),
        ) => a,
        (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), declared) => match (&ec.curve, declared) {
            (EllipticCurve::P256, None | Some(Algorithm::ES256)) => Algorithm::ES256,
            (EllipticCurve::P384, None | Some(Algorithm::ES384)) => Algorithm::ES384,
            _ => return None,
        },
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Entry { key, algorithm })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_unknown_keys_are_skipped() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac","alg":"HS256"},
            {"kty":"OKP","crv":"X25519","x":"AAAA","kid":"x"},
            {"kty":"RSA","n":"AQAB","e":"AQAB","kid":"enc","use":"enc"},
            {"kty":"RSA","n":"AQAB","e":"AQAB","kid":"sig"}
        ]}"#;
        let snapshot = parse_jwks(doc).unwrap();
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot.lookup(Some("sig")).unwrap().algorithm, Algorithm::RS256);
        assert!(snapshot.lookup(Some("hmac")).is_none());
        assert!(snapshot.lookup(None).is_some(), "the only key serves tokens without kid");
    }

    #[test]
    fn a_document_without_usable_keys_is_an_error() {
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        assert!(parse_jwks(b"<html>").is_err());
    }
}
