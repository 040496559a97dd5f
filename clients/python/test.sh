#!/usr/bin/env bash
# Runs the Python client's tests against the real binary ($HERALD_BIN, default ../../target/debug/herald).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || ./setup.sh
exec .venv/bin/python -m pytest -q "$@"
