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

# esbuild ships its binary as a package, so no install script is needed.
exec ../../scripts/npm-ci-cached.sh
