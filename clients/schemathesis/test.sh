#!/usr/bin/env bash
# Fuzzes the real server ($HERALD_BIN, default ../../target/debug/herald) with schemathesis
# against the OpenAPI document it serves at /openapi.json, for a bounded time, and fails on any
# finding: a 5xx, an undocumented status, content type or header, a body that does not match its
# schema, schema-invalid data accepted, or an authenticated route answering without credentials.
#
# SCHEMATHESIS_MAX_TIME (seconds, default 60) bounds the run; extra arguments go to
# `schemathesis run` (e.g. --seed N to replay a run).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/schemathesis ] || ./setup.sh

BIN="${HERALD_BIN:-../../target/debug/herald}"
if [ ! -x "$BIN" ]; then
  echo "Herald binary not found at $BIN: run \`cargo build -p herald\` or set HERALD_BIN" >&2
  exit 1
fi
API_KEY="schemathesis-api-key"
LOG="$(mktemp -t herald-schemathesis.XXXXXX)"

# Known credentials, an ephemeral port, no Origin restrictions (the fuzzer sends none).
env -u HERALD_LISTEN NO_COLOR=1 HERALD_API_KEY="$API_KEY" \
  HERALD_JWT_SECRET="schemathesis-jwt-secret-0123456789" \
  "$BIN" serve --listen 127.0.0.1:0 </dev/null >/dev/null 2>"$LOG" &
SERVER=$!
stop() {
  kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  rm -f "$LOG"
}
trap stop EXIT

ADDR=""
for _ in $(seq 1 100); do
  ADDR="$(grep -oE 'listening on http://[0-9.]+:[0-9]+' "$LOG" | head -n1 | sed 's|listening on http://||' || true)"
  [ -n "$ADDR" ] && break
  if ! kill -0 "$SERVER" 2>/dev/null; then
    echo "herald exited before listening:" >&2
    cat "$LOG" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$ADDR" ]; then
  echo "herald did not report its address within 10 s:" >&2
  cat "$LOG" >&2
  exit 1
fi
echo "fuzzing herald at http://$ADDR for ${SCHEMATHESIS_MAX_TIME:-60} s"

status=0
.venv/bin/schemathesis run "http://$ADDR/openapi.json" \
  -H "Authorization: Bearer $API_KEY" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,ignored_auth \
  --max-time "${SCHEMATHESIS_MAX_TIME:-60}" \
  --request-timeout 10 \
  "$@" || status=$?

if ! kill -0 "$SERVER" 2>/dev/null; then
  echo "herald died during the run:" >&2
  tail -n 50 "$LOG" >&2
  exit 1
fi
if grep -q "panicked" "$LOG"; then
  echo "herald panicked during the run:" >&2
  grep -B2 -A10 "panicked" "$LOG" >&2
  exit 1
fi
exit "$status"
