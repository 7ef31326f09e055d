#!/usr/bin/env bash
# Makes sure Debian's chromium is installed for the console browser test (test/browser/), which
# drives it through playwright-core with executablePath. Playwright never downloads a browser here:
# the browser comes from apt like every other system package this project needs.
#
# Exit codes: 0 chromium is there (or was installed), 1 it is missing and could not be installed.
set -euo pipefail

CHROMIUM="${KIOSK_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "ensure-chromium: $CHROMIUM is missing; install it as root: apt-get install -y chromium" >&2
  exit 1
fi

echo "ensure-chromium: installing Debian chromium (apt-get)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null

if [ ! -x "$CHROMIUM" ]; then
  echo "ensure-chromium: apt-get finished but $CHROMIUM is still missing" >&2
  exit 1
fi
echo "ensure-chromium: $("$CHROMIUM" --version 2>/dev/null || echo chromium installed)"
