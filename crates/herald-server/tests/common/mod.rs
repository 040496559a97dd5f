//! Test harness: the real server on 127.0.0.1:0, real sockets, real HTTP.
#![allow(dead_code)]

pub mod cluster;
pub mod http2;
pub mod servers;

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
    /// The engine, when it is the memory engine (for its memory accounting).
    memory: Option<Arc<MemoryEngine>>,
    /// The engine, whichever it is (to run its sweep now rather than wait for the node's).
    engine: Arc<dyn Engine>,
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
        let config = Self::config(settings);
        let retention = Retention { max_events: config.history_size, ttl: config.history_ttl };
        let memory =
            Arc::new(MemoryEngine::new(retention).with_max_retained_bytes(config.max_retained_bytes));
        Self::serve(config, memory.clone(), Some(memory)).await
    }

    /// Starts a Redis-engine node on the test Redis under `prefix` (nodes sharing a prefix are
    /// one cluster). Fails loudly when Redis is unreachable: these tests never skip.
    pub async fn redis(prefix: &str, settings: Settings) -> TestServer {
        let config = Self::config(Settings {
            engine: Some("redis".into()),
            redis_url: Some(redis_url()),
            redis_prefix: Some(prefix.into()),
            ..settings
        });
        let engine = herald_server::build_engine(&config).await.unwrap_or_else(|e| {
            panic!("redis tests need Redis at {} (HERALD_TEST_REDIS_URL): {e}", redis_url())
        });
        Self::serve(config, engine, None).await
    }

    /// Starts a Redis-engine node with explicit engine settings (e.g. a private Redis).
    pub async fn redis_at(settings: Settings) -> TestServer {
        let config = Self::config(settings);
        let engine = herald_server::build_engine(&config).await.expect("redis reachable");
        Self::serve(config, engine, None).await
    }

    /// Starts a memory-engine server with exactly `config` (no test defaults on top), e.g. one
    /// that verifies tokens with a public key instead of the test secret.
    pub async fn with_config(config: Config) -> TestServer {
        let retention = Retention { max_events: config.history_size, ttl: config.history_ttl };
        let memory =
            Arc::new(MemoryEngine::new(retention).with_max_retained_bytes(config.max_retained_bytes));
        Self::serve(config, memory.clone(), Some(memory)).await
    }

    fn config(settings: Settings) -> Config {
        let base = Settings {
            listen: Some("127.0.0.1:0".into()),
            jwt_secret: Some(herald_server::config::Secret::new(SECRET)),
            api_key: Some(herald_server::config::Secret::new(API_KEY)),
            allowed_origins: Some("*".into()),
            ..Settings::default()
        };
        settings.or(base).validate().expect("valid test config")
    }

    async fn serve(config: Config, engine: Arc<dyn Engine>, memory: Option<Arc<MemoryEngine>>) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn({
            let (shutdown, engine) = (shutdown.clone(), engine.clone());
            async move { herald_server::run_with_engine(config, engine, listener, shutdown).await.unwrap() }
        });
        let publisher = Publisher::new(&url, API_KEY);
        TestServer { url, memory, engine, publisher, shutdown, handle: Some(handle) }
    }

    /// The node's engine.
    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// The memory engine of a server started with [`TestServer::with`].
    pub fn memory(&self) -> &MemoryEngine {
        self.memory.as_deref().expect("a memory-engine server")
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

    /// Starts the drain (as SIGTERM does) without waiting for it; the engine stays inspectable.
    pub fn drain(&self) {
        self.shutdown.cancel();
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

    /// `GET /v1/users/{user}/events` with the API key: the user's retained history.
    pub async fn history(&self, user: &str) -> serde_json::Value {
        self.history_with(user, "").await
    }

    /// [`TestServer::history`] with a query string, e.g. `snapshot=true` (the active runs,
    /// as raw frames with their marks).
    pub async fn history_with(&self, user: &str, query: &str) -> serde_json::Value {
        let url = format!("{}/v1/users/{user}/events?{query}", self.url);
        let response = self.http().get(url).bearer_auth(API_KEY).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The Redis the Redis-engine tests use.
pub fn redis_url() -> String {
    std::env::var("HERALD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A connection to that Redis, for tests that look at (or tamper with) what the engine stored.
pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url()).expect("a valid redis url");
    client.get_multiplexed_async_connection().await.expect("redis reachable")
}

/// A key prefix no other test (or deployment) uses.
pub fn unique_prefix(name: &str) -> String {
    format!("herald-test-{name}-{:016x}", rand::random::<u64>())
}

/// The event names of frames.
pub fn names(events: &[herald_protocol::frame::EventFrame]) -> Vec<String> {
    events.iter().map(|e| e.event.clone()).collect()
}

/// The seqs of frames.
pub fn seqs(events: &[herald_protocol::frame::EventFrame]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// With `history_size` 2: an id is a duplicate while its event is retained, and a new event once
/// the event has been trimmed (retention bounds the idempotency window, as documented).
pub async fn idempotency_follows_retention(server: &TestServer) {
    let post = |id: &str| {
        let body = serde_json::json!({"user_id": "u", "event": "custom", "id": id, "data": {"name": "n"}});
        let publisher = server.publisher.clone();
        async move { publisher.post(&body).await.unwrap().1 }
    };
    for id in ["a", "b", "c"] {
        assert_eq!(post(id).await["duplicate"], false);
    }
    let c = post("c").await;
    assert_eq!((c["duplicate"].as_bool(), c["seq"].as_u64()), (Some(true), Some(3)), "c is retained");
    let a = post("a").await;
    assert_eq!((a["duplicate"].as_bool(), a["seq"].as_u64()), (Some(false), Some(4)), "a was trimmed");
}
