#!/usr/bin/env bash
# Runs Herald's AG-UI stream through the official TypeScript client (@ag-ui/client) against the
# Herald binary ($HERALD_BIN, default ../../target/debug/herald). Exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
HERALD_BIN="${HERALD_BIN:-$here/../../target/debug/herald}"
if [ -d "$(dirname "$HERALD_BIN")" ]; then
  HERALD_BIN="$(cd "$(dirname "$HERALD_BIN")" && pwd)/$(basename "$HERALD_BIN")"
fi
export HERALD_BIN
cd "$here"
[ -d node_modules/@ag-ui/client ] || ./setup.sh
exec node --test test/
