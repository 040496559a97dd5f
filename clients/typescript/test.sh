#!/usr/bin/env bash
# Builds herald-ws (the npm package) and the console, packs and installs herald-ws into a fresh
# project (test/pack.sh), checks the committed console/dist is up to date, then runs
# the client tests and the browser test against the Herald binary ($HERALD_BIN, default
# ../../target/debug/herald). Exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# A relative HERALD_BIN is relative to the caller's directory.
HERALD_BIN="${HERALD_BIN:-$here/../../target/debug/herald}"
if [ -d "$(dirname "$HERALD_BIN")" ]; then
  HERALD_BIN="$(cd "$(dirname "$HERALD_BIN")" && pwd)/$(basename "$HERALD_BIN")"
fi
export HERALD_BIN
cd "$here"
if [ ! -x "$HERALD_BIN" ]; then
  echo "no herald binary at $HERALD_BIN: run cargo build -p herald or set HERALD_BIN" >&2
  exit 1
fi
if [ ! -d node_modules ]; then
  echo "node_modules missing: run ./setup.sh first" >&2
  exit 1
fi

echo "== build herald-ws (tsc)"
npx tsc -p tsconfig.json

echo "== typecheck and build the console; compare with the committed console/dist"
npx tsc -p ../../console/tsconfig.json
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT
node scripts/build-console.mjs "$fresh" >/dev/null
for f in app.js admin.js; do
  if ! cmp -s "$fresh/$f" "../../console/dist/$f"; then
    echo "console/dist/$f is stale: run (cd clients/typescript && npm run build:console) and rebuild herald" >&2
    exit 1
  fi
done

echo "== pack herald-ws, install the tarball in a fresh project, import it, tsc --strict a consumer"
test/pack.sh

echo "== client tests (node:test, herald at $HERALD_BIN)"
node --test test/client.test.mjs test/upstream.test.mjs test/ai-sdk.test.mjs

echo "== typecheck the AI SDK example page (examples/ai-sdk-chat)"
npx tsc -p ../../examples/ai-sdk-chat/tsconfig.json

echo "== browser tests (playwright-core + chromium): the console, the admin page, the AI SDK example page"
node --test test/browser.test.mjs test/admin.test.mjs test/example.test.mjs
