//! `herald check`: run the validation scenarios against a live Herald and report.
//!
//! The scenarios live in [`scenarios`] (what each checks), [`ctx`] (opening sockets, publishing,
//! delivering) and [`verify`] (checking every frame); this file parses arguments, shows progress
//! and prints the table or the JSON document. Exit codes: 0 when the pass rate reaches
//! `--min-pass-rate` and no event reached the wrong user, 1 otherwise, 2 for usage errors and an
//! unreachable URL.

mod ctx;
mod report;
mod scenarios;
mod verify;

use anyhow::Context;
use report::{Report, Scenario, ScenarioResult};
use scenarios::CheckConfig;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `herald check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Base URL of the Herald to check, e.g. http://127.0.0.1:7400 (any engine, any number of
    /// nodes behind it; plain http). Give it once per node (--url http://a:7400 --url
    /// http://b:7400) to also check that the nodes share their logs: events published on one node
    /// reach sockets on another, and a socket resumes on another node.
    #[arg(long, value_name = "URL", required = true)]
    url: Vec<String>,
    /// API key the server accepts for POST /v1/events (the first one, when comma-separated).
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    api_key: String,
    /// HS256 secret the server verifies client JWTs with; the check signs its test users' tokens.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// Test users in golden_path and isolation.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    users: u32,
    /// Runs of five agent events per user.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    runs: u32,
    /// Exit 0 only when at least this share of scenarios passes (0.0 to 1.0).
    #[arg(long, default_value_t = 0.9, value_parser = parse_rate)]
    min_pass_rate: f64,
    /// The longest wait for any one response, handshake or frame, e.g. 10s, 1m.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print one JSON document instead of the table (and no progress).
    #[arg(long)]
    json: bool,
}

/// A node's base URL without its trailing slash, or why it cannot be checked.
fn parse_url(given: &str) -> Result<String, String> {
    let url = given.trim_end_matches('/').to_owned();
    if url.starts_with("https://") {
        return Err(format!(
            "--url {url}: this build speaks plain http and ws only (no TLS); check a node directly at \
             http://HOST:PORT"
        ));
    }
    if !url.starts_with("http://") || url.len() <= "http://".len() {
        return Err(format!("--url must be http://HOST:PORT, got {given:?}"));
    }
    Ok(url)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) { Ok(rate) } else { Err(format!("{rate} is not between 0.0 and 1.0")) }
}

/// Exit code for usage errors and an unreachable URL.
const USAGE: u8 = 2;

/// Runs the check; see the module docs for exit codes.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut urls: Vec<String> = Vec::with_capacity(args.url.len());
    for given in &args.url {
        match parse_url(given) {
            Ok(url) if urls.contains(&url) => {
                eprintln!("herald check: usage error: --url {url} is given twice; give each node once");
                return Ok(ExitCode::from(USAGE));
            }
            Ok(url) => urls.push(url),
            Err(message) => {
                eprintln!("herald check: usage error: {message}");
                return Ok(ExitCode::from(USAGE));
            }
        }
    }
    let Some(api_key) = args.api_key.split(',').map(str::trim).find(|k| !k.is_empty()) else {
        eprintln!("herald check: usage error: --api-key (or HERALD_API_KEY) is empty");
        return Ok(ExitCode::from(USAGE));
    };
    if args.jwt_secret.is_empty() {
        eprintln!("herald check: usage error: --jwt-secret (or HERALD_JWT_SECRET) is empty");
        return Ok(ExitCode::from(USAGE));
    }
    if args.timeout.is_zero() {
        eprintln!("herald check: usage error: --timeout must be more than 0");
        return Ok(ExitCode::from(USAGE));
    }
    let config = CheckConfig {
        urls,
        api_key: api_key.to_owned(),
        jwt_secret: args.jwt_secret.clone(),
        users: args.users as usize,
        runs: args.runs as usize,
        timeout: args.timeout,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    if let Err(e) = runtime.block_on(scenarios::preflight(&config)) {
        eprintln!("herald check: unreachable URL: {e}");
        return Ok(ExitCode::from(USAGE));
    }
    let report = runtime.block_on(run_with_progress(&config, !args.json));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("serializing the report")?);
    } else {
        print_table(&report);
    }
    if report.succeeded(args.min_pass_rate) {
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        if report.isolation_failure {
            eprintln!("herald check: FAILED: an event reached the wrong user (isolation failure)");
        } else {
            eprintln!(
                "herald check: FAILED: pass rate {} is below --min-pass-rate {}",
                percent(report.pass_rate),
                percent(args.min_pass_rate)
            );
        }
    }
    Ok(ExitCode::from(1))
}

async fn run_with_progress(config: &CheckConfig, show: bool) -> Report {
    let scenarios = Scenario::for_nodes(config.urls.len());
    let bar = if show {
        let bar = indicatif::ProgressBar::new(scenarios.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg} ({elapsed})")
                .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut results = Vec::with_capacity(scenarios.len());
    for scenario in scenarios {
        bar.set_message(scenario.name());
        let result = scenarios::run_scenario(config, scenario).await;
        bar.inc(1);
        results.push(result);
    }
    bar.finish_and_clear();
    Report::new(results)
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".to_owned())
}

fn percent(rate: f64) -> String {
    let p = rate * 100.0;
    if (p - p.round()).abs() < 1e-9 { format!("{p:.0}%") } else { format!("{p:.1}%") }
}

fn print_table(report: &Report) {
    let width = report.scenarios.iter().map(|s| s.name.len()).max().unwrap_or(8).max(8);
    println!("{:<width$}  {:<6}  {:>8}  {:>8}  DETAIL", "SCENARIO", "RESULT", "P50 MS", "P99 MS");
    for ScenarioResult { name, passed, detail, p50_ms, p99_ms, .. } in &report.scenarios {
        let result = if *passed { "pass" } else { "FAIL" };
        println!("{name:<width$}  {result:<6}  {:>8}  {:>8}  {detail}", ms(*p50_ms), ms(*p99_ms));
    }
    println!();
    if report.isolation_failure {
        println!(
            "isolation failure: an event reached the wrong user; the check fails whatever the pass rate"
        );
    }
    println!("pass rate: {} ({}/{})", percent(report.pass_rate), report.passed, report.total);
}
