//! Configuration: every setting from flags, environment and a TOML file, merged then validated.
//!
//! Precedence is flag > env > file > default (`herald serve --help` lists them all). Each setting has three spellings: file
//! key `history_size`, flag `--history-size`, env `HERALD_HISTORY_SIZE`. [`Settings`] is the raw,
//! all-optional layer that clap and the TOML file both fill; [`Settings::validate`] turns the merge
//! into a [`Config`] with concrete values, or a [`ConfigError`] that says what to set.

/// Settings hold secrets; the type lives in the leaf module [`crate::secret`].
pub use crate::secret::Secret;
use crate::secret::random_token;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Declares [`Settings`] once: the struct, with its clap and serde attributes, and
/// [`Settings::or`], which merges two layers field by field. A new setting is one field here.
macro_rules! settings {
    ($(#[$outer:meta])* pub struct Settings { $($(#[$attr:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$outer])*
        pub struct Settings { $($(#[$attr])* pub $field: $ty,)* }

        impl Settings {
            /// Fills every unset field of `self` from `lower` (self wins).
            pub fn or(self, lower: Settings) -> Settings {
                Settings { $($field: Layer::or(self.$field, lower.$field),)* }
            }
        }
    };
}

/// How one field of a higher layer combines with the same field of a lower one.
trait Layer {
    fn or(self, lower: Self) -> Self;
}

impl<T> Layer for Option<T> {
    fn or(self, lower: Self) -> Self {
        Option::or(self, lower)
    }
}

/// Switches (`--dev`, `--redis-cluster`, …) are on when any layer turns them on.
impl Layer for bool {
    fn or(self, lower: Self) -> Self {
        self || lower
    }
}

settings! {
/// The raw settings layer: every field optional, filled by clap (flags and env) or by the file.
#[derive(clap::Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on, host:port. Default 127.0.0.1:7400.
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR", help_heading = "Server")]
    pub listen: Option<String>,

    /// Where user logs live: `memory` (one node) or `redis` (many nodes). Default memory.
    #[arg(long, env = "HERALD_ENGINE", value_name = "ENGINE", help_heading = "Server")]
    pub engine: Option<String>,

    /// Redis URL for `--engine redis`, e.g. redis://127.0.0.1:6379/0.
    #[arg(long, env = "HERALD_REDIS_URL", value_name = "URL", help_heading = "Server")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key, so deployments (and tests) can share one Redis. Default herald.
    #[arg(long, env = "HERALD_REDIS_PREFIX", value_name = "PREFIX", help_heading = "Server")]
    pub redis_prefix: Option<String>,

    /// Redis is a Cluster: --redis-url takes comma-separated seed node URLs, fan-out uses sharded
    /// pub/sub, and a batch that spans users is written with one script per user (a script may
    /// touch one slot only). Off: one script per batch, all users all or nothing.
    #[arg(long, env = "HERALD_REDIS_CLUSTER", help_heading = "Server")]
    #[serde(default)]
    pub redis_cluster: bool,

    /// Replicas that must confirm an append (Redis WAIT) before the publisher gets its receipt,
    /// so acknowledged events survive a failover. Default 0 (no wait).
    #[arg(long, env = "HERALD_REDIS_WAIT_REPLICAS", value_name = "N", help_heading = "Server")]
    pub redis_wait_replicas: Option<u32>,

    /// HS256 secret that verifies client JWTs (and signs `herald token`).
    #[arg(
        long,
        env = "HERALD_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        help_heading = "Auth"
    )]
    pub jwt_secret: Option<Secret>,

    /// PEM file with an RS256 or ES256 public key that verifies client JWTs.
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY", value_name = "FILE", help_heading = "Auth")]
    pub jwt_public_key: Option<PathBuf>,

    /// URL of a JWKS document with the keys that verify client JWTs.
    #[arg(long, env = "HERALD_JWKS_URL", value_name = "URL", help_heading = "Auth")]
    pub jwks_url: Option<String>,

    /// Required `aud` of client JWTs (not checked when unset).
    #[arg(long, env = "HERALD_JWT_AUDIENCE", value_name = "AUD", help_heading = "Auth")]
    pub jwt_audience: Option<String>,

    /// Required `iss` of client JWTs (not checked when unset).
    #[arg(long, env = "HERALD_JWT_ISSUER", value_name = "ISS", help_heading = "Auth")]
    pub jwt_issuer: Option<String>,

    /// API key(s) of publishing backends; comma-separated to rotate keys without downtime.
    #[arg(long, env = "HERALD_API_KEY", value_name = "KEYS", hide_env_values = true, help_heading = "Auth")]
    pub api_key: Option<Secret>,

    /// Token for operators: the `/admin` page and the operator API (`/v1/info`, `/v1/runs`,
    /// `/v1/users/{id}/presence|disconnect`) accept it as well as an API key; it cannot publish.
    #[arg(
        long,
        env = "HERALD_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        help_heading = "Auth"
    )]
    pub admin_token: Option<Secret>,

    /// Seconds a revocation (`revoke_before` of a disconnect) is kept: set it to your longest
    /// token lifetime, since a revoked token outliving it is accepted again. Default 86400.
    #[arg(long, env = "HERALD_REVOCATION_TTL_S", value_name = "SECONDS", help_heading = "Auth")]
    pub revocation_ttl_s: Option<u64>,

    /// Least seconds between two JWKS fetches (a token with an unknown `kid` triggers one).
    /// Default 10.
    #[arg(long, env = "HERALD_JWKS_MIN_REFRESH_S", value_name = "SECONDS", help_heading = "Auth")]
    pub jwks_min_refresh_s: Option<u64>,

    /// Seconds of clock skew tolerated on JWT `exp` and `nbf`. Default 5.
    #[arg(long, env = "HERALD_JWT_LEEWAY_S", value_name = "SECONDS", help_heading = "Auth")]
    pub jwt_leeway_s: Option<u64>,

    /// Browser Origins allowed to open sockets: comma list, or `*`. Unset: same-origin only.
    #[arg(long, env = "HERALD_ALLOWED_ORIGINS", value_name = "ORIGINS", help_heading = "Auth")]
    pub allowed_origins: Option<String>,

    /// Events kept per user for resume and history. Default 1000.
    #[arg(long, env = "HERALD_HISTORY_SIZE", value_name = "N", help_heading = "Delivery")]
    pub history_size: Option<usize>,

    /// Seconds an event is kept for resume and history. Default 900.
    #[arg(long, env = "HERALD_HISTORY_TTL_S", value_name = "SECONDS", help_heading = "Delivery")]
    pub history_ttl_s: Option<u64>,

    /// Bytes a connection may fall behind before it is closed with 4008 (it then resumes).
    /// Default 1048576.
    #[arg(long, env = "HERALD_MAX_PENDING_BYTES", value_name = "BYTES", help_heading = "Delivery")]
    pub max_pending_bytes: Option<usize>,

    /// Bytes of users' logs a node keeps. Memory engine: retained frames, active runs'
    /// snapshots and about 1.4 KiB per user; over it, the least recently active users' logs are
    /// dropped (their clients get `reset`), then their runs' snapshots (drawn `truncated`). Redis
    /// engine: the node's copies of its connected users' logs; over it, the least recently active
    /// copies drop their events and runs (Redis keeps them; they are read back). 0: no cap. Default
    /// 268435456 (256 MiB).
    #[arg(long, env = "HERALD_MAX_RETAINED_BYTES", value_name = "BYTES", help_heading = "Delivery")]
    pub max_retained_bytes: Option<usize>,

    /// Seconds without an event after which a run is reported stalled. Default 120.
    #[arg(long, env = "HERALD_RUN_STALL_S", value_name = "SECONDS", help_heading = "Delivery")]
    pub run_stall_s: Option<u64>,

    /// Milliseconds between server pings; two missed pongs close the connection. Default 25000.
    #[arg(long, env = "HERALD_HEARTBEAT_MS", value_name = "MS", help_heading = "Limits")]
    pub heartbeat_ms: Option<u64>,

    /// Largest client text frame; bigger closes with 1009. Default 65536.
    #[arg(long, env = "HERALD_MAX_MESSAGE_BYTES", value_name = "BYTES", help_heading = "Limits")]
    pub max_message_bytes: Option<usize>,

    /// Open connections per user; one more is closed with 4029. Default 32.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_USER", value_name = "N", help_heading = "Limits")]
    pub max_connections_per_user: Option<usize>,

    /// Largest publish request body; bigger gets 413. Default 1048576.
    #[arg(long, env = "HERALD_MAX_BODY_BYTES", value_name = "BYTES", help_heading = "Limits")]
    pub max_body_bytes: Option<usize>,

    /// Most events in one publish batch; more gets 413. Default 1000.
    #[arg(long, env = "HERALD_MAX_BATCH", value_name = "N", help_heading = "Limits")]
    pub max_batch: Option<usize>,

    /// Open WebSocket connections per client IP address; one more gets 429 before the upgrade.
    /// 0 means no limit. Default 1024.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_IP", value_name = "N", help_heading = "Limits")]
    pub max_connections_per_ip: Option<usize>,

    /// Client messages per second per connection (burst of as many); over it the message gets an
    /// error frame `rate_limited`, and a client that keeps going is closed with 1008. Default 20.
    #[arg(long, env = "HERALD_MAX_CLIENT_MSGS_PER_S", value_name = "N", help_heading = "Limits")]
    pub max_client_msgs_per_s: Option<u32>,

    /// Publish requests per second per API key (token bucket, burst of as many); over it gets
    /// 429 `rate_limited` with Retry-After. 0 means no limit. Default 5000.
    #[arg(long, env = "HERALD_PUBLISH_RATE_PER_S", value_name = "N", help_heading = "Limits")]
    pub publish_rate_per_s: Option<u32>,

    /// Frames read and not yet answered per publisher socket (`/v1/publish`); past it the server
    /// stops reading that socket (TCP backpressure). Default 256.
    #[arg(long, env = "HERALD_PUBLISH_MAX_IN_FLIGHT", value_name = "N", help_heading = "Limits")]
    pub publish_max_in_flight: Option<usize>,

    /// Seconds a client has to send a complete HTTP request head (handshake) on a new or idle
    /// keep-alive connection; slower ones are dropped. Default 10.
    #[arg(long, env = "HERALD_HANDSHAKE_TIMEOUT_S", value_name = "SECONDS", help_heading = "Limits")]
    pub handshake_timeout_s: Option<u64>,

    /// Seconds a user's manager stays in memory with no connection and no activity. Default 60.
    #[arg(long, env = "HERALD_MANAGER_IDLE_S", value_name = "SECONDS", help_heading = "Limits")]
    pub manager_idle_s: Option<u64>,

    /// Backend URL that receives client `message` and `cancel` frames as signed POSTs.
    #[arg(long, env = "HERALD_UPSTREAM_URL", value_name = "URL", help_heading = "Upstream")]
    pub upstream_url: Option<String>,

    /// Secret that signs upstream requests (Herald-Signature: t=…,v1=HMAC-SHA256).
    #[arg(
        long,
        env = "HERALD_UPSTREAM_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        help_heading = "Upstream"
    )]
    pub upstream_secret: Option<Secret>,

    /// Milliseconds an upstream request may take before the client gets an error. Default 5000.
    #[arg(long, env = "HERALD_UPSTREAM_TIMEOUT_MS", value_name = "MS", help_heading = "Upstream")]
    pub upstream_timeout_ms: Option<u64>,

    /// Upstream requests in flight per connection; more get `rate_limited`. Default 8.
    #[arg(long, env = "HERALD_UPSTREAM_MAX_IN_FLIGHT", value_name = "N", help_heading = "Upstream")]
    pub upstream_max_in_flight: Option<usize>,

    /// Also POST connect/disconnect notices (`{"type":"presence",…}`) upstream.
    #[arg(long, env = "HERALD_UPSTREAM_PRESENCE", help_heading = "Upstream")]
    #[serde(default)]
    pub upstream_presence: bool,

    /// Log format: `text` or `json` (one JSON object per line).
    #[arg(long, env = "HERALD_LOG_FORMAT", value_name = "FORMAT", help_heading = "Server")]
    pub log_format: Option<String>,

    /// Development mode: random keys when none are set, any Origin allowed, a ready token printed.
    #[arg(long, env = "HERALD_DEV", help_heading = "Server")]
    #[serde(default)]
    pub dev: bool,
}
}

/// Why the configuration cannot be used. Each message says what to set.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Required settings are missing: all of them, so one run of the server names everything to set.
    #[error("{}", missing_message(.0))]
    Missing(Vec<MissingSetting>),
    /// A setting has a value that cannot be used.
    #[error("invalid {key} {value:?}: {reason}")]
    Invalid {
        /// The file key of the setting.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The config file cannot be read.
    #[error("config file {path}: cannot read it")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not TOML with known setting names.
    #[error("config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error: line, column and the unknown or mistyped key.
        #[source]
        source: toml::de::Error,
    },
}

/// One required setting that is not set, with its three spellings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSetting {
    /// What is missing, in words.
    pub what: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The flag, without dashes.
    pub flag: &'static str,
    /// The file key.
    pub key: &'static str,
    /// True when `--dev` would make a random one (so suggesting `--dev` helps).
    pub dev_makes_it: bool,
}

/// "X is not set: set ENV (or --flag, or `key` in the config file)", one line per setting, and
/// the `--dev` hint only when `--dev` would supply every one of them.
fn missing_message(missing: &[MissingSetting]) -> String {
    let lines: Vec<String> = missing
        .iter()
        .map(|m| {
            format!(
                "{} is not set: set {} (or --{}, or `{}` in the config file)",
                m.what, m.env, m.flag, m.key
            )
        })
        .collect();
    let mut message = match lines.as_slice() {
        [one] => one.clone(),
        _ => format!("{} settings are missing:\n  - {}", lines.len(), lines.join("\n  - ")),
    };
    if missing.iter().all(|m| m.dev_makes_it) {
        message.push_str("\n(or run with --dev to make random ones for local development)");
    }
    message
}

/// Which engine, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineConfig {
    /// In-process logs, single node.
    Memory,
    /// Shared Redis.
    Redis {
        /// Connection URL.
        url: String,
        /// Key prefix.
        prefix: String,
        /// Redis Cluster: seed URLs in `url`, sharded pub/sub, one user per append script.
        cluster: bool,
        /// Replicas that must confirm an append before its receipt (0: none).
        wait_replicas: u32,
    },
}

/// How browser Origins are checked before the upgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Any Origin (`*` or `--dev`).
    Any,
    /// Only these exact origins (`scheme://host[:port]`).
    List(Vec<String>),
    /// Only an Origin whose host:port equals the request's Host.
    SameOrigin,
}

/// The key that verifies client JWTs; its type pins the algorithm.
#[derive(Clone, Debug)]
pub enum JwtKey {
    /// HS256 shared secret (`jwt_secret`).
    Secret(Secret),
    /// RS256 or ES256 public key in this PEM file (`jwt_public_key`); auth reads and checks it
    /// when it builds the verifier.
    PublicKey(PathBuf),
    /// Keys by `kid` from a JWKS URL (`jwks_url`).
    Jwks {
        /// The JWKS document URL.
        url: String,
        /// Least time between two fetches.
        min_refresh: Duration,
    },
}

/// How client JWTs are verified.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// The verification key.
    pub key: JwtKey,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway: Duration,
}

impl JwtConfig {
    /// The HS256 secret, when that is the configured key (it can then also sign tokens).
    pub fn secret(&self) -> Option<&Secret> {
        match &self.key {
            JwtKey::Secret(secret) => Some(secret),
            _ => None,
        }
    }
}

/// Where client `message`/`cancel` frames are forwarded (docs/protocol.md, "Upstream").
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Backend URL.
    pub url: String,
    /// Signing secret.
    pub secret: Secret,
    /// Request timeout.
    pub timeout: Duration,
    /// Requests in flight per connection.
    pub max_in_flight: usize,
    /// Send presence notices.
    pub presence: bool,
}

/// Validated configuration of a Herald server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// The engine.
    pub engine: EngineConfig,
    /// Client JWT verification.
    pub jwt: JwtConfig,
    /// Accepted publisher API keys.
    pub api_keys: Vec<Secret>,
    /// Operator token (admin page and operator API, no publishing).
    pub admin_token: Option<Secret>,
    /// How long a revocation is kept.
    pub revocation_ttl: Duration,
    /// Origin policy for `/ws`.
    pub origins: OriginPolicy,
    /// Events kept per user.
    pub history_size: usize,
    /// How long events are kept.
    pub history_ttl: Duration,
    /// Bytes a connection may fall behind.
    pub max_pending_bytes: usize,
    /// Cap on the bytes users' logs hold on this node (0: none); see `Settings`.
    pub max_retained_bytes: usize,
    /// Silence after which a run is stalled.
    pub run_stall: Duration,
    /// Server ping interval.
    pub heartbeat: Duration,
    /// Largest client frame.
    pub max_message_bytes: usize,
    /// Connections per user.
    pub max_connections_per_user: usize,
    /// Largest publish body.
    pub max_body_bytes: usize,
    /// Largest publish batch.
    pub max_batch: usize,
    /// Idle time before a user's manager is dropped.
    pub manager_idle: Duration,
    /// WebSocket connections per client IP (0: no limit).
    pub max_connections_per_ip: usize,
    /// Client messages per second per connection.
    pub max_client_msgs_per_s: u32,
    /// Publish requests per second per API key (0: no limit).
    pub publish_rate_per_s: u32,
    /// Frames in flight per publisher socket.
    pub publish_max_in_flight: usize,
    /// Time to send a complete request head.
    pub handshake_timeout: Duration,
    /// Where client frames go, if anywhere.
    pub upstream: Option<UpstreamConfig>,
    /// `json` logs.
    pub log_json: bool,
    /// Development mode.
    pub dev: bool,
}

impl Settings {
    /// Reads a TOML file whose keys are the settings' names (`history_size = 500`).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })
    }

    /// Applies defaults and checks every value. In `dev` mode a missing JWT secret or API key is
    /// generated (random, printed by the binary) instead of being an error.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let mut missing = Vec::new();
        let listen_raw = self.listen.unwrap_or_else(|| "127.0.0.1:7400".into());
        let listen = listen_raw.parse().map_err(|_| ConfigError::Invalid {
            key: "listen",
            value: listen_raw.clone(),
            reason: "expected host:port with a numeric IP, e.g. 127.0.0.1:7400 or 0.0.0.0:7400".into(),
        })?;
        let engine = match self.engine.as_deref().unwrap_or("memory") {
            "memory" => EngineConfig::Memory,
            "redis" => EngineConfig::Redis {
                url: self.redis_url.unwrap_or_else(|| {
                    missing.push(MissingSetting {
                        what: "the Redis URL for --engine redis",
                        env: "HERALD_REDIS_URL",
                        flag: "redis-url",
                        key: "redis_url",
                        dev_makes_it: false,
                    });
                    String::new()
                }),
                prefix: self.redis_prefix.unwrap_or_else(|| "herald".into()),
                cluster: self.redis_cluster,
                wait_replicas: self.redis_wait_replicas.unwrap_or(0),
            },
            other => {
                return Err(ConfigError::Invalid {
                    key: "engine",
                    value: other.into(),
                    reason: "expected `memory` or `redis`".into(),
                });
            }
        };
        let jwt_key = Self::jwt_key(
            self.jwt_secret,
            self.jwt_public_key,
            self.jwks_url,
            self.jwks_min_refresh_s,
            self.dev,
            &mut missing,
        )?;
        let api_keys = Self::api_keys(self.api_key, self.dev, &mut missing);
        let origins = Self::origins(self.allowed_origins.as_deref(), self.dev);
        let upstream = Self::upstream(
            self.upstream_url,
            self.upstream_secret,
            self.upstream_timeout_ms,
            self.upstream_max_in_flight,
            self.upstream_presence,
            &mut missing,
        )?;
        let log_json = Self::log_json(self.log_format.as_deref())?;
        if !missing.is_empty() {
            return Err(ConfigError::Missing(missing));
        }
        Ok(Config {
            listen,
            engine,
            jwt: JwtConfig {
                key: jwt_key,
                audience: self.jwt_audience,
                issuer: self.jwt_issuer,
                leeway: Duration::from_secs(self.jwt_leeway_s.unwrap_or(5)),
            },
            api_keys,
            admin_token: Self::admin_token(self.admin_token, self.dev)?,
            revocation_ttl: Duration::from_secs(positive(
                "revocation_ttl_s",
                self.revocation_ttl_s.unwrap_or(86_400),
            )?),
            origins,
            history_size: positive("history_size", self.history_size.unwrap_or(1000))?,
            history_ttl: Duration::from_secs(positive("history_ttl_s", self.history_ttl_s.unwrap_or(900))?),
            max_pending_bytes: positive("max_pending_bytes", self.max_pending_bytes.unwrap_or(1 << 20))?,
            max_retained_bytes: self.max_retained_bytes.unwrap_or(256 << 20),
            run_stall: Duration::from_secs(positive("run_stall_s", self.run_stall_s.unwrap_or(120))?),
            heartbeat: Duration::from_millis(positive("heartbeat_ms", self.heartbeat_ms.unwrap_or(25_000))?),
            max_message_bytes: positive("max_message_bytes", self.max_message_bytes.unwrap_or(64 << 10))?,
            max_connections_per_user: positive(
                "max_connections_per_user",
                self.max_connections_per_user.unwrap_or(32),
            )?,
            max_body_bytes: positive("max_body_bytes", self.max_body_bytes.unwrap_or(1 << 20))?,
            max_batch: positive("max_batch", self.max_batch.unwrap_or(1000))?,
            manager_idle: Duration::from_secs(self.manager_idle_s.unwrap_or(60)),
            max_connections_per_ip: self.max_connections_per_ip.unwrap_or(1024),
            max_client_msgs_per_s: positive(
                "max_client_msgs_per_s",
                self.max_client_msgs_per_s.unwrap_or(20),
            )?,
            publish_rate_per_s: self.publish_rate_per_s.unwrap_or(5000),
            publish_max_in_flight: positive(
                "publish_max_in_flight",
                self.publish_max_in_flight.unwrap_or(256),
            )?,
            handshake_timeout: Duration::from_secs(positive(
                "handshake_timeout_s",
                self.handshake_timeout_s.unwrap_or(10),
            )?),
            upstream,
            log_json,
            dev: self.dev,
        })
    }

    /// The key that verifies client JWTs: exactly one of secret, public key file and JWKS URL
    /// (in `dev`, a random secret when none is set).
    fn jwt_key(
        secret: Option<Secret>,
        public_key: Option<PathBuf>,
        jwks: Option<String>,
        jwks_min_refresh_s: Option<u64>,
        dev: bool,
        missing: &mut Vec<MissingSetting>,
    ) -> Result<JwtKey, ConfigError> {
        let key = match (secret, public_key, jwks) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "jwt_secret",
                    value: "(several JWT keys)".into(),
                    reason: "set exactly one of jwt_secret (HERALD_JWT_SECRET), jwt_public_key \
                             (HERALD_JWT_PUBLIC_KEY) and jwks_url (HERALD_JWKS_URL): the key pins \
                             the algorithm"
                        .into(),
                });
            }
            (None, Some(path), None) => JwtKey::PublicKey(path),
            (None, None, Some(url)) => JwtKey::Jwks {
                url: jwks_url(url)?,
                min_refresh: Duration::from_secs(jwks_min_refresh_s.unwrap_or(10)),
            },
            (secret, None, None) => JwtKey::Secret(match secret {
                Some(s) if s.expose().len() < 16 && !dev => {
                    return Err(ConfigError::Invalid {
                        key: "jwt_secret",
                        value: "***".into(),
                        reason: "an HS256 secret must be at least 16 bytes; use 32 random bytes".into(),
                    });
                }
                Some(s) => s,
                None if dev => Secret::new(random_token(32)),
                None => {
                    missing.push(MissingSetting {
                        what: "the JWT key that verifies client tokens (an HS256 secret, or a public key \
                           with HERALD_JWT_PUBLIC_KEY, or HERALD_JWKS_URL)",
                        env: "HERALD_JWT_SECRET",
                        flag: "jwt-secret",
                        key: "jwt_secret",
                        dev_makes_it: true,
                    });
                    Secret::new(String::new())
                }
            }),
        };
        Ok(key)
    }

    /// The publishers' API keys (comma-separated; in `dev`, a random one when none is set).
    fn api_keys(keys: Option<Secret>, dev: bool, missing: &mut Vec<MissingSetting>) -> Vec<Secret> {
        let api_keys: Vec<Secret> = match keys {
            Some(keys) => {
                keys.expose().split(',').map(str::trim).filter(|k| !k.is_empty()).map(Secret::new).collect()
            }
            None if dev => vec![Secret::new(format!("dev-{}", random_token(24)))],
            None => Vec::new(),
        };
        if api_keys.is_empty() {
            missing.push(MissingSetting {
                what: "the API key that publishing backends use",
                env: "HERALD_API_KEY",
                flag: "api-key",
                key: "api_key",
                dev_makes_it: true,
            });
        }
        api_keys
    }

    /// Which browser Origins may open sockets.
    fn origins(allowed: Option<&str>, dev: bool) -> OriginPolicy {
        match allowed.map(str::trim) {
            _ if dev => OriginPolicy::Any,
            Some("*") => OriginPolicy::Any,
            Some(list) if !list.is_empty() => OriginPolicy::List(
                list.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).collect(),
            ),
            _ => OriginPolicy::SameOrigin,
        }
    }

    /// Where client frames go, if an upstream URL is set (its secret is then required).
    fn upstream(
        url: Option<String>,
        secret: Option<Secret>,
        timeout_ms: Option<u64>,
        max_in_flight: Option<usize>,
        presence: bool,
        missing: &mut Vec<MissingSetting>,
    ) -> Result<Option<UpstreamConfig>, ConfigError> {
        let upstream = match url {
            None => None,
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(ConfigError::Invalid {
                    key: "upstream_url",
                    value: url,
                    reason: "expected an http:// or https:// URL".into(),
                });
            }
            Some(url) => Some(UpstreamConfig {
                url,
                secret: secret.unwrap_or_else(|| {
                    missing.push(MissingSetting {
                        what: "the secret that signs upstream requests",
                        env: "HERALD_UPSTREAM_SECRET",
                        flag: "upstream-secret",
                        key: "upstream_secret",
                        dev_makes_it: false,
                    });
                    Secret::new(String::new())
                }),
                timeout: Duration::from_millis(positive("upstream_timeout_ms", timeout_ms.unwrap_or(5000))?),
                max_in_flight: positive("upstream_max_in_flight", max_in_flight.unwrap_or(8))?,
                presence,
            }),
        };
        Ok(upstream)
    }

    /// `json` or `text` logs.
    /// The operator token, refused when too short to resist guessing (outside `--dev`).
    fn admin_token(token: Option<Secret>, dev: bool) -> Result<Option<Secret>, ConfigError> {
        match token {
            Some(t) if t.expose().len() < 16 && !dev => Err(ConfigError::Invalid {
                key: "admin_token",
                value: "***".into(),
                reason: "an admin token must be at least 16 bytes; use 32 random bytes".into(),
            }),
            other => Ok(other),
        }
    }

    fn log_json(format: Option<&str>) -> Result<bool, ConfigError> {
        let log_json = match format.unwrap_or("text") {
            "text" => false,
            "json" => true,
            other => {
                return Err(ConfigError::Invalid {
                    key: "log_format",
                    value: other.into(),
                    reason: "expected `text` or `json`".into(),
                });
            }
        };
        Ok(log_json)
    }
}

impl Config {
    /// A configuration for tests and embedding: defaults, the given secret and API key. Test
    /// helper (feature `test-util`).
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_tests(jwt_secret: &str, api_key: &str) -> Config {
        Settings {
            listen: Some("127.0.0.1:0".into()),
            jwt_secret: Some(Secret::new(jwt_secret)),
            api_key: Some(Secret::new(api_key)),
            ..Settings::default()
        }
        .validate()
        .expect("test settings are valid")
    }
}

/// Checks a JWKS URL: http, or https when built with the `jwks-https` feature.
fn jwks_url(url: String) -> Result<String, ConfigError> {
    let invalid =
        |reason: &str| ConfigError::Invalid { key: "jwks_url", value: url.clone(), reason: reason.into() };
    if url.starts_with("https://") {
        if cfg!(feature = "jwks-https") {
            return Ok(url);
        }
        return Err(invalid(
            "this build fetches JWKS over plain http only: build herald with --features \
             herald-server/jwks-https, or serve the JWKS over http on a private network",
        ));
    }
    if url.starts_with("http://") {
        return Ok(url);
    }
    Err(invalid("expected an http:// or https:// URL"))
}

fn positive<T: PartialEq + Default + fmt::Display>(key: &'static str, value: T) -> Result<T, ConfigError> {
    if value == T::default() {
        return Err(ConfigError::Invalid {
            key,
            value: value.to_string(),
            reason: "must be greater than 0".into(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Settings {
        Settings {
            jwt_secret: Some(Secret::new("0123456789abcdef0123")),
            api_key: Some(Secret::new("k1, k2")),
            ..Settings::default()
        }
    }

    #[test]
    fn admin_token_and_revocation_ttl_are_checked() {
        let c = base().validate().unwrap();
        assert!(c.admin_token.is_none());
        assert_eq!(c.revocation_ttl, Duration::from_secs(86_400));
        let short = Settings { admin_token: Some(Secret::new("short")), ..base() }.validate().unwrap_err();
        assert!(short.to_string().contains("admin_token"), "{short}");
        let zero = Settings { revocation_ttl_s: Some(0), ..base() }.validate().unwrap_err();
        assert!(zero.to_string().contains("revocation_ttl_s"), "{zero}");
        let file: Settings =
            toml::from_str("admin_token = \"0123456789abcdef-admin\"\nrevocation_ttl_s = 600").unwrap();
        let c = file.or(base()).validate().unwrap();
        assert_eq!(c.admin_token.as_ref().map(Secret::expose), Some("0123456789abcdef-admin"));
        assert_eq!(c.revocation_ttl, Duration::from_secs(600));
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = base().validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7400");
        assert_eq!(c.engine, EngineConfig::Memory);
        assert_eq!(c.history_size, 1000);
        assert_eq!(c.history_ttl, Duration::from_secs(900));
        assert_eq!(c.max_pending_bytes, 1 << 20);
        assert_eq!(c.max_retained_bytes, 256 << 20);
        assert_eq!(c.max_message_bytes, 65536);
        assert_eq!(c.max_connections_per_user, 32);
        assert_eq!(c.heartbeat, Duration::from_millis(25000));
        assert_eq!(c.api_keys.len(), 2);
        assert_eq!(c.origins, OriginPolicy::SameOrigin);
    }

    #[test]
    fn higher_layer_wins() {
        let flags = Settings { history_size: Some(5), ..Settings::default() };
        let file = Settings { history_size: Some(7), history_ttl_s: Some(9), ..base() };
        let c = flags.or(file).validate().unwrap();
        assert_eq!(c.history_size, 5);
        assert_eq!(c.history_ttl, Duration::from_secs(9));
    }

    #[test]
    fn missing_keys_name_the_variable() {
        let e = Settings { api_key: None, ..base() }.validate().unwrap_err().to_string();
        assert!(e.contains("HERALD_API_KEY"), "{e}");
        let e = Settings { jwt_secret: None, ..base() }.validate().unwrap_err().to_string();
        assert!(e.contains("HERALD_JWT_SECRET"), "{e}");
        let dev = Settings { dev: true, ..Settings::default() }.validate().unwrap();
        assert_eq!(dev.api_keys.len(), 1);
    }

    #[test]
    fn every_missing_setting_is_reported_at_once() {
        let e = Settings::default().validate().unwrap_err().to_string();
        assert!(e.contains("HERALD_JWT_SECRET") && e.contains("HERALD_API_KEY"), "{e}");
        assert!(e.contains("run with --dev"), "--dev would supply both: {e}");
    }

    #[test]
    fn dev_is_not_suggested_for_what_dev_cannot_supply() {
        let redis = Settings { engine: Some("redis".into()), dev: true, ..Settings::default() };
        let e = redis.validate().unwrap_err().to_string();
        assert!(e.contains("HERALD_REDIS_URL"), "{e}");
        assert!(!e.contains("--dev"), "--dev was given and supplies no Redis URL: {e}");
        let both = Settings { engine: Some("redis".into()), api_key: None, ..base() };
        let e = both.validate().unwrap_err().to_string();
        assert!(e.contains("HERALD_REDIS_URL") && e.contains("HERALD_API_KEY"), "{e}");
        assert!(!e.contains("--dev"), "{e}");
    }

    #[test]
    fn bad_values_are_explained() {
        let e = Settings { listen: Some("localhost".into()), ..base() }.validate().unwrap_err();
        assert!(e.to_string().contains("invalid listen"), "{e}");
        let e = Settings { engine: Some("postgres".into()), ..base() }.validate().unwrap_err();
        assert!(e.to_string().contains("expected `memory` or `redis`"), "{e}");
        let e = Settings { history_size: Some(0), ..base() }.validate().unwrap_err();
        assert!(e.to_string().contains("history_size"), "{e}");
    }

    #[test]
    fn security_limits_have_documented_defaults() {
        let c = base().validate().unwrap();
        assert_eq!(c.max_connections_per_ip, 1024);
        assert_eq!(c.max_client_msgs_per_s, 20);
        assert_eq!(c.publish_rate_per_s, 5000);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.publish_max_in_flight, 256);
        assert_eq!(c.jwt.leeway, Duration::from_secs(5));
        assert!(c.jwt.secret().is_some());
        let file: Settings = toml::from_str(
            "max_connections_per_ip = 0\npublish_rate_per_s = 7\njwt_leeway_s = 30\nhandshake_timeout_s = 3\n\
             publish_max_in_flight = 9",
        )
        .unwrap();
        let c = file.or(base()).validate().unwrap();
        assert_eq!(c.publish_max_in_flight, 9);
        assert_eq!((c.max_connections_per_ip, c.publish_rate_per_s), (0, 7));
        assert_eq!(c.jwt.leeway, Duration::from_secs(30));
        assert_eq!(c.handshake_timeout, Duration::from_secs(3));
        let e = Settings { max_client_msgs_per_s: Some(0), ..base() }.validate().unwrap_err();
        assert!(e.to_string().contains("max_client_msgs_per_s"), "{e}");
    }

    #[test]
    fn jwks_urls_are_checked() {
        let jwks = |url: &str| Settings { jwt_secret: None, jwks_url: Some(url.into()), ..base() }.validate();
        assert!(matches!(jwks("http://127.0.0.1:9/jwks.json").unwrap().jwt.key, JwtKey::Jwks { .. }));
        assert!(jwks("ftp://x/jwks").unwrap_err().to_string().contains("jwks_url"));
        if !cfg!(feature = "jwks-https") {
            let e = jwks("https://id.example/.well-known/jwks.json").unwrap_err().to_string();
            assert!(e.contains("jwks-https"), "{e}");
        }
    }

    #[test]
    fn debug_masks_secrets() {
        let c = base().validate().unwrap();
        let shown = format!("{c:?} {:?}", base());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(!shown.contains("k1"), "{shown}");
    }

    #[test]
    fn file_keys_are_the_setting_names() {
        let s: Settings = toml::from_str("history_size = 12\nlisten = \"127.0.0.1:9\"").unwrap();
        assert_eq!(s.history_size, Some(12));
        assert!(toml::from_str::<Settings>("histroy_size = 1").is_err());
    }
}
