//! `herald`: a thin shell over the `herald-server` library. Parses the command line, runs the
//! subcommand, turns errors into a message and an exit code.

mod cmd;

/// mimalloc instead of glibc malloc: the server allocates many small, short-lived buffers per
/// event (JSON parsing, frames, receipts); measured ~25% less CPU per delivered frame with a
/// faster allocator (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cmd::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herald: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
