//! The engine's two connections — commands, and RESP3 pub/sub — to one Redis server or to a
//! Redis Cluster, behind one type each so the rest of the engine does not care which.
//!
//! On a cluster the commands connection routes each request to the master owning its keys'
//! slot and follows `MOVED`/`ASK` (refreshing its slot map when the topology changes); fan-out
//! uses sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`), so a user's messages stay on the shard that
//! owns the user's slot instead of being broadcast to every shard.

use parking_lot::RwLock;
use redis::aio::{AsyncPushSender, ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::{
    Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, ProtocolVersion, RedisFuture, RedisResult, Value,
};
use std::sync::Arc;
use std::time::Duration;

/// How long a request to Redis may take before the engine reports itself unavailable.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The engine's TCP settings for every Redis connection. redis-rs leaves Nagle's algorithm on
/// unless told otherwise: with several appends in flight on one multiplexed connection, a
/// request written while the last is unacknowledged would wait for that ACK. Keepalive probes
/// and `TCP_USER_TIMEOUT` make a connection to a host that vanished without a reset (a crash,
/// a partition, a failover to another machine) fail within seconds instead of the kernel's
/// ~15 minutes of retransmissions, so the connection is made again — to the promoted master —
/// and the pub/sub side reports the loss (catch-up follows) instead of staying silent.
pub(super) fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(Duration::from_secs(15))
}

/// `url` as redis-rs connection info with [`tcp_settings`].
fn connection_info(url: &str) -> RedisResult<ConnectionInfo> {
    Ok(url.into_connection_info()?.set_tcp_settings(tcp_settings()))
}

/// The commands connection (multiplexed, cheap to clone).
#[derive(Clone)]
pub(super) enum Commands {
    Single(ConnectionManager),
    Cluster(Renewable),
}

/// The pub/sub connection: its messages arrive on the push sender given to [`connect`].
#[derive(Clone)]
pub(super) enum Subscriber {
    Single(ConnectionManager),
    Cluster(Renewable),
}

/// Connects to `url` — with `cluster`, a comma-separated list of seed nodes — sending pub/sub
/// messages (and disconnections) to `push`.
pub(super) async fn connect(
    url: &str,
    cluster: bool,
    push: impl AsyncPushSender + Clone,
) -> RedisResult<(Commands, Subscriber)> {
    if cluster {
        let seeds: Vec<String> =
            url.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        let builder = move || {
            ClusterClientBuilder::new(seeds.clone())
                .tcp_settings(tcp_settings())
                .connection_timeout(RESPONSE_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(4)
                .min_retry_wait(50)
                .max_retry_wait(500)
        };
        let subscriber_builder = {
            let (builder, push) = (builder.clone(), push.clone());
            move || builder().use_protocol(ProtocolVersion::RESP3).push_sender(push.clone())
        };
        let commands = Renewable::connect(Arc::new(builder)).await?;
        let subscriber = Renewable::connect(Arc::new(subscriber_builder)).await?;
        return Ok((Commands::Cluster(commands), Subscriber::Cluster(subscriber)));
    }
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    let commands =
        ConnectionManager::new_with_config(redis::Client::open(connection_info(url)?)?, config.clone())
            .await?;
    let resp3_url =
        if url.contains('?') { format!("{url}&protocol=resp3") } else { format!("{url}?protocol=resp3") };
    let subscriber = ConnectionManager::new_with_config(
        redis::Client::open(connection_info(&resp3_url)?)?,
        config.set_push_sender(push).set_automatic_resubscription(),
    )
    .await?;
    Ok((Commands::Single(commands), Subscriber::Single(subscriber)))
}

/// A connection to a Redis Cluster that can be made anew from the seeds. redis-rs redraws its
/// map of the cluster only when a node redirects a keyed request: after a failover, a
/// connection whose requests never reach the moved slots keeps the dead master for good —
/// pinging every master then fails forever (the node stays not ready) and the client retries
/// the dead address in a busy loop. [`Renewable::renew_if_stale`] replaces it with a fresh connection,
/// whose map comes from the nodes that answer (see `renew_if_stale`).
#[derive(Clone)]
pub(super) struct Renewable {
    current: Arc<RwLock<ClusterConnection>>,
    builder: Arc<dyn Fn() -> ClusterClientBuilder + Send + Sync>,
}

impl Renewable {
    async fn connect(builder: Arc<dyn Fn() -> ClusterClientBuilder + Send + Sync>) -> RedisResult<Self> {
        let connection = builder().build()?.get_async_connection().await?;
        Ok(Renewable { current: Arc::new(RwLock::new(connection)), builder })
    }

    /// The connection as it is now (a cheap handle).
    pub(super) fn get(&self) -> ClusterConnection {
        self.current.read().clone()
    }

    /// True when every master of the connection's map answers `PING` in time.
    async fn answers(&self) -> bool {
        answers(&mut self.get()).await
    }

    /// When some master of the connection's map does not answer: connects again from the seeds
    /// and puts the new connection in place of the old. True when it did.
    pub(super) async fn renew_if_stale(&self) -> RedisResult<bool> {
        if self.answers().await {
            return Ok(false);
        }
        let connection = (self.builder)().build()?.get_async_connection().await?;
        *self.current.write() = connection;
        Ok(true)
    }
}

impl Commands {
    /// The command the append script publishes with: sharded on a cluster.
    pub(super) fn publish_command(&self) -> &'static str {
        match self {
            Commands::Single(_) => "PUBLISH",
            Commands::Cluster(_) => "SPUBLISH",
        }
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Single(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => {
                let mut connection = c.get();
                Box::pin(async move { connection.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(c) => c.req_packed_commands(cmd, offset, count),
            Commands::Cluster(c) => {
                let mut connection = c.get();
                Box::pin(async move { connection.req_packed_commands(cmd, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(c) => c.get_db(),
            Commands::Cluster(c) => c.get().get_db(),
        }
    }
}

impl Commands {
    /// This connection as it is now, not replaced when [`Renewable::renew_if_stale`] runs: for requests
    /// that must reach the same server connections as the one before (`WAIT` covers only the
    /// writes of its own connection).
    pub(super) fn pinned(&self) -> Commands {
        match self {
            Commands::Single(c) => Commands::Single(c.clone()),
            Commands::Cluster(c) => Commands::Cluster(Renewable {
                current: Arc::new(RwLock::new(c.get())),
                builder: c.builder.clone(),
            }),
        }
    }

    /// True when the connection answers (on a cluster: every master does).
    pub(super) async fn ping(&self) -> bool {
        answers(&mut self.clone()).await
    }

    /// The renewable cluster connection, on a cluster.
    pub(super) fn renewable(&self) -> Option<&Renewable> {
        match self {
            Commands::Cluster(c) => Some(c),
            Commands::Single(_) => None,
        }
    }
}

/// `PING` answered in time (a cluster connection sends it to every master it knows).
async fn answers(connection: &mut (impl ConnectionLike + Send)) -> bool {
    let ping = redis::cmd("PING");
    let reply = tokio::time::timeout(RESPONSE_TIMEOUT, ping.query_async::<Value>(connection)).await;
    matches!(reply, Ok(Ok(_)))
}

impl Subscriber {
    /// Subscribes to a user's channel (sharded on a cluster).
    pub(super) async fn subscribe(&self, channel: &str) -> RedisResult<()> {
        match self.clone() {
            Subscriber::Single(mut c) => c.subscribe(channel).await,
            Subscriber::Cluster(c) => c.get().ssubscribe(channel).await,
        }
    }

    /// Unsubscribes from a user's channel.
    pub(super) async fn unsubscribe(&self, channel: &str) -> RedisResult<()> {
        match self.clone() {
            Subscriber::Single(mut c) => c.unsubscribe(channel).await,
            Subscriber::Cluster(c) => c.get().sunsubscribe(channel).await,
        }
    }

    /// True when the connection answers (on a cluster: every master does).
    pub(super) async fn ping(&self) -> bool {
        match self.clone() {
            Subscriber::Single(mut c) => answers(&mut c).await,
            Subscriber::Cluster(c) => c.answers().await,
        }
    }

    /// The renewable cluster connection, on a cluster. A renewed subscriber holds no
    /// subscriptions: the caller subscribes everything again.
    pub(super) fn renewable(&self) -> Option<&Renewable> {
        match self {
            Subscriber::Cluster(c) => Some(c),
            Subscriber::Single(_) => None,
        }
    }

    /// True on a cluster, where the server drops sharded subscriptions of a slot that moves.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Subscriber::Cluster(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_redis_connection_disables_nagle_and_detects_a_vanished_host() {
        let info = connection_info("redis://127.0.0.1:6379/0").unwrap();
        let tcp = info.tcp_settings();
        assert!(tcp.nodelay(), "Nagle's algorithm off");
        assert!(tcp.keepalive().is_some(), "keepalive probes on");
        assert_eq!(tcp.user_timeout(), Some(Duration::from_secs(15)), "unacknowledged data times out");
        let resp3 = connection_info("redis://127.0.0.1:6379/0?protocol=resp3").unwrap();
        assert!(resp3.tcp_settings().nodelay() && resp3.tcp_settings().keepalive().is_some());
    }
}
