//! Shared by the binary's tests: run `herald` as a child process, as an operator would.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `herald` with a clean environment (only PATH), so no HERALD_* of the caller leaks in.
pub fn herald() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

/// `HOST:PORT` from the server's `listening on http://HOST:PORT …` log line, if `line` is that one.
pub fn listen_addr(line: &str) -> Option<String> {
    let i = line.find("listening on http://")?;
    Some(line[i + 20..].chars().take_while(|c| !c.is_whitespace()).collect())
}

/// `herald serve` on 127.0.0.1:0 as a child process; killed on drop.
pub struct Serve {
    /// The process (send it signals through its id).
    pub child: Child,
    /// `http://127.0.0.1:PORT`, read from its `listening on` log line.
    pub url: String,
}

impl Serve {
    /// Starts the server with this JWT secret and API key and waits for its address.
    pub fn start(jwt_secret: &str, api_key: &str) -> Serve {
        Self::start_with(jwt_secret, api_key, &[])
    }

    /// [`Serve::start`] with more `herald serve` arguments (`--engine redis`, …).
    pub fn start_with(jwt_secret: &str, api_key: &str, extra: &[&str]) -> Serve {
        let mut child = herald()
            .env("HERALD_JWT_SECRET", jwt_secret)
            .env("HERALD_API_KEY", api_key)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start herald serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listen_addr(&line) {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("server logged its address");
        Serve { child, url: format!("http://{addr}") }
    }

    /// A node of the Redis engine under key prefix `prefix` (nodes with one prefix share logs).
    pub fn redis_node(jwt_secret: &str, api_key: &str, prefix: &str) -> Serve {
        let url = redis_url();
        Self::start_with(
            jwt_secret,
            api_key,
            &["--engine", "redis", "--redis-url", &url, "--redis-prefix", prefix],
        )
    }

    /// Sends SIGTERM (a rolling deploy stopping the node) and waits for the process to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        self.child.wait().expect("wait for herald serve")
    }
}

/// The Redis the tests use (`HERALD_TEST_REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("HERALD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A key prefix no other test run uses.
pub fn unique_prefix(name: &str) -> String {
    format!("herald-test-{name}-{:016x}", rand::random::<u64>())
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
