#!/usr/bin/env bash
# Builds herald-client and the console, checks the committed console/dist is up to date, then runs
# the client tests and the browser test against the Herald binary ($HERALD_BIN, default
# ../../target/debug/herald). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"
export HERALD_BIN="${HERALD_BIN:-../../target/debug/herald}"
HERALD_BIN="$(cd "$(dirname "$HERALD_BIN")" && pwd)/$(basename "$HERALD_BIN")"
if [ ! -x "$HERALD_BIN" ]; then
  echo "no herald binary at $HERALD_BIN: run cargo build -p herald or set HERALD_BIN" >&2
  exit 1
fi
if [ ! -d node_modules ]; then
  echo "node_modules missing: run ./setup.sh first" >&2
  exit 1
fi

echo "== build herald-client (tsc)"
npx tsc -p tsconfig.json

echo "== typecheck and build the console; compare with the committed console/dist"
npx tsc -p ../../console/tsconfig.json
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT
node scripts/build-console.mjs "$fresh" >/dev/null
for f in index.html app.js style.css; do
  if ! cmp -s "$fresh/$f" "../../console/dist/$f"; then
    echo "console/dist/$f is stale: run (cd clients/typescript && npm run build:console) and rebuild herald" >&2
    exit 1
  fi
done

echo "== client tests (node:test, herald at $HERALD_BIN)"
node --test test/client.test.mjs

echo "== browser test (playwright-core + chromium)"
node --test test/browser.test.mjs
