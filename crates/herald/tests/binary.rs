//! The `herald` binary as an operator meets it: startup errors that say what to set, `token`,
//! and a SIGTERM drain that closes sockets with 1001 and exits 0.

mod common;

use common::{Serve, herald};
use herald_client::{ClientError, Connection};

use std::process::Command;
use std::time::Duration;

const SECRET: &str = "binary-test-secret-0123456789";

#[test]
fn missing_keys_exit_non_zero_naming_the_variable() {
    let out = herald().args(["serve", "--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HERALD_JWT_SECRET"));
    let out = herald()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HERALD_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HERALD_API_KEY"));
}

#[test]
fn bad_values_exit_non_zero_with_a_clear_message() {
    let base = |args: &[&str]| {
        herald()
            .arg("serve")
            .args(args)
            .env("HERALD_JWT_SECRET", SECRET)
            .env("HERALD_API_KEY", "k")
            .output()
            .unwrap()
    };
    let out = base(&["--listen", "not-an-address"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid listen"));
    let out = base(&["--engine", "postgres"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected `memory` or `redis`"));
    let out = base(&["--history-size", "many"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--history-size"));
}

#[test]
fn config_file_is_read_and_flags_win_over_it() {
    let dir = std::env::temp_dir().join(format!("herald-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("herald.toml");
    std::fs::write(&file, "listen = \"nonsense\"\nhistory_size = 10\n").unwrap();
    let out = herald()
        .args(["serve", "--config", file.to_str().unwrap()])
        .env("HERALD_JWT_SECRET", SECRET)
        .env("HERALD_API_KEY", "k")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid listen \"nonsense\""), "file value used");
    std::fs::write(&file, "histroy_size = 10\n").unwrap();
    let out = herald().args(["serve", "--config", file.to_str().unwrap()]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"), "typo in file is reported");
}

#[test]
fn token_prints_a_jwt_for_the_subject() {
    let out = herald()
        .args(["token", "--sub", "alice", "--ttl", "2h"])
        .env("HERALD_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3);
    let out = herald().args(["token", "--sub", "alice"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HERALD_JWT_SECRET"));
}

#[tokio::test]
async fn sigterm_closes_open_sockets_with_1001_and_exits_zero() {
    let mut serve = Serve::start(SECRET, "k");
    let base = serve.url.clone();
    let token = herald_client::sign_token(SECRET, "u", Duration::from_secs(60));
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(Connection::open(&base, &token, None, Duration::from_secs(10)).await.unwrap().0);
    }
    let status = Command::new("kill").args(["-TERM", &serve.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    for mut conn in conns {
        match conn.next_frame(Duration::from_secs(10)).await {
            Err(ClientError::Closed { code, .. }) => assert_eq!(code, 1001),
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    let exit = tokio::task::spawn_blocking(move || serve.child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
