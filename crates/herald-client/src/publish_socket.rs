//! The publisher socket (`GET /v1/publish`) from the backend's side: send event frames with a
//! `ref`, read one answer per frame, in order.
//!
//! [`PublishSocket`] does one thing at a time (send, then read the answer) for tests and simple
//! callers; [`PublishSocket::split`] gives a sender and a receiver for pipelining, which is how a
//! token stream should use it: keep sending, read answers as they come.

use crate::ClientError;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use herald_protocol::{Outcome, PublishAnswer, Receipt};
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `ws://host:port/v1/publish` from `http://host:port` (and `https` → `wss`).
pub fn publish_url(base: &str) -> String {
    let ws = crate::ws_url(base);
    format!("{}/v1/publish", ws.strip_suffix("/ws").unwrap_or(&ws))
}

/// One frame to send: `{"ref","event"}` or `{"ref","events"}`, `ref` first (so the server can
/// correlate its answer even when the rest is refused unread).
pub fn frame(reference: &str, events: &[Value]) -> String {
    let reference = Value::from(reference);
    match events {
        [one] => format!(r#"{{"ref":{reference},"event":{one}}}"#),
        many => format!(r#"{{"ref":{reference},"events":{}}}"#, Value::from(many.to_vec())),
    }
}

/// An open publisher socket.
pub struct PublishSocket {
    ws: Ws,
}

impl PublishSocket {
    /// Opens `/v1/publish` on `base` with `api_key`; a refused key is [`ClientError::Refused`]
    /// with the server's 401 body.
    pub async fn connect(base: &str, api_key: &str) -> Result<PublishSocket, ClientError> {
        let mut request = publish_url(base).into_client_request()?;
        let bearer = HeaderValue::from_str(&format!("Bearer {api_key}"))
            .map_err(|_| ClientError::Protocol("the API key is not a valid header value".into()))?;
        request.headers_mut().insert("authorization", bearer);
        // Nagle off: a token is a small frame that must leave now, not wait for the previous
        // one's acknowledgement.
        match tokio_tungstenite::connect_async_with_config(request, None, true).await {
            Ok((ws, _)) => Ok(PublishSocket { ws }),
            Err(tungstenite::Error::Http(response)) => Err(ClientError::Refused {
                status: response.status().as_u16(),
                body: response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Wraps a socket the caller opened (e.g. over a TCP stream with its own buffer sizes).
    pub fn from_stream(ws: Ws) -> PublishSocket {
        PublishSocket { ws }
    }

    /// Sends one text frame as is (malformed ones too, for tests).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        Ok(self.ws.send(Message::text(text.into())).await?)
    }

    /// Sends any WebSocket message (binary, close, …).
    pub async fn send_raw(&mut self, message: Message) -> Result<(), ClientError> {
        Ok(self.ws.send(message).await?)
    }

    /// The next answer (pings skipped); a close frame is [`ClientError::Closed`].
    pub async fn next_answer(&mut self, timeout: Duration) -> Result<PublishAnswer, ClientError> {
        next_answer(&mut self.ws, timeout).await
    }

    /// Publishes `events` (one event, or a batch when more) and waits for the answer: the
    /// receipts, or the server's error as [`ClientError::Rejected`].
    pub async fn publish(&mut self, reference: &str, events: &[Value]) -> Result<Vec<Receipt>, ClientError> {
        self.send_text(frame(reference, events)).await?;
        receipts(self.next_answer(crate::PUBLISH_TIMEOUT).await?)
    }

    /// A sender and a receiver, to keep frames in flight while answers come back.
    pub fn split(self) -> (PublishSender, PublishReceiver) {
        let (sink, stream) = self.ws.split();
        (PublishSender { sink }, PublishReceiver { stream })
    }

    /// Closes politely (1000).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The sending half of a split [`PublishSocket`].
pub struct PublishSender {
    sink: SplitSink<Ws, Message>,
}

impl PublishSender {
    /// Sends one frame now.
    pub async fn send(&mut self, reference: &str, events: &[Value]) -> Result<(), ClientError> {
        Ok(self.sink.send(Message::text(frame(reference, events))).await?)
    }

    /// Queues one frame text without flushing: call [`flush`](Self::flush) after a burst.
    pub async fn feed_text(&mut self, text: String) -> Result<(), ClientError> {
        Ok(self.sink.feed(Message::text(text)).await?)
    }

    /// Writes what was fed.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(self.sink.flush().await?)
    }
}

/// The receiving half of a split [`PublishSocket`].
pub struct PublishReceiver {
    stream: SplitStream<Ws>,
}

impl PublishReceiver {
    /// The next answer, in the order the frames were sent.
    pub async fn next_answer(&mut self, timeout: Duration) -> Result<PublishAnswer, ClientError> {
        next_answer(&mut self.stream, timeout).await
    }
}

/// The receipts of an answer, or its error as [`ClientError::Rejected`].
pub fn receipts(answer: PublishAnswer) -> Result<Vec<Receipt>, ClientError> {
    match answer.outcome {
        Outcome::Receipt(r) => Ok(vec![r]),
        Outcome::Receipts(r) => Ok(r),
        Outcome::Error(e) => Err(ClientError::Rejected { code: e.code, message: e.message }),
    }
}

async fn next_answer<S>(stream: &mut S, timeout: Duration) -> Result<PublishAnswer, ClientError>
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let text = crate::next_text(stream, timeout).await?;
    serde_json::from_str(text.as_str()).map_err(|e| ClientError::Protocol(format!("{e}: {}", text.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token is a frame of a few dozen bytes: with Nagle's algorithm on, it would wait for the
    /// acknowledgement of the previous one before leaving.
    #[tokio::test]
    async fn the_socket_sends_small_frames_without_delay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            tokio_tungstenite::accept_async(stream).await.expect("handshake")
        });
        let socket = PublishSocket::connect(&format!("http://{addr}"), "key").await.expect("connect");
        let MaybeTlsStream::Plain(tcp) = socket.ws.get_ref() else { panic!("a plain TCP socket") };
        assert!(tcp.nodelay().expect("nodelay"), "Nagle's algorithm is on");
        drop(server.await);
    }
}
