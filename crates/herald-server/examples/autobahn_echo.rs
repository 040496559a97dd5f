//! Serves Herald's WebSocket echo fixture (`/__echo`) for the Autobahn suite: `scripts/autobahn.sh`.
//!
//! Usage: `autobahn_echo ADDR` (e.g. `127.0.0.1:9001`); `HERALD_MAX_MESSAGE_BYTES` sets the message
//! limit (default 64 KiB, as `herald serve`). Runs until killed.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".into());
    let max =
        std::env::var("HERALD_MAX_MESSAGE_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(64 * 1024);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("echo on ws://{}/__echo", listener.local_addr()?);
    herald_server::ws::echo::serve(listener, max).await
}
