//! The HTTP side of opening a client WebSocket: the request's checks (RFC 6455 §4.2.1, and
//! RFC 8441 over HTTP/2), the answer that switches protocols, and the upgraded stream once hyper
//! hands it over.
//!
//! axum's `WebSocketUpgrade` does the same, but gives out a socket whose TCP stream is out of
//! reach; the connection needs the stream itself to write event frames without tungstenite's
//! per-message layers (see [`super::socket`]).

use super::socket::Socket;
use crate::tcp::RawTcp;
use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Version};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::future::Future;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;
use tungstenite::protocol::{Role, WebSocketConfig};

/// A request that asked to become a WebSocket, checked and not yet answered.
#[derive(Debug)]
pub struct Handshake {
    /// `Sec-WebSocket-Key` on HTTP/1.1; HTTP/2 has none (RFC 8441 §5).
    key: Option<HeaderValue>,
    on_upgrade: OnUpgrade,
    /// The subprotocols the client offered, in its order.
    offered: Vec<HeaderValue>,
    /// The TCP connection, on HTTP/1.1: after the switch the WebSocket has it to itself.
    raw: Option<RawTcp>,
}

impl Handshake {
    /// The handshake `parts` ask for, or `None` when they are not a valid WebSocket upgrade
    /// (the caller answers such a request with an error of its own).
    pub fn from_parts(parts: &mut Parts) -> Option<Self> {
        let key = if parts.version <= Version::HTTP_11 {
            if parts.method != Method::GET
                || !header_contains(&parts.headers, header::CONNECTION, "upgrade")
                || !header_is(&parts.headers, header::UPGRADE, "websocket")
            {
                return None;
            }
            Some(parts.headers.get(header::SEC_WEBSOCKET_KEY)?.clone())
        } else {
            let protocol = parts.extensions.get::<hyper::ext::Protocol>();
            if parts.method != Method::CONNECT || protocol.is_none_or(|p| p.as_str() != "websocket") {
                return None;
            }
            None
        };
        if !header_is(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return None;
        }
        let on_upgrade = parts.extensions.remove::<OnUpgrade>()?;
        let offered = tokens(&parts.headers, header::SEC_WEBSOCKET_PROTOCOL)
            .filter_map(|offer| HeaderValue::from_bytes(offer).ok())
            .collect();
        let raw = key.as_ref().and_then(|_| parts.extensions.get::<RawTcp>().cloned());
        Some(Handshake { key, on_upgrade, offered, raw })
    }

    /// Answers the request, selecting `protocol` if the client offered it, and runs `serve` on
    /// the socket once the connection switched (in a task of its own).
    pub fn accept<F, Fut>(self, protocol: Option<&'static str>, config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let selected = protocol.filter(|p| self.offered.iter().any(|o| o == p)).map(HeaderValue::from_static);
        let (on_upgrade, raw) = (self.on_upgrade, self.raw);
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    debug!("the WebSocket upgrade did not complete: {e}");
                    return;
                }
            };
            let stream =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
            serve(Socket::new(stream, raw)).await;
        });
        let mut response = match &self.key {
            Some(key) => Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, HeaderValue::from_static("upgrade"))
                .header(header::UPGRADE, HeaderValue::from_static("websocket"))
                .header(
                    header::SEC_WEBSOCKET_ACCEPT,
                    tungstenite::handshake::derive_accept_key(key.as_bytes()),
                )
                .body(Body::empty())
                .expect("a valid 101 response"),
            // HTTP/2: a 2xx answer to the extended CONNECT opens the stream (RFC 8441 §5).
            None => Response::new(Body::empty()),
        };
        if let Some(selected) = selected {
            response.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, selected);
        }
        response
    }
}

fn header_is(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers.get(&name).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// True when the comma-separated header `name` lists `token` (case-insensitive).
fn header_contains(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// The items of the comma-separated header `name`, over all its lines, trimmed.
fn tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    headers.get_all(name).into_iter().flat_map(|v| v.as_bytes().split(|&b| b == b',')).map(<[u8]>::trim_ascii)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(request: Request<()>) -> Parts {
        let mut parts = request.into_parts().0;
        // hyper puts one in every request that can be upgraded; this one never completes.
        let on_upgrade = hyper::upgrade::on(Request::new(()));
        parts.extensions.insert(on_upgrade);
        parts
    }

    const UPGRADE: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    /// The upgrade request of RFC 6455 §1.3, with header `name` set to `value` (or left out).
    fn upgrade_with(name: &str, value: Option<&str>) -> Request<()> {
        let mut request = Request::get("/ws");
        for (n, v) in UPGRADE {
            if n != name {
                request = request.header(n, v);
            }
        }
        if let Some(value) = value {
            request = request.header(name, value);
        }
        request.body(()).unwrap()
    }

    #[tokio::test]
    async fn accepts_an_upgrade_with_the_rfc_accept_key_and_the_offered_protocol() {
        let mut parts = parts(upgrade_with("sec-websocket-protocol", Some("herald.v1, bearer.x")));
        let handshake = Handshake::from_parts(&mut parts).expect("a valid upgrade");
        let response = handshake.accept(Some("herald.v1"), WebSocketConfig::default(), |_| async {});
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        // The example of RFC 6455 §1.3.
        assert_eq!(response.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(response.headers()["sec-websocket-protocol"], "herald.v1");
    }

    #[tokio::test]
    async fn selects_no_protocol_the_client_did_not_offer() {
        let mut parts = parts(upgrade_with("sec-websocket-protocol", Some("other")));
        let handshake = Handshake::from_parts(&mut parts).expect("a valid upgrade");
        let response = handshake.accept(Some("herald.v1"), WebSocketConfig::default(), |_| async {});
        assert!(response.headers().get("sec-websocket-protocol").is_none());
    }

    /// Over HTTP/1.1 the WebSocket has the TCP connection to itself, so its socket may write
    /// frames straight to it; over HTTP/2 it is one stream of many, and raw bytes would break
    /// the connection's framing: no stream is taken.
    #[tokio::test]
    async fn takes_the_tcp_stream_over_http1_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (_shared, raw) = crate::tcp::SharedTcp::new(listener.accept().await.unwrap().0);

        let mut http1 = parts(upgrade_with("", None));
        http1.extensions.insert(raw.clone());
        assert!(Handshake::from_parts(&mut http1).expect("an HTTP/1.1 upgrade").raw.is_some());

        let mut http2 = parts(
            Request::connect("/ws")
                .version(Version::HTTP_2)
                .header("sec-websocket-version", "13")
                .body(())
                .unwrap(),
        );
        http2.extensions.insert(hyper::ext::Protocol::from_static("websocket"));
        http2.extensions.insert(raw);
        assert!(Handshake::from_parts(&mut http2).expect("an RFC 8441 CONNECT").raw.is_none());
    }

    #[test]
    fn refuses_requests_that_are_not_upgrades() {
        let mut post = upgrade_with("", None);
        *post.method_mut() = Method::POST;
        let cases = [
            Request::get("/ws").body(()).unwrap(),
            post,
            upgrade_with("sec-websocket-version", Some("8")),
            upgrade_with("sec-websocket-version", None),
            upgrade_with("sec-websocket-key", None),
            upgrade_with("upgrade", Some("h2c")),
            upgrade_with("connection", Some("upgrade-ish")),
        ];
        for request in cases {
            let described = format!("{} {:?}", request.method(), request.headers());
            assert!(Handshake::from_parts(&mut parts(request)).is_none(), "{described}");
        }
    }
}
