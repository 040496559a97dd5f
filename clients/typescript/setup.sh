#!/usr/bin/env bash
# Installs what the TypeScript client's tests need: Debian chromium (for the console's browser
# test) and the npm dev dependencies from package-lock.json. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM_PATH:-}" ]; then
  echo "installing chromium (apt)"
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi

if ! command -v npm >/dev/null; then
  echo "npm is missing: install Node.js 18 or newer" >&2
  exit 1
fi
# --ignore-scripts: nothing here needs an install script (esbuild ships its binary as a package).
# Skipped when package-lock.json has not changed since the last install (node_modules/.installed).
stamp="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat node_modules/.installed 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund
echo "$stamp" >node_modules/.installed
