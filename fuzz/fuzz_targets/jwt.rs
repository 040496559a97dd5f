//! Client JWTs: header parsing and full verification against an HS256 key with aud/iss rules.
//! Random input must never verify, and must never panic.
#![no_main]

use herald_server::auth::jwt::{JwtVerifier, peek_header};
use herald_server::config::{JwtConfig, JwtKey, Secret};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

static VERIFIER: LazyLock<JwtVerifier> = LazyLock::new(|| {
    JwtVerifier::new(&JwtConfig {
        key: JwtKey::Secret(Secret::new("fuzz-secret-0123456789abcdef")),
        audience: Some("herald".into()),
        issuer: Some("https://id.example".into()),
        leeway: Duration::from_secs(5),
    })
    .expect("an HS256 secret needs no file")
});

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let _ = peek_header(token);
    // A fixed-key verification never awaits: one poll finishes it.
    let mut verify = std::pin::pin!(VERIFIER.verify(token));
    match verify.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => assert!(result.is_err(), "random input verified: {token:?}"),
        Poll::Pending => panic!("fixed-key verification awaited"),
    }
});
