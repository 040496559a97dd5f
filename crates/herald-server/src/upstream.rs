//! Upstream: client frames travel to the backend as signed HTTP POSTs (docs/protocol.md, "Upstream").
//!
//! A browser that has a Herald socket needs no second channel to say "start" or "stop": its
//! `message` and `cancel` frames are forwarded to `HERALD_UPSTREAM_URL`, with the `user_id` taken
//! from the connection's credential (never from the frame) and the body signed Stripe-style:
//! `Herald-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. The backend's
//! answer returns to the same connection as an `ack` or an `error` carrying the client's `ref`.
//!
//! Requests run in their own tasks, at most `max_in_flight` per connection, each bounded by the
//! timeout, so a slow or dead backend never blocks event delivery on the socket.

use crate::config::UpstreamConfig;
use herald_protocol::ServerFrame;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Name of the signature header.
pub const SIGNATURE_HEADER: &str = "Herald-Signature";

/// Forwards frames to the backend. Cheap to clone (one pooled HTTP client).
#[derive(Clone, Debug)]
pub struct Upstream {
    http: reqwest::Client,
    config: UpstreamConfig,
}

/// Why a forwarded frame got no acknowledgement.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The backend answered with a non-2xx status.
    #[error("backend answered {0}")]
    Status(u16),
    /// The backend could not be reached, or did not answer in time.
    #[error("backend unreachable: {0}")]
    Unavailable(String),
}

impl Upstream {
    /// A forwarder for `config`, with connection reuse.
    pub fn new(config: UpstreamConfig) -> Self {
        let http = reqwest::Client::builder().timeout(config.timeout).build().expect("HTTP client builds");
        Self { http, config }
    }

    /// True when connect/disconnect notices should be sent.
    pub fn presence(&self) -> bool {
        self.config.presence
    }

    /// Requests allowed in flight per connection.
    pub fn max_in_flight(&self) -> usize {
        self.config.max_in_flight
    }

    /// POSTs `body` signed; returns the backend's status and JSON body (null if not JSON).
    pub async fn post(&self, body: &Value) -> Result<(u16, Value), UpstreamError> {
        let raw = serde_json::to_vec(body).expect("JSON values serialize");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let response = self
            .http
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature_header(self.config.secret.expose(), now, &raw))
            .body(raw)
            .send()
            .await
            .map_err(|e| {
                UpstreamError::Unavailable(if e.is_timeout() { "timed out".into() } else { e.to_string() })
            })?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err(UpstreamError::Status(status));
        }
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Forwards one client frame and turns the outcome into the frame for the client.
    pub async fn forward(&self, body: Value, reference: Option<String>) -> ServerFrame {
        match self.post(&body).await {
            Ok((status, body)) => ServerFrame::Ack { reference, status, body },
            Err(e) => {
                let code = match e {
                    UpstreamError::Status(_) => "upstream_error",
                    UpstreamError::Unavailable(_) => "upstream_unavailable",
                };
                ServerFrame::Error { code: code.into(), message: e.to_string(), reference }
            }
        }
    }
}

/// The `Herald-Signature` value for `body` signed at unix time `t`.
pub fn signature_header(secret: &str, t: u64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex(&mac(secret, t, body)))
}

fn mac(secret: &str, t: u64, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a signature was refused by [`verify_signature`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=…,v1=…`.
    #[error("malformed Herald-Signature header")]
    Malformed,
    /// The timestamp is further from now than the tolerance (a replay).
    #[error("signature timestamp outside the tolerance")]
    Stale,
    /// The MAC does not match the body.
    #[error("signature does not match the body")]
    Mismatch,
}

/// Verifies a `Herald-Signature` header, for Rust backends (and tests): constant-time MAC check,
/// timestamp within `tolerance` of `now`.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    tolerance: Duration,
    now: SystemTime,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => signatures.push(v.to_owned()),
            _ => {}
        }
    }
    let (Some(t), false) = (t, signatures.is_empty()) else {
        return Err(SignatureError::Malformed);
    };
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if now.abs_diff(t) > tolerance.as_secs() {
        return Err(SignatureError::Stale);
    }
    for signature in signatures {
        let Some(given) = unhex(&signature) else { continue };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_is_refused() {
        let now = SystemTime::now();
        let t = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let header = signature_header("s3cret", t, b"{\"a\":1}");
        let tolerance = Duration::from_secs(300);
        assert_eq!(verify_signature("s3cret", &header, b"{\"a\":1}", tolerance, now), Ok(()));
        assert_eq!(
            verify_signature("s3cret", &header, b"{\"a\":2}", tolerance, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature("other", &header, b"{\"a\":1}", tolerance, now),
            Err(SignatureError::Mismatch)
        );
        let old = signature_header("s3cret", t - 600, b"{}");
        assert_eq!(verify_signature("s3cret", &old, b"{}", tolerance, now), Err(SignatureError::Stale));
        assert_eq!(
            verify_signature("s3cret", "v1=abc", b"{}", tolerance, now),
            Err(SignatureError::Malformed)
        );
    }
}
