#!/usr/bin/env bash
# Runs the same `herald bench` workload against Herald and the reference peers in bench/peers/
# (Python: FastAPI + uvicorn + websockets, and plain aiohttp; Node: http + ws), one server at a
# time on 127.0.0.1, in interleaved rounds, and prints one table with the ratio of each peer to
# Herald, the server's CPU per delivered frame split into user and system time.
#
#   bench/compare.sh                       # 3 rounds of 15 s each per server, 50 users × 2 tabs
#   bench/compare.sh 500                   # 500 users × 2 = 1,000 connections
#   ROUNDS=1 DURATION=10s bench/compare.sh 2500
#   SERVERS="herald node" bench/compare.sh
#   LATENCY=1 bench/compare.sh 2500        # fixed 1000 events/s, one per request: compare p99
#   RATE=40000 bench/compare.sh 500        # the usual batches at a fixed 40,000 events/s (open
#                                          # loop): every server at the same load, for p99
#   BASELINE=/tmp/herald-old SERVERS="baseline herald" bench/compare.sh 500
#                                          # an older herald binary, as server `baseline`
#   SERVERS="herald redis" bench/compare.sh # Herald on the Redis engine (REDIS_URL, default local)
#                                          # (bench/redis_engine.py adds redis-server's CPU and commandstats)
#
# It installs what it needs (a venv from requirements.txt, `npm ci` from the committed lockfile,
# a release build of herald), stops everything it started (also on Ctrl-C), and targets only
# 127.0.0.1. Results (one JSON file per run) go to bench/results/<timestamp>/.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-15s}"
SERVERS="${SERVERS:-herald python aiohttp node}"
# Users (each with 2 connections, like a user with two tabs): the first argument, or USERS.
USERS="${1:-${USERS:-50}}"
if ! [[ "$USERS" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: bench/compare.sh [USERS]   (a positive number of users, each with 2 connections)" >&2
  exit 2
fi
# Every event goes to one user (both tabs): 4 publishers, batches of 20, 200-byte payload.
WORKLOAD=(--users "$USERS" --conns-per-user 2 --publishers 4 --batch 20 --payload-bytes 200
  --rate "${RATE:-max}" --duration "$DURATION")
# LATENCY=1: the latency workload instead: a fixed 1000 events/s, one event per request (open loop).
if [[ "${LATENCY:-0}" == 1 ]]; then
  WORKLOAD=(--users "$USERS" --conns-per-user 2 --publishers 4 --batch 1 --payload-bytes 200
    --rate 1000 --duration "$DURATION")
fi
# Each connection is a file descriptor in the server and one in the bench: raise the soft limit
# to the hard one (children inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
OUT="$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "compare: $*" >&2; }

# --- install -----------------------------------------------------------------------------------
install() {
  log "building herald (release)"
  cargo build --release -q -p herald
  if [[ " $SERVERS " == *" python "* || " $SERVERS " == *" aiohttp "* ]]; then
    local venv="$ROOT/bench/peers/python/.venv"
    if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$ROOT/bench/peers/python/requirements.txt" "$venv/.installed"; then
      log "installing the Python peer (venv + pip)"
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q --disable-pip-version-check -r "$ROOT/bench/peers/python/requirements.txt"
      cp "$ROOT/bench/peers/python/requirements.txt" "$venv/.installed"
    fi
  fi
  if [[ " $SERVERS " == *" node "* ]]; then
    if [[ ! -d "$ROOT/bench/peers/node/node_modules" ]]; then
      log "installing the Node peer (npm ci)"
      (cd "$ROOT/bench/peers/node" && npm ci --no-audit --no-fund --silent)
    fi
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

rand_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# Starts server $1 on port $2 in the background; sets SERVER_PID.
start_server() {
  local name="$1" port="$2"
  case "$name" in
    herald | baseline)
      local bin="$ROOT/target/release/herald"
      [[ "$name" == baseline ]] && bin="${BASELINE:?set BASELINE to a herald binary}"
      RUST_LOG="warn,herald_server=info,herald_server::ws=warn,herald_server::api=warn" \
        "$bin" serve --listen "127.0.0.1:$port" \
        --max-connections-per-ip 0 --publish-rate-per-s 0 ${HERALD_ARGS:-} \
        >"$OUT/$name.log" 2>&1 &
      ;;
    redis)
      RUST_LOG="warn" "$ROOT/target/release/herald" serve --listen "127.0.0.1:$port" \
        --max-connections-per-ip 0 --publish-rate-per-s 0 --engine redis \
        --redis-url "${REDIS_URL:-redis://127.0.0.1:6379}" --redis-prefix "bench-$(rand_hex 4)" ${HERALD_ARGS:-} \
        >"$OUT/$name.log" 2>&1 &
      ;;
    python)
      "$ROOT/bench/peers/python/.venv/bin/python" "$ROOT/bench/peers/python/server.py" --port "$port" \
        >"$OUT/$name.log" 2>&1 &
      ;;
    aiohttp)
      "$ROOT/bench/peers/python/.venv/bin/python" "$ROOT/bench/peers/python/aiohttp_server.py" --port "$port" \
        >"$OUT/$name.log" 2>&1 &
      ;;
    node)
      node "$ROOT/bench/peers/node/server.js" --port "$port" >"$OUT/$name.log" 2>&1 &
      ;;
    *) log "unknown server $name"; exit 2 ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      log "$name exited at start:"; cat "$OUT/$name.log" >&2; exit 1
    fi
    sleep 0.2
  done
  log "$name did not become ready"; cat "$OUT/$name.log" >&2; exit 1
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

install
export HERALD_JWT_SECRET HERALD_API_KEY
HERALD_JWT_SECRET="$(rand_hex 32)"
HERALD_API_KEY="$(rand_hex 16)"
log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $USERS users × 2 connections; results in $OUT"

for round in $(seq 1 "$ROUNDS"); do
  for name in $SERVERS; do
    port="$(free_port)"
    start_server "$name" "$port"
    log "round $round/$ROUNDS: $name (pid $SERVER_PID, load $(cut -d' ' -f1 /proc/loadavg))"
    status=0
    "$ROOT/target/release/herald" bench --url "http://127.0.0.1:$port" --server-pid "$SERVER_PID" \
      "${WORKLOAD[@]}" --json >"$OUT/$name.$round.json" 2>"$OUT/$name.$round.err" || status=$?
    if [[ $status -ne 0 ]]; then
      log "$name round $round: herald bench exited $status: $(tail -n 3 "$OUT/$name.$round.err")"
    fi
    stop_server
  done
done

python3 - "$OUT" $SERVERS <<'PY'
import json, statistics, sys, pathlib
out, servers = pathlib.Path(sys.argv[1]), sys.argv[2:]
rows = {}
for name in servers:
    runs = []
    for f in sorted(out.glob(f"{name}.*.json")):
        try:
            runs.append(json.loads(f.read_text()))
        except ValueError:
            pass
    if not runs:
        continue
    med = lambda xs: statistics.median(xs)
    rows[name] = {
        "rounds": len(runs),
        "delivered_per_s": med([r["delivered_per_s"] for r in runs]),
        "p50": med([r["latency_ms"]["p50"] for r in runs]),
        "p99": med([r["latency_ms"]["p99"] for r in runs]),
        "cpu_us": med([r["server_cpu_s"] * 1e6 / max(r["delivered"], 1) for r in runs]),
        "user_us": med([r.get("server_user_s", 0) * 1e6 / max(r["delivered"], 1) for r in runs]),
        "sys_us": med([r.get("server_sys_s", 0) * 1e6 / max(r["delivered"], 1) for r in runs]),
        "client_us": med([r["client_cpu_s"] * 1e6 / max(r["delivered"], 1) for r in runs]),
        "rss": med([r["server_rss_bytes"] for r in runs]) / 2**20,
        "lost": sum(r["lost"] + r["reordered"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
    }
base = rows.get("herald")
print(f"\n{'server':<8} {'rounds':>6} {'delivered/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
      f"{'srv CPU µs/frame':>17} {'user+sys':>12} {'client µs/frame':>16} {'RSS MiB':>8} {'lost+reord':>10} {'errors':>6}  vs herald")
for name, r in rows.items():
    ratio = ""
    if base and name != "herald":
        ratio = (f"{r['delivered_per_s'] / base['delivered_per_s']:.2f}× delivered/s, "
                 f"{r['cpu_us'] / base['cpu_us']:.1f}× CPU/frame")
    print(f"{name:<8} {r['rounds']:>6} {r['delivered_per_s']:>12,.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
          f"{r['cpu_us']:>17.1f} {r['user_us']:>5.1f}+{r['sys_us']:<6.1f} {r['client_us']:>16.1f} {r['rss']:>8.1f} {r['lost']:>10} {r['errors']:>6}  {ratio}")
(out / "table.json").write_text(json.dumps(rows, indent=2))
PY
