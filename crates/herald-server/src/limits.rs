//! Rate and connection limits that protect the server from one noisy or hostile peer.
//!
//! - Connections per client IP ([`Limits::connect_ip`]): open WebSockets and AG-UI streams; over
//!   it, 429 before the upgrade. TCP connections that have not sent a request yet are limited per
//!   IP too, to as many again, counted apart so an over-limit client still gets its 429
//!   ([`Limits::accept_ip`], [`crate::serve`]): over it, the TCP connection is closed. The peer address is the TCP peer: behind a reverse proxy every client shares the
//!   proxy's address, so raise or disable the limit there (docs/security.md).
//! - Client messages per second per connection ([`MessageRate`]): a token bucket (governor);
//!   over it the message is answered with an error frame `rate_limited` and dropped, and a client
//!   that keeps sending through a whole second's worth of refusals is closed with 1008.
//! - Publish requests per second per API key ([`Limits::publish`]): a token bucket per configured
//!   key; over it, 429 `rate_limited` with `Retry-After`.

use crate::config::Config;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// Every limit of one server.
#[derive(Debug)]
pub struct Limits {
    per_ip: Option<Arc<IpCounts>>,
    /// TCP connections per IP that have not sent their first request.
    pending_per_ip: Option<Arc<IpCounts>>,
    /// One bucket per configured API key (same order as `Config::api_keys`); empty: no limit.
    publish: Vec<DefaultDirectRateLimiter>,
}

/// The limit refused; `retry_after` says when trying again can succeed, when that is known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Limited {
    /// What was refused and which setting raises the limit.
    pub message: String,
    /// When a retry may succeed.
    pub retry_after: Option<Duration>,
}

impl Limits {
    /// The limits configured in `config`.
    pub fn new(config: &Config) -> Self {
        let counts = || {
            (config.max_connections_per_ip > 0)
                .then(|| Arc::new(IpCounts { max: config.max_connections_per_ip, open: Mutex::default() }))
        };
        let (per_ip, pending_per_ip) = (counts(), counts());
        let publish = match NonZeroU32::new(config.publish_rate_per_s) {
            Some(rate) => {
                config.api_keys.iter().map(|_| RateLimiter::direct(Quota::per_second(rate))).collect()
            }
            None => Vec::new(),
        };
        Self { per_ip, pending_per_ip, publish }
    }

    /// Takes one connection slot for `ip`, held until the returned slot is dropped; `None` peer
    /// (a server without peer addresses, e.g. a test harness) is not limited.
    pub fn connect_ip(&self, ip: Option<IpAddr>) -> Result<IpSlot, Limited> {
        take_slot(self.per_ip.as_ref(), ip, "connections_per_ip")
    }

    /// Takes one slot for a TCP connection from `ip` that has not sent a request yet (the accept
    /// loop frees it at the first request): idle connections cannot exhaust file descriptors.
    pub fn accept_ip(&self, ip: IpAddr) -> Result<IpSlot, Limited> {
        take_slot(self.pending_per_ip.as_ref(), Some(ip), "idle_connections_per_ip")
    }

    /// Takes one publish request from the bucket of API key number `key`.
    pub fn publish(&self, key: usize) -> Result<(), Limited> {
        let Some(bucket) = self.publish.get(key) else {
            return Ok(());
        };
        bucket.check().map_err(|not_until| {
            crate::metrics::rate_limited("publish_rate");
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Limited {
                message: "publish rate limit of this API key reached (publish_rate_per_s); \
                          retry after Retry-After seconds, or batch events"
                    .into(),
                retry_after: Some(wait),
            }
        })
    }
}

fn take_slot(
    counts: Option<&Arc<IpCounts>>,
    ip: Option<IpAddr>,
    metric: &'static str,
) -> Result<IpSlot, Limited> {
    let (Some(counts), Some(ip)) = (counts, ip) else {
        return Ok(IpSlot(None));
    };
    let mut open = counts.open.lock();
    let n = open.entry(ip).or_insert(0);
    if *n >= counts.max {
        crate::metrics::rate_limited(metric);
        return Err(Limited {
            message: format!(
                "too many connections from {ip} (max_connections_per_ip = {}); close some first",
                counts.max
            ),
            retry_after: None,
        });
    }
    *n += 1;
    Ok(IpSlot(Some((counts.clone(), ip))))
}

#[derive(Debug)]
struct IpCounts {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of an IP address; dropping it frees the slot. The default slot is not
/// counted anywhere (no limit).
#[derive(Debug, Default)]
pub struct IpSlot(Option<(Arc<IpCounts>, IpAddr)>);

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some((counts, ip)) = self.0.take() {
            let mut open = counts.open.lock();
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

/// What to do with one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: answer with an error frame `rate_limited`, do not handle it.
    Refuse,
    /// Over the rate for a whole second's worth of messages in a row: close with 1008.
    Close,
}

/// The message rate limit of one connection.
#[derive(Debug)]
pub struct MessageRate {
    bucket: DefaultDirectRateLimiter,
    refused_in_a_row: u32,
    max_refused: u32,
}

impl MessageRate {
    /// A limiter of `n` messages per second (burst of `n`); 0 is taken as 1.
    pub fn per_second(n: u32) -> Self {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        MessageRate {
            bucket: RateLimiter::direct(Quota::per_second(n)),
            refused_in_a_row: 0,
            max_refused: n.get(),
        }
    }

    /// Counts one client message and says what to do with it.
    pub fn check(&mut self) -> Verdict {
        if self.bucket.check().is_ok() {
            self.refused_in_a_row = 0;
            return Verdict::Allow;
        }
        crate::metrics::rate_limited("client_messages");
        self.refused_in_a_row += 1;
        if self.refused_in_a_row > self.max_refused { Verdict::Close } else { Verdict::Refuse }
    }

    /// True when the last [`check`](Self::check) refused the message.
    pub fn refused(&self) -> bool {
        self.refused_in_a_row > 0
    }
}

/// The TCP peer address of a request, when the server records it (see [`crate::serve`]).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, Settings};

    fn config(per_ip: usize, msgs: u32, publish: u32) -> Config {
        Settings {
            jwt_secret: Some(Secret::new("0123456789abcdef0123")),
            api_key: Some(Secret::new("k1,k2")),
            max_connections_per_ip: Some(per_ip),
            max_client_msgs_per_s: Some(msgs),
            publish_rate_per_s: Some(publish),
            ..Settings::default()
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn ip_slots_are_freed_on_drop() {
        let limits = Limits::new(&config(2, 20, 0));
        let ip = Some("10.0.0.1".parse().unwrap());
        let a = limits.connect_ip(ip).unwrap();
        let _b = limits.connect_ip(ip).unwrap();
        assert!(limits.connect_ip(ip).is_err());
        assert!(limits.connect_ip(Some("10.0.0.2".parse().unwrap())).is_ok());
        drop(a);
        assert!(limits.connect_ip(ip).is_ok());
        assert!(Limits::new(&config(0, 20, 0)).per_ip.is_none(), "0 disables the limit");
    }

    #[test]
    fn message_flood_is_refused_then_closed() {
        let mut rate = MessageRate::per_second(5);
        let verdicts: Vec<_> = (0..11).map(|_| rate.check()).collect();
        assert_eq!(&verdicts[..5], &[Verdict::Allow; 5]);
        assert_eq!(&verdicts[5..10], &[Verdict::Refuse; 5]);
        assert_eq!(verdicts[10], Verdict::Close);
    }

    #[test]
    fn publish_buckets_are_per_key_with_a_retry_after() {
        let limits = Limits::new(&config(0, 20, 2));
        assert!(limits.publish(0).is_ok() && limits.publish(0).is_ok());
        let limited = limits.publish(0).unwrap_err();
        assert!(limited.retry_after.unwrap() <= Duration::from_secs(1));
        assert!(limits.publish(1).is_ok(), "the other key has its own bucket");
        assert!(Limits::new(&config(0, 20, 0)).publish(0).is_ok());
    }
}
