//! `herald serve`: load the configuration, start logging, serve until SIGINT/SIGTERM.

use anyhow::Context;
use herald_server::config::{Config, Settings};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Arguments of `herald serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML file with settings; its keys are the settings' names (history_size = 1000).
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE", help_heading = "Server")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

/// Serves until a signal arrives, then drains and exits 0.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let config = args.settings.or(file).validate()?;
    init_logging(config.log_json);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
        format!("cannot listen on {}: set another address with --listen or HERALD_LISTEN", config.listen)
    })?;
    // Connect the engine before printing anything a user would act on: a dev banner followed by
    // "Redis unreachable" would hand out a token for a server that never starts.
    let engine = herald_server::build_engine(&config).await?;
    if config.dev {
        print_dev_banner(&config, listener.local_addr()?);
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(signal(shutdown.clone()));
    herald_server::run_with_engine(config, engine, listener, shutdown).await?;
    Ok(())
}

async fn signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    shutdown.cancel();
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log reader that goes away (a closed pipe, a dead collector) must not take the server with
    // it: tracing-subscriber would report the failed write with `eprintln!`, which panics on a
    // closed stderr, in whichever connection task was logging.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_colour())
        .log_internal_errors(false);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Colour only for a person at a terminal: never in a file or a pipe, and never with `NO_COLOR`
/// set (to anything non-empty, as no-color.org asks).
fn use_colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

fn print_dev_banner(config: &Config, addr: std::net::SocketAddr) {
    let user = "dev-user";
    let Some(secret) = config.jwt.secret() else {
        println!("Herald dev mode: any Origin allowed; tokens are verified with the configured public key.");
        return;
    };
    let token = herald_server::auth::jwt::sign_token(secret.expose(), user, Duration::from_secs(24 * 3600));
    let key = config.api_keys[0].expose();
    println!(
        "\
Herald dev mode: random keys, any Origin allowed. Do not use in production.

  JWT for {user} (24h):  {token}
  API key:               {key}
  JWT secret:            {secret}

Connect a client (Python, pip install websockets):
  python3 -c \"import asyncio,websockets;exec('async def m():\\n async with websockets.connect(\\'ws://{addr}/ws\\',additional_headers={{\\'Authorization\\':\\'Bearer {token}\\'}}) as w:\\n  async for f in w: print(f)');asyncio.run(m())\"
or with websocat:
  websocat -H 'Authorization: Bearer {token}' ws://{addr}/ws

Publish an event to {user}:
  curl -s http://{addr}/v1/events -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
    -d '{{\"user_id\":\"{user}\",\"run_id\":\"run-1\",\"event\":\"agent_started\",\"data\":{{}}}}'

Watch it in the browser (connects as {user} with one click, can publish a sample run):
  http://{addr}/console

Validate this server end to end (isolation, resume, auth, run rules):
  herald check --url http://{addr} --api-key {key} --jwt-secret {secret}
",
        secret = secret.expose(),
    );
}
