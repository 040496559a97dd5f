#!/usr/bin/env bash
# Validates Herald's AG-UI bridge against the official AG-UI models, with the real binary
# ($HERALD_BIN, default ../../target/debug/herald).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || ./setup.sh
exec .venv/bin/python -m pytest -q "$@"
