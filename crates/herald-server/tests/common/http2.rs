//! WebSockets over HTTP/2 (RFC 8441): one HTTP/2 connection to the test server with prior
//! knowledge (no TLS), extended CONNECTs on it, and a check that its other streams still work.

use super::{T, TestServer};
use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

/// An HTTP/2 connection to a test server.
pub struct Http2 {
    sender: SendRequest<Empty<Bytes>>,
    authority: String,
}

impl Http2 {
    /// Opens the connection; it is served until the test ends.
    pub async fn connect(server: &TestServer) -> Http2 {
        let authority = server.url.trim_start_matches("http://").to_owned();
        let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(connection);
        Http2 { sender, authority }
    }

    /// Sends an extended CONNECT for a WebSocket at `path`, with `Authorization: Bearer <bearer>`.
    pub async fn extended_connect(&mut self, path: &str, bearer: &str) -> hyper::Response<Incoming> {
        let mut request = hyper::Request::connect(format!("http://{}{path}", self.authority))
            .version(hyper::Version::HTTP_2)
            .header("sec-websocket-version", "13")
            .header("authorization", format!("Bearer {bearer}"))
            .body(Empty::new())
            .unwrap();
        request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
        self.sender.send_request(request).await.unwrap()
    }

    /// The WebSocket a 2xx answer to an extended CONNECT opened.
    pub async fn websocket(response: &mut hyper::Response<Incoming>) -> WebSocketStream<TokioIo<Upgraded>> {
        let upgraded = hyper::upgrade::on(response).await.unwrap();
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await
    }

    /// Asserts that a request on another stream of the connection is still answered: a
    /// WebSocket's frames went through HTTP/2 framing, never raw to the connection.
    pub async fn assert_usable(&mut self) {
        let health = hyper::Request::get(format!("http://{}/health/live", self.authority))
            .version(hyper::Version::HTTP_2)
            .body(Empty::new())
            .unwrap();
        let answer =
            tokio::time::timeout(T, self.sender.send_request(health)).await.expect("an answer").unwrap();
        assert_eq!(answer.status(), 200, "the connection's framing is intact");
    }
}
