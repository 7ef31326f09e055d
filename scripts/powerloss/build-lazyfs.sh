#!/usr/bin/env bash
# Builds LazyFS (the FUSE file system that loses every write not fsynced; third_party/lazyfs) into
# .cache/lazyfs/lazyfs for the crash harness's power-loss mode (docs/crash-harness.md).
#
# Cached and idempotent: it does nothing when the binary was built from the same vendored sources,
# patches and build files (a stamp of their sha256). Builds with Debian's toml11 and spdlog through
# scripts/powerloss/CMakeLists.txt, never upstream's CMake files (they download both at configure
# time, and no network is reachable here). The vendored tree stays as upstream has it: it is copied
# to .cache/lazyfs/src and scripts/powerloss/*.patch are applied to the copy (one: statfs, see
# third_party/lazyfs/VENDORED.md). As root it installs the Debian packages it lacks, as
# scripts/setup.sh does; otherwise it names them and fails.
#
#   scripts/powerloss/build-lazyfs.sh           build if needed; prints the binary's path
#   scripts/powerloss/build-lazyfs.sh --check   exit 0 if the cached binary is current, 1 if not
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SRC=$ROOT/third_party/lazyfs
OUT=$ROOT/.cache/lazyfs
BIN=$OUT/lazyfs

stamp() {
  # Everything the binary is made from, in a fixed order.
  (cd "$ROOT" && find third_party/lazyfs/lazyfs third_party/lazyfs/libs -type f \
    \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' \) -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
   sha256sum scripts/powerloss/CMakeLists.txt scripts/powerloss/build-lazyfs.sh scripts/powerloss/*.patch) |
    sha256sum | cut -d' ' -f1
}

current() { [ -x "$BIN" ] && [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$(stamp)" ]; }

if [ "${1:-}" = "--check" ]; then
  current
  exit
fi
if current; then
  echo "$BIN"
  exit 0
fi

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v patch >/dev/null || need_apt+=(patch)
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
[ -f /usr/include/fuse3/fuse.h ] || need_apt+=(libfuse3-dev)
[ -f /usr/share/cmake/toml11/toml11Config.cmake ] || need_apt+=(libtoml11-dev)
[ -d /usr/include/spdlog ] || need_apt+=(libspdlog-dev)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "build-lazyfs: installing ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "build-lazyfs: please install: ${need_apt[*]} (needs root)" >&2
    exit 1
  fi
fi

echo "build-lazyfs: building LazyFS from third_party/lazyfs into .cache/lazyfs" >&2
mkdir -p "$OUT"
rm -rf "$OUT/src" "$OUT/build"
cp -a "$SRC" "$OUT/src"
for p in scripts/powerloss/*.patch; do
  patch -s -p1 -d "$OUT/src" <"$p" || { echo "build-lazyfs: $p does not apply" >&2; exit 1; }
done
cmake -S scripts/powerloss -B "$OUT/build" -DLAZYFS_SOURCE_DIR="$OUT/src" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$OUT/build.log" 2>&1 \
  || { cat "$OUT/build.log" >&2; exit 1; }
cmake --build "$OUT/build" -j "$(nproc)" >>"$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log" >&2; exit 1; }
cp "$OUT/build/lazyfs" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
stamp >"$OUT/stamp"
echo "$BIN"
