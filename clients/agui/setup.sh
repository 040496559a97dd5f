#!/usr/bin/env bash
# Creates clients/agui/.venv (if missing) with the official AG-UI Python SDK (ag-ui-protocol, whose
# ag_ui.core models are the reference schema), pytest and httpx.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "creating clients/agui/.venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
