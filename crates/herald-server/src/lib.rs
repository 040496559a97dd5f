//! Herald as a library: everything the `herald` binary does, callable from tests and other
//! programs.
//!
//! [`run`] serves a [`config::Config`] on a bound listener until a shutdown token is cancelled,
//! then drains: new connections and publishes are refused, open sockets are closed with 1001.
//!
//! Where things live: [`config`] (settings), [`auth`] (who is calling), [`limits`] (per-IP,
//! per-connection and per-key rates), [`registry`] (per-user managers), [`engine`] (where logs
//! live: memory or Redis), [`log`] (the per-user log and cursors), [`frame`] (an event's frame
//! as it goes on the wire), [`ws`] (the socket endpoint and connection loop), [`stream`] (one
//! stream session shared by the WebSocket and the AG-UI SSE stream), [`upstream`] (client frames
//! to the backend), [`runs`] (stalled-run detection), [`api`] (HTTP routes, the AG-UI bridge and
//! the OpenAPI document), [`console`] (the embedded web console), [`admin`] (the embedded admin
//! page), [`node`] (this node among the others: its report, its users' presence, disconnect
//! orders), [`rates`] (recent rates for operators), [`serve`] (the accept loop), [`tcp`] (a
//! connection's stream shared by hyper and its WebSocket, and the tap that writes to it),
//! [`metrics`], [`gate`] (a future polled only once it asked to be woken).

pub(crate) mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub(crate) mod console;
pub mod engine;
pub mod frame;
pub(crate) mod gate;
pub(crate) mod limits;
pub mod log;
pub(crate) mod metrics;
pub mod node;
pub(crate) mod rates;
pub mod registry;
pub(crate) mod runs;
pub mod secret;
pub(crate) mod serve;
pub mod stream;
pub(crate) mod tcp;
pub mod upstream;
pub mod ws;

use auth::Authenticator;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use config::{Config, EngineConfig};
use engine::{Engine, MemoryEngine, RedisEngine};
use log::Retention;
use registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use config::Settings;

/// How often idle managers and expired events are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How long a drain waits to remove the presence records of the sockets it closed.
const PRESENCE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a drain waits for open sockets to take their close frames.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listener failed.
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The configured engine cannot be used.
    #[error("engine: {0}")]
    Engine(String),
    /// The JWT public key file (`jwt_public_key`) cannot be used.
    #[error("invalid jwt_public_key")]
    Key(#[from] auth::jwt::KeyError),
}

/// Shared state of one server: what every handler and connection needs.
#[derive(Debug)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Credential checks.
    pub auth: Authenticator,
    /// Per-user managers.
    pub registry: Registry,
    /// Where logs live.
    pub engine: Arc<dyn Engine>,
    /// Cancelled when the server drains.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks so a drain can wait for their close frames.
    pub tracker: TaskTracker,
    /// Per-IP, per-connection and per-API-key limits.
    pub limits: limits::Limits,
    /// Where client `message`/`cancel` frames go, when configured.
    pub upstream: Option<upstream::Upstream>,
    /// This node's identity among the others.
    pub node: node::Node,
    draining: AtomicBool,
}

impl AppState {
    /// True once the drain started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Builds (and for Redis, connects) the engine named by the configuration.
pub async fn build_engine(config: &Config) -> Result<Arc<dyn Engine>, ServerError> {
    let retention = Retention { max_events: config.history_size, ttl: config.history_ttl };
    match &config.engine {
        EngineConfig::Memory => {
            Ok(Arc::new(MemoryEngine::new(retention).with_max_retained_bytes(config.max_retained_bytes)))
        }
        EngineConfig::Redis { url, prefix, cluster, wait_replicas } => {
            let options = engine::redis::RedisOptions {
                url: url.clone(),
                prefix: prefix.clone(),
                cluster: *cluster,
                wait_replicas: *wait_replicas,
                max_local_bytes: config.max_retained_bytes,
            };
            let engine = RedisEngine::connect_with(&options, retention).await.map_err(|e| {
                ServerError::Engine(format!(
                    "{e}; check --redis-url (HERALD_REDIS_URL) and that Redis is running"
                ))
            })?;
            Ok(engine)
        }
    }
}

/// The router with every route, over `state`: the documented API ([`api::routes`]), then the
/// pages outside it (the console, `/admin`) and the JSON 404/405 answers.
pub fn router(state: Arc<AppState>) -> Router {
    metrics::install();
    Router::from(api::routes::routes())
        .merge(console::routes())
        .merge(admin::routes())
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

/// Serves `config` on `listener` until `shutdown` is cancelled, then drains and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let engine = build_engine(&config).await?;
    run_with_engine(config, engine, listener, shutdown).await
}

/// Like [`run`], with an engine built by the caller (tests use this to inspect the engine).
pub async fn run_with_engine(
    config: Config,
    engine: Arc<dyn Engine>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let presence = Arc::new(node::PresenceChanges::default());
    let state = Arc::new(AppState {
        auth: Authenticator::new(&config)?,
        limits: limits::Limits::new(&config),
        upstream: config.upstream.clone().map(upstream::Upstream::new),
        registry: Registry::new(engine.clone(), config.manager_idle, config.max_connections_per_user)
            .with_presence_changes(presence.clone()),
        node: node::Node::new(),
        engine,
        config: Arc::new(config),
        shutdown: shutdown.child_token(),
        tracker: TaskTracker::new(),
        draining: AtomicBool::new(false),
    });
    let addr = listener.local_addr()?;
    info!(engine = state.engine.name(), "listening on http://{addr}");

    let sweeper = tokio::spawn(sweep(state.clone()));
    let monitor =
        tokio::spawn(runs::monitor(state.engine.clone(), state.config.run_stall, state.shutdown.clone()));
    let sockets_closed = CancellationToken::new();
    let node_task = tokio::spawn(node::run(state.clone(), presence, sockets_closed.clone()));
    let app = router(state.clone());
    let drain_state = state.clone();
    state.auth.warm_up();
    let limits = state.clone();
    let admit = move |peer: std::net::SocketAddr| limits.limits.accept_ip(peer.ip());
    serve::serve(listener, app, state.config.handshake_timeout, admit, async move {
        shutdown.cancelled().await;
        drain_state.draining.store(true, Ordering::Release);
        info!("draining: refusing new connections, closing open ones with 1001");
        drain_state.shutdown.cancel();
    })
    .await?;
    state.tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, state.tracker.wait()).await.is_err() {
        tracing::warn!("drain timed out with {} connections still closing", state.tracker.len());
    }
    sweeper.abort();
    monitor.abort();
    // The closes queued presence changes: record them, for as long as the engine answers.
    sockets_closed.cancel();
    if tokio::time::timeout(PRESENCE_FLUSH_TIMEOUT, node_task).await.is_err() {
        tracing::warn!("presence records of the closed sockets not all removed; they expire in a day");
    }
    info!("stopped");
    Ok(())
}

async fn sweep(state: Arc<AppState>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        // A scan of every user and manager: on a blocking thread, so no worker that drives
        // connections stops for it (at 5,000 connections it held deliveries back by milliseconds).
        let state = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            state.registry.evict_idle(Instant::now());
            state.engine.sweep();
        })
        .await;
    }
}
