#!/usr/bin/env bash
# Brings a fresh machine to the point where the demo and the tests run: the Debian runtime
# libraries the native addons need, then the npm dependencies exactly as locked.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# node-hid (magstripe encoder over USB HID) loads libusb at run time.
ldconfig -p | grep -q 'libusb-1.0.so.0' || need_apt+=(libusb-1.0-0)
# @pokusew/pcsclite (chip step through PC/SC) compiles against the pcsclite headers.
[ -f /usr/include/PCSC/winscard.h ] || need_apt+=(libpcsclite-dev)
# The chip step's real PC/SC path (`npm run demo -- --chip pcsc`, test/e2e/pcsc.test.ts): the daemon
# and vsmartcard's virtual reader, which the simulator's card connects to (docs/chip.md).
[ -x /usr/sbin/pcscd ] || need_apt+=(pcscd)
[ -e /usr/lib/pcsc/drivers/serial/libifdvpcd.so ] || need_apt+=(vsmartcard-vpcd)
# The console browser test drives Debian's chromium through playwright-core, which never downloads a
# browser (scripts/browser/ensure-chromium.sh does the same when only `npm run test:browser` runs).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# The clock-step tests (test/ops/clock-step.test.ts) step the real agent's wall clock ±3 h with
# Debian's libfaketime (LD_PRELOAD), as NTP would.
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || need_apt+=(faketime)
# The audit forwarding tests (test/ops/audit-forward.test.ts) send to a real rsyslog, run as their own
# child process on a loopback port; rsyslog-openssl is its TLS driver (RFC 5425).
[ -x /usr/sbin/rsyslogd ] || need_apt+=(rsyslog)
compgen -G '/usr/lib/*/rsyslog/lmnsd_ossl.so' >/dev/null || need_apt+=(rsyslog-openssl)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install: ${need_apt[*]} (needs root)" >&2
  fi
fi
# promtool, Prometheus's own checker, checks and unit-tests the alert rules in deploy/prometheus/
# (test/ops/alert-rules.test.ts); Debian ships it in the prometheus package. Only the tool is wanted:
# installed without the recommended node exporter (and its ipmitool, smartmontools…), and where
# systemd runs, the Prometheus server the package enables is stopped and disabled again.
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing prometheus (for promtool)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
    promtool --version >/dev/null
  else
    echo "setup: please install: prometheus (for promtool; needs root)" >&2
  fi
fi

# better-sqlite3 and the serialport/HID addons compile against the local Node headers.
[ -d /usr/include/node ] && export npm_config_nodedir=/usr
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm install` rather than `npm ci`: it installs the locked versions just the same, but tolerates
  # an optional platform package the registry does not serve (rollup's android/darwin builds are
  # absent from the registry this project's machines reach, which makes `npm ci` refuse the lock).
  echo "setup: npm install (locked versions)"
  npm install --no-audit --no-fund --loglevel=error
fi

# LazyFS, the FUSE file system that drops every write not fsynced, for the crash harness's power-loss
# mode (npm run crash:powerloss) and its smoke test (test/crash/power-loss-harness.test.ts): built
# from third_party/lazyfs into .cache/lazyfs with Debian's libraries, once, and again only when its
# sources change (~1 min). Not fatal: without it those tests are skipped, and say why.
bash scripts/powerloss/build-lazyfs.sh >/dev/null ||
  echo "setup: LazyFS was not built (scripts/powerloss/build-lazyfs.sh); the power-loss tests will be skipped" >&2

# The shipped form of the agent: dist/kiosk-agent.mjs, one bundle plain node runs (no tsx loader:
# ~0.5 s faster to start, ~30 MB less). bin/kiosk-agent.mjs uses it while it is newer than the
# sources, so the demo, the tests and the service run what was just built. Always rebuilt (~1 s):
# sources or dependencies may have changed since the last setup.
echo "setup: npm run build (dist/kiosk-agent.mjs)"
npm run --silent build
