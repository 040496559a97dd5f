//! `herald bench`: load a Herald (or any server speaking the same contract) and report.
//!
//! Works against any server that speaks Herald's contract (JWT in the `Authorization` header,
//! `welcome` … `synced` on connect, `POST /v1/events` with one event or `{"events":[…]}`), not
//! only Herald, so the same workload can be run against the peers in `bench/peers/`. One module
//! per mode ([`load`], [`idle`], [`replay`]); server CPU and memory come from [`stats`] when the
//! bench knows the server's pid ([`SpawnedServer`] or `--server-pid`).
//!
//! This file parses arguments, starts a server with `--spawn`, shows progress and prints the
//! report or the JSON document. Exit codes: 0 when every event reached every socket exactly once
//! and in order with no error, 1 otherwise, 2 for usage errors and an unreachable server.

mod events;
mod idle;
mod load;
mod publish;
mod replay;
mod socket;
mod spawn;
mod stats;
mod tokens;

use anyhow::Context;
use idle::IdleConfig;
use load::{Counters, LoadConfig, LoadReport};
use replay::ReplayConfig;
use spawn::SpawnedServer;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::runtime::Runtime;

/// Arguments of `herald bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Base URL of the server to load, e.g. http://127.0.0.1:7400 (plain http).
    #[arg(long, value_name = "URL", required_unless_present = "spawn", conflicts_with = "spawn")]
    url: Option<String>,
    /// API key the server accepts for POST /v1/events (the first one, when comma-separated).
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// HS256 secret the server verifies client JWTs with.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Start this binary's `herald serve` on 127.0.0.1 with random keys, load it, stop it.
    /// Also reports the server's CPU time and RSS.
    #[arg(long)]
    spawn: bool,
    /// With --spawn: one more argument for `herald serve`, e.g. --server-arg=--engine=redis
    /// (repeat for more).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true, requires = "spawn")]
    server_arg: Vec<String>,
    /// Pid of the server (on this machine), for its CPU time and RSS.
    #[arg(long, value_name = "PID", conflicts_with = "spawn")]
    server_pid: Option<u32>,
    /// Distinct users.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    users: u32,
    /// WebSocket connections per user.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    conns_per_user: u32,
    /// Events per second over all publishers (open loop), e.g. 1000 or 1000/s; `max` publishes
    /// as fast as the server answers.
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    rate: Rate,
    /// How long to publish, e.g. 30s, 1m.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Approximate size of each event's `data` object in bytes.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(32..=1_000_000))]
    payload_bytes: u32,
    /// Events per publish request (1 posts single events; more posts {"events":[…]}).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch: u32,
    /// Concurrent publishers, each with its own HTTP connection and its own share of the users.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    publishers: u32,
    /// How long to wait after publishing for the last frames before counting them lost.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Instead of the load: open N idle authenticated connections (several 127.0.0.x source
    /// addresses when the server is on loopback) and report the server's memory per connection.
    #[arg(long, value_name = "N", conflicts_with = "replay",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    idle: Option<u32>,
    /// With --idle: how long to hold the connections open before reading the server's RSS.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Instead of the load: publish N events to one offline user, then time resuming sockets
    /// (after=0) until `synced`, and report the server's memory per retained event.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    replay: Option<u32>,
    /// With --replay: how many resuming sockets to time.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    replay_rounds: u32,
    /// Instead of the load: stream tokens. `--runs` concurrent runs, each of its own user with
    /// one socket, publish `agent_started`, `--token-rate` `agent_text` events per second (one
    /// event per message) for `--duration`, then `agent_completed`; once per `--transport`.
    /// Reports server CPU per delivered token and publish→receive latency per transport.
    #[arg(long, conflicts_with_all = ["idle", "replay"])]
    token_stream: bool,
    /// With --token-stream: concurrent runs.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    runs: u32,
    /// With --token-stream: `agent_text` events per second per run.
    #[arg(long, default_value_t = 50.0)]
    token_rate: f64,
    /// With --token-stream: how to publish, in order: `http` (one POST per token, keep-alive)
    /// and/or `socket` (one frame per token on the publisher socket, GET /v1/publish).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "http,socket")]
    transport: Vec<tokens::Transport>,
    /// With --token-stream and the socket transport: publisher sockets the runs share.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    publish_sockets: u32,
    /// Print one JSON object instead of the report (and no progress bar).
    #[arg(long)]
    json: bool,
}

/// `--rate`: events per second, or as fast as possible.
#[derive(Debug, Clone, Copy)]
enum Rate {
    Max,
    PerSecond(f64),
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    let n = s.strip_suffix("/s").unwrap_or(s);
    match n.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::PerSecond(r)),
        _ => Err(format!("{s:?} is not a rate: use a number of events per second (1000 or 1000/s) or `max`")),
    }
}

/// Exit code for usage errors and an unreachable server.
const USAGE: u8 = 2;

fn usage(message: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("herald bench: usage error: {message}");
    Ok(ExitCode::from(USAGE))
}

/// Runs the bench; see the module docs for exit codes.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.duration.is_zero() {
        return usage("--duration must be more than 0");
    }
    if let Some(idle) = args.idle {
        // Before the server is spawned, so that it inherits the limit too.
        stats::raise_fd_limit(u64::from(idle) + 1024);
    }
    let target = match Target::of(&args)? {
        Ok(target) => target,
        Err(code) => return Ok(code),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    if let Some(n) = args.idle {
        return idle_mode(&args, n, &target, &runtime);
    }
    if let Some(n) = args.replay {
        return replay_mode(&args, n, &target, &runtime);
    }
    if args.token_stream {
        return tokens_mode(&args, target, &runtime);
    }
    load_mode(&args, target, &runtime)
}

/// The server under load: how to reach it, its keys, and its pid when known.
struct Target {
    url: String,
    api_key: String,
    jwt_secret: String,
    server_pid: Option<u32>,
    /// The server `--spawn` started; dropping it stops the server.
    spawned: Option<SpawnedServer>,
}

impl Target {
    /// The spawned server (`--spawn`), or the one `--url` names with its keys; `Err` carries the
    /// exit code of a usage error, already reported.
    fn of(args: &BenchArgs) -> anyhow::Result<Result<Target, ExitCode>> {
        if args.spawn {
            let exe = std::env::current_exe().context("locating the herald binary")?;
            let history = args.replay.map_or(1000, |n| n.max(1000));
            let mut server_args = vec![
                format!("--history-size={history}"),
                "--max-connections-per-ip=0".to_owned(),
                "--publish-rate-per-s=0".to_owned(),
                format!("--max-connections-per-user={}", args.conns_per_user.max(32)),
            ];
            server_args.extend(args.server_arg.iter().cloned());
            return Ok(match SpawnedServer::start(&exe, &server_args) {
                Ok(s) => Ok(Target {
                    url: s.url.clone(),
                    api_key: s.api_key.clone(),
                    jwt_secret: s.jwt_secret.clone(),
                    server_pid: Some(s.pid()),
                    spawned: Some(s),
                }),
                Err(e) => {
                    eprintln!("herald bench: {e}");
                    Err(ExitCode::from(USAGE))
                }
            });
        }
        let url = args.url.clone().unwrap_or_default().trim_end_matches('/').to_owned();
        if !url.starts_with("http://") || url.len() <= "http://".len() {
            return usage(format!("--url must be http://HOST:PORT, got {url:?}")).map(Err);
        }
        let api_key = args.api_key.as_deref().unwrap_or("").split(',').map(str::trim).find(|k| !k.is_empty());
        let Some(api_key) = api_key else {
            return usage("--api-key (or HERALD_API_KEY) is required with --url").map(Err);
        };
        let Some(jwt_secret) = args.jwt_secret.clone().filter(|s| !s.is_empty()) else {
            return usage("--jwt-secret (or HERALD_JWT_SECRET) is required with --url").map(Err);
        };
        Ok(Ok(Target {
            url,
            api_key: api_key.to_owned(),
            jwt_secret,
            server_pid: args.server_pid,
            spawned: None,
        }))
    }
}

/// `--idle N`: open N idle sockets and report the server's memory per connection.
fn idle_mode(args: &BenchArgs, n: u32, target: &Target, runtime: &Runtime) -> anyhow::Result<ExitCode> {
    let config = IdleConfig {
        url: target.url.clone(),
        jwt_secret: target.jwt_secret.clone(),
        connections: n as usize,
        conns_per_user: args.conns_per_user as usize,
        hold: args.hold,
        server_pid: target.server_pid,
    };
    let report = runtime.block_on(idle::run_idle(&config)).map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("idle connections:   {} opened of {} ({} errors)", report.opened, n, report.errors);
        println!("source addresses:   {}", report.source_addresses);
        println!("time to open all:   {:.2} s", report.open_s);
        if let (Some(b), Some(a), Some(per)) = (
            report.server_rss_before_bytes,
            report.server_rss_after_bytes,
            report.server_rss_per_connection_bytes,
        ) {
            println!("server RSS:         {} → {}", mib(b), mib(a));
            println!("per connection:     {:.1} KiB", per / 1024.0);
        } else {
            println!("server RSS:         unknown (use --spawn or --server-pid)");
        }
        for e in &report.error_samples {
            println!("error: {e}");
        }
    }
    Ok(if report.errors == 0 && report.opened == n as usize { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `--replay N`: retain N events, then time resuming sockets.
fn replay_mode(args: &BenchArgs, n: u32, target: &Target, runtime: &Runtime) -> anyhow::Result<ExitCode> {
    let config = ReplayConfig {
        url: target.url.clone(),
        api_key: target.api_key.clone(),
        jwt_secret: target.jwt_secret.clone(),
        events: n as usize,
        payload_bytes: args.payload_bytes as usize,
        rounds: args.replay_rounds as usize,
        server_pid: target.server_pid,
    };
    let report = runtime.block_on(replay::run_replay(&config)).map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("retained events:    {} (published in {:.2} s)", n, report.publish_s);
        println!("replayed per round: {}", report.events_received);
        let rounds: Vec<String> = report.replay_ms.iter().map(|m| format!("{m:.1}")).collect();
        println!(
            "connect → synced:   median {:.1} ms (rounds: {} ms)",
            report.replay_ms_median,
            rounds.join(", ")
        );
        if let Some(per) = report.server_rss_per_event_bytes {
            println!("server RSS per retained event: {per:.0} bytes");
        }
    }
    Ok(if report.events_received == n as u64 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `--token-stream`: runs streaming tokens, once per transport; one table.
fn tokens_mode(args: &BenchArgs, target: Target, runtime: &Runtime) -> anyhow::Result<ExitCode> {
    if !(args.token_rate.is_finite() && args.token_rate > 0.0) {
        return usage("--token-rate must be a positive number of tokens per second");
    }
    let config = tokens::TokenConfig {
        url: target.url.clone(),
        api_key: target.api_key.clone(),
        jwt_secret: target.jwt_secret.clone(),
        runs: args.runs as usize,
        token_rate: args.token_rate,
        duration: args.duration,
        payload_bytes: args.payload_bytes as usize,
        sockets: args.publish_sockets as usize,
        drain_timeout: args.drain_timeout,
        server_pid: target.server_pid,
    };
    let mut reports = Vec::new();
    for transport in &args.transport {
        reports.push(runtime.block_on(tokens::run_tokens(&config, *transport)).map_err(anyhow::Error::msg)?);
    }
    drop(target.spawned);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        tokens::print_reports(&config, &reports);
    }
    Ok(if reports.iter().all(tokens::TokenReport::ok) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The default mode: publish for `--duration` and count every frame; the server stops (when
/// spawned) before the report is printed.
fn load_mode(args: &BenchArgs, target: Target, runtime: &Runtime) -> anyhow::Result<ExitCode> {
    let config = LoadConfig {
        url: target.url.clone(),
        api_key: target.api_key.clone(),
        jwt_secret: target.jwt_secret.clone(),
        users: args.users as usize,
        conns_per_user: args.conns_per_user as usize,
        rate: match args.rate {
            Rate::Max => None,
            Rate::PerSecond(r) => Some(r),
        },
        duration: args.duration,
        payload_bytes: args.payload_bytes as usize,
        batch: args.batch as usize,
        publishers: args.publishers as usize,
        drain_timeout: args.drain_timeout,
        server_pid: target.server_pid,
    };
    if let Err(e) = runtime.block_on(preflight(&config.url)) {
        eprintln!("herald bench: unreachable server: {e}");
        return Ok(ExitCode::from(USAGE));
    }
    let counters = Arc::new(Counters::default());
    let progress = (!args.json).then(|| progress(counters.clone(), &config));
    let result = runtime.block_on(load::run_load(&config, counters));
    if let Some((bar, stop)) = progress {
        stop.store(true, Ordering::Relaxed);
        bar.finish_and_clear();
    }
    let report = result.map_err(anyhow::Error::msg)?;
    drop(target.spawned);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if report.ok() {
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        eprintln!(
            "herald bench: FAILED: {} lost, {} reordered, {} errors",
            report.lost, report.reordered, report.errors
        );
    }
    Ok(ExitCode::from(1))
}

/// Any HTTP answer from the server is enough: it is up.
async fn preflight(url: &str) -> Result<(), String> {
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string())?;
    client.get(format!("{url}/health/ready")).send().await.map(|_| ()).map_err(|e| e.to_string())
}

fn progress(
    counters: Arc<Counters>,
    config: &LoadConfig,
) -> (indicatif::ProgressBar, Arc<std::sync::atomic::AtomicBool>) {
    let bar = indicatif::ProgressBar::new(config.duration.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed}/{duration} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (b, s, sockets) = (bar.clone(), stop.clone(), config.users as u64 * config.conns_per_user as u64);
    std::thread::spawn(move || {
        let mut started: Option<std::time::Instant> = None;
        let (mut last_delivered, mut last_at) = (0u64, std::time::Instant::now());
        while !s.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let connected = counters.connected.load(Ordering::Relaxed);
            if connected < sockets && started.is_none() {
                b.set_message(format!("opening sockets {connected}/{sockets}"));
                b.tick();
                continue;
            }
            let at = *started.get_or_insert_with(std::time::Instant::now);
            b.set_position(at.elapsed().as_millis() as u64);
            let delivered = counters.delivered.load(Ordering::Relaxed);
            let rate = (delivered - last_delivered) as f64 / last_at.elapsed().as_secs_f64();
            (last_delivered, last_at) = (delivered, std::time::Instant::now());
            b.set_message(format!(
                "published {} delivered {} ({:.0}/s) errors {}",
                counters.published.load(Ordering::Relaxed),
                delivered,
                rate,
                counters.errors.load(Ordering::Relaxed)
            ));
        }
    });
    (bar, stop)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn print_report(r: &LoadReport) {
    let l = &r.latency_ms;
    println!("connections:  {}", r.connections);
    println!("published:    {} events ({:.0}/s)", r.published, r.published_per_s);
    println!("delivered:    {} frames ({:.0}/s over {:.2} s)", r.delivered, r.delivered_per_s, r.elapsed_s);
    println!(
        "latency ms:   p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    println!("lost:         {}   reordered: {}   errors: {}", r.lost, r.reordered, r.errors);
    print!("client CPU:   {:.2} s", r.client_cpu_s);
    if r.delivered > 0 {
        print!(" ({:.1} µs per delivered frame)", r.client_cpu_s * 1e6 / r.delivered as f64);
    }
    println!();
    if let Some(cpu) = r.server_cpu_s {
        print!("server CPU:   {cpu:.2} s");
        if r.delivered > 0 {
            print!(" ({:.1} µs per delivered frame)", cpu * 1e6 / r.delivered as f64);
        }
        if let (Some(user), Some(sys)) = (r.server_user_s, r.server_sys_s) {
            print!(", user {user:.2} s + system {sys:.2} s");
        }
        println!();
    }
    if let Some(rss) = r.server_rss_bytes {
        println!("server RSS:   {}", mib(rss));
    }
    for e in &r.error_samples {
        println!("error: {e}");
    }
}
