#!/usr/bin/env bash
# Installs what the chip step's real PC/SC path needs on a Debian machine, unattended: pcscd (the
# PC/SC daemon) and vsmartcard-vpcd (its virtual reader, which the simulator's card connects to),
# plus the pcsclite headers the npm addon compiles against. Idempotent; needs root (CI runs as root).
set -euo pipefail

need=()
command -v pcscd >/dev/null 2>&1 || [ -x /usr/sbin/pcscd ] || need+=(pcscd)
[ -e /usr/lib/pcsc/drivers/serial/libifdvpcd.so ] && [ -e /etc/reader.conf.d/vpcd ] || need+=(vsmartcard-vpcd)
[ -f /usr/include/PCSC/winscard.h ] || need+=(libpcsclite-dev)
((${#need[@]})) || exit 0

if [ "$(id -u)" != 0 ]; then
  echo "pcsc: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
  exit 3
fi
echo "pcsc: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packages' maintainer scripts may try to start pcscd through systemd; without systemd that
# fails harmlessly, and the demo and tests start their own pcscd anyway.
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
