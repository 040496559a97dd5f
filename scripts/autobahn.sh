#!/usr/bin/env bash
# Autobahn WebSocket conformance of Herald's WebSocket layer (docs/conformance.md); part of
# scripts/test.sh.
#
# Runs the example `autobahn_echo` (herald-server's echo fixture `/__echo`: the same accept loop,
# handshake and socket (text frames written directly, the rest through tungstenite), limits and
# protocol-fault closes as /ws; `cargo build --all-targets`
# already builds it) on a free port and drives it with the Autobahn fuzzing client reimplemented by
# PyPI `kosoku` (installed once into a venv, $KOSOKU_VENV, default target/kosoku-venv).
# Usage: scripts/autobahn.sh [kosoku case globs] — default: 1.* to 7.* and 10.* (framing, pings,
# UTF-8, reserved bits, opcodes, fragmentation, closing handshake), which must all pass.
#   HERALD_MAX_MESSAGE_BYTES=16777216 scripts/autobahn.sh '9.*'   # big messages (over the 64 KiB
#                                                                # default they close with 1009)
#   scripts/autobahn.sh '*'                                       # everything (12.*/13.* need
#                                                                # permessage-deflate: unimplemented)
# Exit status 0 when every selected case passes. Reports go to target/autobahn/ (index.json, .html).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${KOSOKU_VENV:-target/kosoku-venv}"
if [ ! -x "$venv/bin/kosoku" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check kosoku==0.1.0
fi

cargo build -q -p herald-server --example autobahn_echo
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/debug/examples/autobahn_echo "127.0.0.1:$port" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

[ "$#" -gt 0 ] || set -- '1.*' '2.*' '3.*' '4.*' '5.*' '6.*' '7.*' '10.*'
args=()
for case in "$@"; do args+=(-i "$case"); done
"$venv/bin/kosoku" -m fuzzingclient -p 2 -o target/autobahn "${args[@]}" "ws://127.0.0.1:$port/__echo"
