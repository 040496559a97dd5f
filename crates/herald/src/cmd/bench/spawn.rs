//! `herald bench --spawn`: start this binary's `herald serve` with random keys and stop it after.

use super::events::random_hex;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Herald server this process started (`herald bench --spawn`); killed on drop.
pub struct SpawnedServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The random API key it accepts.
    pub api_key: String,
    /// The random HS256 secret it verifies tokens with.
    pub jwt_secret: String,
}

impl SpawnedServer {
    /// Starts `exe serve` on 127.0.0.1:0 with random keys and `extra` arguments, and waits for
    /// its `listening on http://ADDR` line.
    pub fn start(exe: &std::path::Path, extra: &[String]) -> Result<SpawnedServer, String> {
        let api_key = random_hex(16);
        let jwt_secret = random_hex(32);
        let mut command = Command::new(exe);
        die_with_parent(&mut command);
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("HERALD_API_KEY", &api_key)
            .env("HERALD_JWT_SECRET", &jwt_secret)
            .env("HERALD_LOG_FORMAT", "text")
            // Per-connection log lines would cost the server more than the frames do.
            .env("RUST_LOG", "warn,herald_server=info,herald_server::ws=warn,herald_server::api=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {} serve: {e}", exe.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(at) = line.find("listening on http://") {
                        let addr = line[at + "listening on ".len()..]
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .trim_matches('"')
                            .to_owned();
                        let _ = tx.send(Ok(addr));
                        sent = true;
                    } else {
                        seen.push(line);
                    }
                }
                // Keep draining so the server never blocks on a full pipe.
            }
            if !sent {
                let _ = tx.send(Err(seen.join("\n")));
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(url)) => url,
            Ok(Err(output)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the spawned server exited before listening:\n{output}"));
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the spawned server did not log `listening on` within 30 s".into());
            }
        };
        Ok(SpawnedServer { child, url, api_key, jwt_secret })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks the kernel to kill the server when this process dies, so an interrupted bench never
/// leaves a server behind (Linux; elsewhere the server is only stopped on a normal exit).
#[cfg(target_os = "linux")]
#[allow(unsafe_code, reason = "pre_exec is unsafe; the workspace denies unsafe code elsewhere")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of this process.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Nothing to do without `prctl`: the server is stopped on drop.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}
