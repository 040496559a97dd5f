#!/usr/bin/env bash
# Installs the official AG-UI TypeScript client (@ag-ui/client, pinned in package-lock.json) into
# clients/agui-ts/node_modules (ignored by git). Skipped when the lock file has not changed.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null; then
  echo "npm is missing: install Node.js 18 or newer" >&2
  exit 1
fi
stamp="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat node_modules/.installed 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund
echo "$stamp" >node_modules/.installed
