#!/usr/bin/env bash
# Installs the official AG-UI TypeScript client (@ag-ui/client, pinned in package-lock.json) into
# clients/agui-ts/node_modules (ignored by git). Skipped when the lock file has not changed.
set -euo pipefail
cd "$(dirname "$0")"
exec ../../scripts/npm-ci-cached.sh
