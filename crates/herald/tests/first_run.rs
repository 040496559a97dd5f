//! A newcomer's first minutes, on the real binary: the `--dev` banner (printed only once the
//! engine is up, pointing at the console and `herald check`), `/` leading to the console, plain
//! logs when not on a terminal, hints for flags from other servers, and the README walkthrough
//! run command by command.

mod common;

use common::herald;
use herald_client::Connection;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `herald serve --dev` on a free port, with what its banner printed.
struct DevServer {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    /// Banner values by label: `token`, `key`, `secret`; and every banner line, in order.
    values: HashMap<&'static str, String>,
    banner: Vec<String>,
    /// What it logged up to its `listening on` line.
    log: Vec<String>,
    /// Held so its pipes stay drained: a server whose stderr reader is gone fails its log writes.
    _pipes: [mpsc::Receiver<String>; 2],
}

impl DevServer {
    fn start(extra: &[&str]) -> DevServer {
        let mut child = herald()
            .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start herald serve --dev");
        let stderr = lines_of(child.stderr.take().expect("piped"));
        let stdout = lines_of(child.stdout.take().expect("piped"));
        let mut banner = Vec::new();
        let mut values = HashMap::new();
        // The banner ends with the `herald check` example; its values are read on the way.
        loop {
            let line = stdout.recv_timeout(WAIT).expect("the dev banner is printed");
            for (label, key) in
                [("JWT for dev-user (24h):", "token"), ("API key:", "key"), ("JWT secret:", "secret")]
            {
                if let Some(value) = line.trim().strip_prefix(label) {
                    values.insert(key, value.trim().to_owned());
                }
            }
            let done = line.trim_start().starts_with("herald check");
            banner.push(line);
            if done {
                break;
            }
        }
        let mut log = Vec::new();
        let addr = loop {
            let line = stderr.recv_timeout(WAIT).expect("the server logs its address");
            log.push(line.clone());
            if let Some(addr) = common::listen_addr(&line) {
                break addr;
            }
        };
        DevServer { child, addr, values, banner, log, _pipes: [stdout, stderr] }
    }

    fn value(&self, key: &str) -> &str {
        self.values.get(key).unwrap_or_else(|| panic!("banner has no {key}: {:#?}", self.banner))
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines a pipe produces, as they come.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

#[test]
fn dev_banner_waits_for_the_engine() {
    // Port 1 on loopback: nothing listens there, so the engine cannot connect.
    let out = herald()
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--engine", "redis"])
        .args(["--redis-url", "redis://127.0.0.1:1/"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unreachable Redis is fatal");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("JWT for"), "no token is handed out for a server that never started:\n{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis"), "the error names the engine");
}

#[tokio::test]
async fn dev_banner_points_at_the_console_and_check() {
    let server = DevServer::start(&[]);
    let banner = server.banner.join("\n");
    assert!(banner.contains(&format!("http://{}/console", server.addr)), "{banner}");
    assert!(banner.contains(&format!("herald check --url http://{}", server.addr)), "{banner}");
    assert!(banner.contains(server.value("secret")), "the secret `herald check` needs is printed");
}

#[tokio::test]
async fn root_leads_to_the_console_in_dev_and_a_favicon_is_served() {
    let server = DevServer::start(&[]);
    let root = http().get(format!("http://{}/", server.addr)).send().await.unwrap();
    assert_eq!(root.status(), 307);
    assert_eq!(root.headers()["location"], "/console");
    let icon = http().get(format!("http://{}/favicon.ico", server.addr)).send().await.unwrap();
    assert_eq!(icon.status(), 200);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    let page = http().get(format!("http://{}/console", server.addr)).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("/console/favicon.svg"), "the page links its icon");
}

#[tokio::test]
async fn root_is_a_json_404_outside_dev() {
    let serve = common::Serve::start("first-run-secret-0123456789", "k");
    let root = http().get(format!("{}/", serve.url)).send().await.unwrap();
    assert_eq!(root.status(), 404);
    let body: serde_json::Value = root.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[test]
fn logs_carry_no_colour_codes_when_not_on_a_terminal() {
    let server = DevServer::start(&[]);
    let logs = server.log.join("\n");
    assert!(logs.contains("listening on"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escape codes in piped logs:\n{logs}");
}

#[tokio::test]
async fn serving_survives_a_closed_log_pipe() {
    let mut child = herald()
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the server logs its address");
        if let Some(addr) = common::listen_addr(&line) {
            break addr;
        }
    };
    drop(stderr); // the log reader goes away
    let base = format!("http://{addr}");
    let dev: serde_json::Value =
        http().get(format!("{base}/console/dev.json")).send().await.unwrap().json().await.unwrap();
    let token = dev["token"].as_str().unwrap();
    for n in 0..3 {
        // Each open and close is logged: the writes fail, the connections must not.
        let opened = Connection::open(&base, token, None, WAIT).await;
        assert!(opened.is_ok(), "connection {n} after the log pipe closed: {:?}", opened.err());
        opened.unwrap().0.close().await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn port_flag_gets_a_hint_to_use_listen() {
    let out = herald().args(["serve", "--port", "7400"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--listen 127.0.0.1:7400"), "{stderr}");
}

/// The README's walkthrough and validation commands, run as a reader would paste them.
#[tokio::test]
async fn readme_walkthrough_runs_top_to_bottom() {
    let readme = include_str!("../../../README.md");
    let server = DevServer::start(&[]);
    let base = format!("http://{}", server.addr);
    let (mut watcher, _) = Connection::open(&base, server.value("token"), None, WAIT).await.unwrap();

    let blocks = shell_blocks(section(readme, "## 30-second walkthrough"));
    let runnable: Vec<&String> =
        blocks.iter().filter(|b| b.contains("publish ") || b.contains("herald ")).collect();
    assert!(runnable.len() >= 3, "the walkthrough has its publish, rule-break and token blocks");
    let publish_fn = blocks.iter().find(|b| b.contains("publish() {")).expect("the publish helper");
    let helper = publish_fn.lines().next().unwrap();

    let whole_run = run_block(&server, publish_fn);
    let receipts: Vec<serde_json::Value> = whole_run
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> =
        receipts.iter().map(|r| r["seq"].as_u64().unwrap_or_else(|| panic!("{r}"))).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "every publish of the walkthrough is accepted, in order");
    let names: Vec<String> = watcher.events(5, WAIT).await.unwrap().into_iter().map(|e| e.event).collect();
    assert_eq!(
        names,
        ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
    );

    let rule_break = runnable.iter().find(|b| !b.contains("publish() {") && b.contains("publish ")).unwrap();
    let refused = run_block(&server, &format!("{helper}\n{rule_break}"));
    assert!(refused.contains("\"run_state\""), "the rule-break example is refused: {refused}");

    let token_block = runnable.iter().find(|b| b.contains("herald token")).unwrap();
    let token = run_block(&server, token_block);
    assert_eq!(token.trim().split('.').count(), 3, "herald token prints a JWT: {token}");

    let check = shell_blocks(section(readme, "## Validate a deployment"));
    let check = check.iter().find(|b| b.contains("herald check")).expect("the check example");
    let report = run_block(&server, check);
    assert!(report.contains("pass rate: 100%"), "herald check passes against the dev server:\n{report}");
}

/// The text of a `## ` section, up to the next one.
fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme.find(heading).unwrap_or_else(|| panic!("README has {heading}"));
    let rest = &readme[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The bodies of the ```sh blocks of a section.
fn shell_blocks(section: &str) -> Vec<String> {
    section.split("```sh\n").skip(1).map(|b| b[..b.find("```").expect("closed block")].to_owned()).collect()
}

/// Runs a README block with bash as a reader would: `TOKEN`, `KEY` and `SECRET` set from the banner,
/// `herald` on PATH, the documented address pointing at this server. Returns stdout.
fn run_block(server: &DevServer, block: &str) -> String {
    let script = block.replace("127.0.0.1:7400", &server.addr);
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_herald")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env_clear()
        .env("PATH", path)
        .env("TOKEN", server.value("token"))
        .env("KEY", server.value("key"))
        .env("SECRET", server.value("secret"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "README block failed:\n{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
