//! Test harness: the real server on 127.0.0.1:0, real sockets, real HTTP.
#![allow(dead_code)]

use herald_client::{Connection, Opened, Publisher};
use herald_server::config::{Config, Settings};
use herald_server::engine::{Engine, MemoryEngine};
use herald_server::log::Retention;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const API_KEY: &str = "test-api-key";
/// Generous per-frame timeout: a frame that does not come is a failure, not a hang.
pub const T: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub url: String,
    pub engine: Arc<MemoryEngine>,
    pub publisher: Publisher,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with(Settings::default()).await
    }

    /// Starts a server with `settings` on top of the test defaults.
    pub async fn with(settings: Settings) -> TestServer {
        let base = Settings {
            listen: Some("127.0.0.1:0".into()),
            jwt_secret: Some(herald_server::config::Secret::new(SECRET)),
            api_key: Some(herald_server::config::Secret::new(API_KEY)),
            allowed_origins: Some("*".into()),
            ..Settings::default()
        };
        let config: Config = settings.or(base).validate().expect("valid test config");
        let retention = Retention { max_events: config.history_size, ttl: config.history_ttl };
        let engine = Arc::new(MemoryEngine::new(retention));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let dyn_engine: Arc<dyn Engine> = engine.clone();
        let handle = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { herald_server::run_with_engine(config, dyn_engine, listener, shutdown).await.unwrap() }
        });
        let publisher = Publisher::new(&url, API_KEY);
        TestServer { url, engine, publisher, shutdown, handle: Some(handle) }
    }

    pub fn token(&self, user: &str) -> String {
        herald_client::sign_token(SECRET, user, Duration::from_secs(3600))
    }

    /// Connects `user` and reads through `synced`.
    pub async fn open(&self, user: &str) -> (Connection, Opened) {
        Connection::open(&self.url, &self.token(user), None, T).await.expect("connect")
    }

    /// Connects `user` resuming after `after` in `epoch`.
    pub async fn resume(&self, user: &str, after: u64, epoch: &str) -> (Connection, Opened) {
        Connection::open(&self.url, &self.token(user), Some((after, epoch)), T).await.expect("resume")
    }

    /// Drains: stops accepting and closes sockets with 1001; waits until the server returned.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The event names of frames.
pub fn names(events: &[herald_protocol::frame::EventFrame]) -> Vec<String> {
    events.iter().map(|e| e.event.clone()).collect()
}

/// The seqs of frames.
pub fn seqs(events: &[herald_protocol::frame::EventFrame]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}
