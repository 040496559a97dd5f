#!/usr/bin/env bash
# Packs herald-ws as `npm publish` would (prepack builds dist/), installs the tarball into a fresh
# project outside this tree, imports it from Node (ESM) and type-checks a consumer with
# `tsc --strict` (skipLibCheck, as `tsc --init` sets it: ai's own .d.ts need @types/node). `ai` (the optional peer of herald-ws/ai-sdk) comes from npm's cache when it can.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$here"
tarball="$work/$(npm pack --silent --pack-destination "$work" | tail -n 1)"
listing="$(tar -tzf "$tarball")"
for f in package/dist/index.js package/dist/index.d.ts package/dist/ai-sdk/index.js package/dist/ai-sdk/index.d.ts package/README.md; do
  grep -qx "$f" <<<"$listing" || { echo "pack: $f is missing from $(basename "$tarball")" >&2; exit 1; }
done
if grep -q '^package/test/' <<<"$listing"; then echo "pack: tests are in the tarball" >&2; exit 1; fi
ai_version="$(node -p 'require("./node_modules/ai/package.json").version')"
zod_version="$(node -p 'require("./node_modules/zod/package.json").version')"
mkdir "$work/consumer"
cp test/pack/consumer.ts test/pack/check.mjs test/pack/tsconfig.json "$work/consumer/"
cd "$work/consumer"
echo '{"name":"consumer","private":true,"type":"module"}' >package.json
# First alone: both entry points must load without `ai` (herald-ws/ai-sdk imports only its types).
npm install --silent --prefer-offline --no-audit --no-fund --ignore-scripts "$tarball"
node check.mjs
npm install --silent --prefer-offline --no-audit --no-fund --ignore-scripts "ai@$ai_version" "zod@$zod_version"
node "$here/node_modules/typescript/bin/tsc" -p tsconfig.json
echo "herald-ws type-checks in a consumer (tsc --strict): ok"
