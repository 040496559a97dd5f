//! `herald`: a thin shell over the `herald-server` library. Parses the command line, runs the
//! subcommand, turns errors into a message and an exit code.

mod cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herald: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
