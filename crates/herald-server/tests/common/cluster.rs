//! A throwaway Redis Cluster for tests: masters (and optionally one replica each) from the
//! installed `redis-server` on free ports, joined with `redis-cli --cluster create`, killed and
//! their files removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running local Redis Cluster.
pub struct Cluster {
    /// Ports of every node, masters first.
    pub ports: Vec<u16>,
    masters: usize,
    children: Vec<Option<Child>>,
    dir: PathBuf,
}

/// A free port whose cluster bus port (+10000) is free and valid too.
fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_536 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Starts `masters` masters with `replicas` replicas each and waits until the cluster is ok.
    ///
    /// A port found free can be taken before its redis-server binds it (by another test's
    /// client, from the ephemeral range), and then the cluster cannot form: such a start is
    /// tried again on new ports, up to three times.
    pub fn start(masters: usize, replicas: usize) -> Cluster {
        let mut attempt = 1;
        loop {
            match Self::try_start(masters, replicas) {
                Ok(cluster) => return cluster,
                Err(why) if attempt < 3 => {
                    eprintln!("cluster start {attempt} failed, trying new ports: {why}");
                    attempt += 1;
                }
                Err(why) => panic!("{why}"),
            }
        }
    }

    fn try_start(masters: usize, replicas: usize) -> Result<Cluster, String> {
        let dir = std::env::temp_dir().join(format!("herald-cluster-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let total = masters * (1 + replicas);
        let mut cluster = Cluster { ports: Vec::new(), masters, children: Vec::new(), dir };
        for _ in 0..total {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            cluster.ports.push(port);
            cluster.children.push(Some(child));
        }
        for i in 0..total {
            cluster.wait_listening(i)?;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        if !out.status.success() {
            // `cluster` is dropped here: its servers are killed and its directory removed.
            return Err(format!("cluster create failed: {}", String::from_utf8_lossy(&out.stdout)));
        }
        for &port in &cluster.ports {
            wait_until(Duration::from_secs(20), || {
                cluster.cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        for &port in &cluster.ports[masters..] {
            wait_until(Duration::from_secs(20), || {
                cluster.cli(port, &["INFO", "replication"]).contains("master_link_status:up")
            });
        }
        Ok(cluster)
    }

    /// Waits until node `i` accepts connections. A node that exits first (its port or bus port
    /// was taken after `free_port` found it free) is an `Err`, for `start` to try new ports.
    fn wait_listening(&mut self, i: usize) -> Result<(), String> {
        let port = self.ports[i];
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let child = self.children[i].as_mut().expect("a node not killed yet");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server on port {port} exited ({status}): port taken?"));
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!("redis-server on port {port} not listening after 20 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Settings of a Herald node on this cluster, its keys under `prefix`.
    pub fn settings(&self, prefix: &str) -> herald_server::Settings {
        herald_server::Settings {
            engine: Some("redis".into()),
            redis_url: Some(self.url()),
            redis_prefix: Some(prefix.into()),
            redis_cluster: true,
            ..herald_server::Settings::default()
        }
    }

    /// Seed URLs of the masters, comma-separated (what `--redis-url` takes with `--redis-cluster`).
    pub fn url(&self) -> String {
        self.ports[..self.masters]
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Ports of the current masters (they change after a failover).
    pub fn master_ports(&self) -> Vec<u16> {
        self.live_ports().into_iter().filter(|&p| self.cli(p, &["ROLE"]).starts_with("master")).collect()
    }

    fn live_ports(&self) -> Vec<u16> {
        self.ports.iter().zip(&self.children).filter(|(_, c)| c.is_some()).map(|(p, _)| *p).collect()
    }

    /// Runs `redis-cli -p port args…` and returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The port of the master that owns `slot`.
    pub fn owner(&self, slot: u16) -> u16 {
        self.owner_now(slot).unwrap_or_else(|| panic!("no master owns slot {slot}"))
    }

    /// The master serving `slot`, or `None` while none does (during a failover).
    pub fn owner_now(&self, slot: u16) -> Option<u16> {
        self.master_ports().into_iter().find(|&port| self.owns(port, slot))
    }

    /// True when the node on `port` says it serves `slot`.
    fn owns(&self, port: u16, slot: u16) -> bool {
        let nodes = self.cli(port, &["CLUSTER", "NODES"]);
        let Some(myself) = nodes.lines().find(|l| l.contains("myself")) else { return false };
        myself.split(' ').skip(8).any(|range| match range.split_once('-') {
            Some((a, b)) => {
                a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b)
            }
            None => range.parse::<u16>() == Ok(slot),
        })
    }

    /// The slot of a key or hash tag.
    pub fn slot(&self, key: &str) -> u16 {
        self.cli(self.live_ports()[0], &["CLUSTER", "KEYSLOT", key]).parse().unwrap()
    }

    /// Moves `slot` and its keys from its master to the master on `to` (CLUSTER SETSLOT +
    /// MIGRATE), while clients keep using it.
    pub fn migrate_slot(&self, slot: u16, to: u16) {
        let from = self.owner(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let slot_s = slot.to_string();
        let from_id = self.cli(from, &["CLUSTER", "MYID"]);
        let to_id = self.cli(to, &["CLUSTER", "MYID"]);
        assert_eq!(self.cli(to, &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id]), "OK");
        assert_eq!(self.cli(from, &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id]), "OK");
        loop {
            let keys = self.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1"];
            let to_s = to.to_string();
            args.extend([to_s.as_str(), "", "0", "5000", "KEYS"]);
            args.extend(keys);
            let out = self.cli(from, &args);
            assert!(out == "OK" || out == "NOKEY", "MIGRATE: {out}");
        }
        for port in self.master_ports() {
            assert_eq!(self.cli(port, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]), "OK");
        }
    }

    /// Kills the node on `port` (SIGKILL: no goodbye).
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|&p| p == port).expect("a node of this cluster");
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `ready` every 50 ms until it holds; panics after `limit`.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "condition not met within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
