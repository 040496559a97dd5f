//! How many replicas each Redis master has, checked against `--redis-wait-replicas` when the
//! engine connects.
//!
//! `WAIT N` counts the replicas a master has *now*. A master with fewer than N refuses every
//! publish to its users (503 after a second each) — a deployment that starts that way, or a
//! cluster left with one replica short after a failover, looks healthy but acknowledges nothing.
//! Saying so at startup, with what to do, saves an operator the hunt.
//!
//! Parsing ([`connected_replicas`], [`cluster_replicas`]) is separate from the one query each
//! deployment shape needs (`INFO replication` on one Redis, `CLUSTER NODES` on a cluster). The
//! same `CLUSTER NODES` answer also tells which masters serve slots ([`masters`]): a failover
//! changes them.

use super::conn::Commands;
use redis::RedisResult;

/// One master and the replicas connected to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterReplicas {
    /// How the master is known: its `host:port` in a cluster, or "the Redis server" (the one
    /// behind `--redis-url`).
    pub master: String,
    /// Replicas connected to it now.
    pub replicas: u32,
}

/// `connected_slaves` of an `INFO replication` reply (the field keeps its old name in Redis 7
/// and Valkey 8); `None` when the reply has no such line, e.g. from a replica.
pub fn connected_replicas(info: &str) -> Option<u32> {
    info.lines().find_map(|line| line.trim().strip_prefix("connected_slaves:")?.parse().ok())
}

/// Every master that serves slots in a `CLUSTER NODES` reply, with the replicas that follow it
/// and are not failing. Lines that are not node lines are skipped, never a panic.
///
/// A line is `<id> <ip:port@cport[,hostname]> <flags> <master id or -> <ping-sent> <pong-recv>
/// <config-epoch> <link-state> [<slot> …]`.
pub fn cluster_replicas(nodes: &str) -> Vec<MasterReplicas> {
    struct Node<'a> {
        id: &'a str,
        addr: &'a str,
        flags: Vec<&'a str>,
        master_id: &'a str,
        connected: bool,
        serves_slots: bool,
    }
    let parsed: Vec<Node<'_>> = nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, addr, flags, master_id, _, _, _, link, slots @ ..] = fields.as_slice() else {
                return None;
            };
            Some(Node {
                id,
                addr: addr.split('@').next().unwrap_or(addr),
                flags: flags.split(',').collect(),
                master_id,
                connected: *link == "connected",
                serves_slots: !slots.is_empty(),
            })
        })
        .collect();
    let failing =
        |n: &Node<'_>| n.flags.iter().any(|f| matches!(*f, "fail" | "fail?" | "handshake" | "noaddr"));
    parsed
        .iter()
        .filter(|n| n.flags.contains(&"master") && n.serves_slots && !failing(n))
        .map(|master| MasterReplicas {
            master: master.addr.to_owned(),
            replicas: parsed
                .iter()
                .filter(|n| {
                    n.master_id == master.id
                        && n.flags.iter().any(|f| matches!(*f, "slave" | "replica"))
                        && n.connected
                        && !failing(n)
                })
                .count() as u32,
        })
        .collect()
}

/// The masters with fewer than `wanted` replicas, asking Redis the one question its shape needs.
pub(super) async fn short_of(commands: &Commands, wanted: u32) -> RedisResult<Vec<MasterReplicas>> {
    let masters = if matches!(commands, Commands::Cluster(_)) {
        cluster_masters(commands).await?
    } else {
        let mut con = commands.clone();
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut con).await?;
        vec![MasterReplicas {
            master: "the Redis server".to_owned(),
            replicas: connected_replicas(&info).unwrap_or(0),
        }]
    };
    Ok(masters.into_iter().filter(|m| m.replicas < wanted).collect())
}

/// The addresses of the cluster's masters that serve slots and are not failing, sorted: what a
/// failover changes (see `RedisEngine::masters_changed`).
pub(super) async fn masters(commands: &Commands) -> RedisResult<Vec<String>> {
    let mut masters: Vec<String> = cluster_masters(commands).await?.into_iter().map(|m| m.master).collect();
    masters.sort_unstable();
    Ok(masters)
}

/// Asks the cluster `CLUSTER NODES` and reads its masters serving slots ([`cluster_replicas`]).
async fn cluster_masters(commands: &Commands) -> RedisResult<Vec<MasterReplicas>> {
    let mut con = commands.clone();
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut con).await?;
    Ok(cluster_replicas(&nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_replication_gives_the_connected_replicas() {
        let master =
            "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1,port=7001\r\n";
        assert_eq!(connected_replicas(master), Some(2));
        assert_eq!(connected_replicas("# Replication\r\nrole:slave\r\nmaster_host:h\r\n"), None);
        assert_eq!(connected_replicas("connected_slaves:many\r\n"), None, "malformed: no count");
        assert_eq!(connected_replicas(""), None);
    }

    #[test]
    fn cluster_nodes_count_live_replicas_per_master_serving_slots() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b1 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c1 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383
r1 127.0.0.1:7003@17003 slave a1 0 0 1 connected
r2 127.0.0.1:7004@17004 slave a1 0 0 1 connected
r3 127.0.0.1:7005@17005 slave,fail b1 0 0 2 disconnected
r4 127.0.0.1:7006@17006 replica c1 0 0 3 disconnected
d1 127.0.0.1:7007@17007 master - 0 0 4 connected
e1 127.0.0.1:7008@17008 master,fail - 0 0 5 disconnected 100-200
";
        let counted = cluster_replicas(nodes);
        let view: Vec<(&str, u32)> = counted.iter().map(|m| (m.master.as_str(), m.replicas)).collect();
        // A failed or disconnected replica does not count; a master without slots or failing is
        // not one that appends go to.
        assert_eq!(view, [("127.0.0.1:7000", 2), ("127.0.0.1:7001", 0), ("127.0.0.1:7002", 0)]);
    }

    #[test]
    fn malformed_cluster_nodes_lines_are_skipped() {
        assert_eq!(cluster_replicas(""), []);
        assert_eq!(cluster_replicas("not a node line\n\n\u{0} x"), []);
        let one = cluster_replicas("a 10.0.0.1:6379@16379,host master - 0 0 1 connected 0-16383\ngarbage");
        assert_eq!(one, [MasterReplicas { master: "10.0.0.1:6379".into(), replicas: 0 }]);
    }
}
