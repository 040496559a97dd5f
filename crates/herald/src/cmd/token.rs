//! `herald token`: sign a client JWT for testing and scripts.

use anyhow::Context;
use herald_server::config::{Secret, Settings};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `herald token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The user id the token is for (its `sub` claim).
    #[arg(long)]
    sub: String,
    /// How long the token is valid, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// HS256 secret to sign with.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<Secret>,
    /// TOML config file to read `jwt_secret` from.
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Prints the token on stdout.
pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    herald_protocol::UserId::parse(&args.sub).context("--sub")?;
    let file = match &args.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let secret = args.jwt_secret.or(file.jwt_secret).context(
        "no secret to sign with: set HERALD_JWT_SECRET (or --jwt-secret, or jwt_secret in --config)",
    )?;
    println!("{}", herald_server::auth::jwt::sign_token(secret.expose(), &args.sub, args.ttl));
    Ok(ExitCode::SUCCESS)
}
