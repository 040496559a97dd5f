#!/usr/bin/env bash
# `npm ci` in the current folder, skipped when package-lock.json has not changed since the last
# install (its hash is kept in node_modules/.installed, which git ignores). Used by the client
# suites' setup.sh. --ignore-scripts: nothing here needs an install script.
set -euo pipefail
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
