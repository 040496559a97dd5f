#!/usr/bin/env bash
# Creates clients/schemathesis/.venv (if missing) with schemathesis, which fuzzes the live server
# against the OpenAPI document it serves at /openapi.json.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "creating clients/schemathesis/.venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
