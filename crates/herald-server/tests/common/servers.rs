//! Throwaway Redis processes and a switchable TCP proxy, for tests that stop, restart or replace
//! the Redis a node talks to (the machine's shared Redis must stay up for the other tests).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A free TCP port on 127.0.0.1 (free when asked: start the server on it right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private redis-server on `port`, without persistence, its files (a replica's sync) in a
/// directory of its own; killed and removed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl PrivateRedis {
    /// Starts one on a free port with `extra` arguments (e.g. `--replicaof 127.0.0.1 PORT`) and
    /// waits until it accepts connections. A port found free can be taken before the server binds
    /// it (by another test's client, from the ephemeral range): then it is tried again on a new
    /// port, up to three times.
    pub fn start(extra: &[&str]) -> PrivateRedis {
        let mut attempt = 1;
        loop {
            match Self::try_start(free_port(), extra) {
                Ok(redis) => return redis,
                Err(why) if attempt < 3 => {
                    eprintln!("private redis-server start {attempt} failed, trying a new port: {why}");
                    attempt += 1;
                }
                Err(why) => panic!("{why}"),
            }
        }
    }

    /// Starts one on `port` (a restart where the last one was), panicking if it cannot.
    pub fn start_on(port: u16, extra: &[&str]) -> PrivateRedis {
        Self::try_start(port, extra).unwrap_or_else(|why| panic!("{why}"))
    }

    fn try_start(port: u16, extra: &[&str]) -> Result<PrivateRedis, String> {
        let dir = std::env::temp_dir().join(format!("herald-redis-{port}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        // From here on, dropping `redis` kills the server and removes its directory.
        let mut redis = PrivateRedis { port, child, dir };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = redis.child.try_wait() {
                return Err(format!("private redis-server on port {port} exited ({status}): port taken?"));
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("private redis-server on port {port} not listening after 10 s"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(redis)
    }

    /// A master and one replica of it, once the replica has synced and the master counts it.
    pub async fn with_replica() -> (PrivateRedis, PrivateRedis) {
        let master = PrivateRedis::start(&[]);
        let replica = PrivateRedis::start(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(replica.cli(&["INFO", "replication"]).contains("master_link_status:up")
            && master.cli(&["INFO", "replication"]).contains("connected_slaves:1"))
        {
            assert!(std::time::Instant::now() < deadline, "the replica never synced");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (master, replica)
    }

    /// Kills it (as a crash would) and returns its port.
    pub fn stop(self) -> u16 {
        self.port // dropping kills it
    }

    /// Runs `redis-cli -p port args…` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One address in front of a Redis that can be switched to another, as a managed service's
/// primary endpoint (or a proxy that follows Sentinel) moves to a promoted replica. Switching
/// closes the connections to the old target. Stops when dropped.
pub struct Proxy {
    pub port: u16,
    /// The target port, and the token its connections close on.
    target: Arc<Mutex<(u16, CancellationToken)>>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (target, stop) =
            (Arc::new(Mutex::new((target, CancellationToken::new()))), CancellationToken::new());
        let (current, stopped) = (target.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let mut client = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok((c, _)) => c, Err(_) => continue },
                    _ = stopped.cancelled() => return,
                };
                let (port, closed) = current.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = closed.cancelled() => {}
                    }
                });
            }
        });
        Proxy { port, target, stop }
    }

    /// Points the address at `port`: new connections go there, the open ones are closed.
    pub fn switch(&self, port: u16) {
        let mut target = self.target.lock().unwrap();
        target.1.cancel();
        *target = (port, CancellationToken::new());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.target.lock().unwrap().1.cancel();
    }
}
