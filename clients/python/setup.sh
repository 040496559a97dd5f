#!/usr/bin/env bash
# Creates clients/python/.venv (if missing) and installs herald-client with its test extras into it
# (the adapters' frameworks, pytest, the wheel build tools). Skips the install when pyproject.toml
# has not changed since the last one (.venv/.installed holds its hash), so CI reruns stay quick.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "creating clients/python/.venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
stamp="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat .venv/.installed 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
echo "$stamp" >.venv/.installed
