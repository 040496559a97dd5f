//! One bench socket: connect (optionally from a chosen source address) and read the opening up
//! to `synced`, with a small read buffer and a parser that looks only at the fields it needs.

use futures_util::StreamExt;
use serde::Deserialize;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Read buffer of each bench socket. tungstenite's default (128 KiB) is allocated per socket;
/// 16 KiB holds dozens of frames, so a busy socket still drains in few reads.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Sockets being opened at the same time.
pub(super) const CONNECT_CONCURRENCY: usize = 128;

/// The fields of a server frame the bench looks at; the rest is skipped by the parser.
#[derive(Deserialize)]
pub(super) struct BenchFrame<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    pub(super) seq: Option<u64>,
    pub(super) data: Option<BenchData>,
}

/// The send timestamp (µs) the bench puts in each event's `data`.
#[derive(Deserialize)]
pub(super) struct BenchData {
    pub(super) t: Option<u64>,
}

pub(super) type Ws = WebSocketStream<TcpStream>;

/// Opens one socket as `token`, optionally from a given source address, and reads `welcome`
/// (and the backlog) up to `synced`. Returns the socket, `synced`'s seq and the backlog's size.
pub(super) async fn open_socket(
    base: &str,
    token: &str,
    query: &str,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<(Ws, u64, u64), String> {
    let fut = async {
        let url = format!("{}{}", herald_client::ws_url(base), query);
        let mut request = url.as_str().into_client_request().map_err(|e| e.to_string())?;
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).expect("ascii"));
        let host = request.uri().host().unwrap_or("127.0.0.1").to_owned();
        let port = request.uri().port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{host} has no IPv4 address"))?;
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let stream = socket.connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES).write_buffer_size(0);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let mut welcomed = false;
        let mut backlog = 0u64;
        loop {
            let text = match ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(f))) => return Err(format!("closed before synced: {f:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("reading the opening: {e}")),
                None => return Err("socket ended before synced".into()),
            };
            let frame: BenchFrame = serde_json::from_str(text.as_str())
                .map_err(|e| format!("bad frame {e}: {}", text.as_str()))?;
            match (&*frame.kind, welcomed) {
                ("welcome", false) => welcomed = true,
                ("event", true) => backlog += 1,
                ("synced", true) => {
                    return Ok((ws, frame.seq.ok_or("synced without seq")?, backlog));
                }
                (kind, _) => return Err(format!("unexpected {kind} frame in the opening")),
            }
        }
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| "timed out opening a socket".to_owned())?
}
