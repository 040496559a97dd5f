//! The subcommands of `herald`, one file each.

mod bench;
mod check;
mod serve;
mod token;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Herald delivers the events of AI-agent runs (agent_started, tool_executing, …) from the
/// backends that run agents to the browsers of the users who asked for them: to the right user
/// only, in order, without loss, across disconnects, tabs and nodes.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = "\
Quick start:
  herald serve --dev        start with random keys, print a token and example commands
  herald serve --help       every setting, with its flag, environment variable and default

Settings come from flags, then environment (HERALD_*), then a TOML file (--config), then defaults.
Protocol and API: docs/protocol.md";

const SERVE_HELP: &str = "\
Examples:
  herald serve --dev
  HERALD_JWT_SECRET=$(openssl rand -base64 32) HERALD_API_KEY=$(openssl rand -hex 24) \\
    herald serve --listen 0.0.0.0:7400
  herald serve --config herald.toml --engine redis --redis-url redis://10.0.0.5:6379/0

Every setting has three spellings: flag --history-size, environment HERALD_HISTORY_SIZE, and
file key history_size. A flag beats the environment, which beats the file, which beats the default.
SIGINT/SIGTERM drain: new connections are refused, open ones closed with 1001, exit 0.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: WebSocket /ws for clients, HTTP /v1/events for backends.
    #[command(after_help = SERVE_HELP)]
    Serve(Box<serve::ServeArgs>),
    /// Print a client JWT signed with the configured HS256 secret.
    Token(token::TokenArgs),
    /// Validate a live Herald: golden path, isolation, resume, auth, … with a pass rate.
    Check(check::CheckArgs),
    /// Load a server (this one with --spawn, or any speaking the contract): throughput,
    /// publish→deliver latency, loss; or idle memory per connection (--idle), replay (--replay).
    Bench(Box<bench::BenchArgs>),
}

/// Parses the command line; on a usage error, prints clap's message (plus a hint for flags people
/// bring from other servers) and exits with clap's code.
pub fn parse() -> Cli {
    Cli::try_parse().unwrap_or_else(|e| {
        let hint = unknown_flag_hint(&e);
        let _ = e.print();
        if let Some(hint) = hint {
            eprintln!("{hint}");
        }
        std::process::exit(e.exit_code());
    })
}

/// `--port 7400` / `--host 0.0.0.0` do not exist: Herald takes one address. Say how to write it.
fn unknown_flag_hint(e: &clap::Error) -> Option<&'static str> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else { return None };
    let flag = arg.split('=').next().unwrap_or(arg);
    matches!(flag, "--port" | "-p" | "--host" | "--bind" | "--addr" | "--address").then_some(
        "hint: herald serve takes host and port together: --listen 127.0.0.1:7400 \
         (or HERALD_LISTEN); use --listen 0.0.0.0:7400 to accept connections from other machines",
    )
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Token(args) => token::run(args),
        Command::Check(args) => check::run(args),
        Command::Bench(args) => bench::run(*args),
    }
}
