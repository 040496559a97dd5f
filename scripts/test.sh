#!/usr/bin/env bash
# The one test command (README "Test"): every test of every part, against real servers.
# .ci/run installs what is missing (Redis, Chromium, npm and pip packages), then runs this.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Rust: formatting and lints (a warning fails the suite)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== Rust: unit, integration and doc tests"
cargo build --workspace --all-targets
cargo nextest run --workspace --no-fail-fast
cargo test --workspace --doc

echo "== Rust: the Redis-engine suites again, on Valkey (docs/deploy.md)"
./scripts/valkey.sh

echo "== Autobahn WebSocket conformance (docs/conformance.md)"
./scripts/autobahn.sh

export HERALD_BIN="$PWD/target/debug/herald"
for suite in clients/*/test.sh; do
  [ -x "$suite" ] || continue
  echo "== $suite"
  "$suite"
done
