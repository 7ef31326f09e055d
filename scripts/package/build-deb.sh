#!/usr/bin/env bash
# `npm run package`: builds kiosk-agent_<version>_<arch>.deb with dpkg-deb (docs/operations.md, "The
# package"). The agent is built from a copy of the source, never in the working tree:
#
#   npm run package                          # this working tree, as it is (uncommitted changes too)
#   npm run package -- --ref v0.1.0          # a commit, tag or branch of this repository (git archive)
#   npm run package -- --source DIR          # another source tree (a checkout or an unpacked release)
#   options: --out DIR (default artifacts/package), --work DIR (kept; default a temporary one, removed),
#            --no-lintian
#
# Steps: export the source → `npm install` (the locked versions; native addons compiled against this
# machine's Node headers, with Debian's hardening flags) → the source's own `npm run build` →
# scripts/package/stage.mjs lays out the tree (bundle, runtime node_modules, unit, udev rules, conffile,
# maintainer scripts) → dpkg-deb → checks: no dev-only file in `dpkg-deb -c`, lintian without errors.
#
# The native addons are built for the machine that runs this: build on the target's Debian release and
# architecture (Debian 12, amd64 for the kiosks today), or in a chroot of it.
#
# Version: package.json's version when the commit is tagged v<version>; <version>+<n>.g<commit> n
# commits after that tag; <version>~<count>.g<commit> when that version has no tag yet (a pre-release).
# `.dirty` is appended when the tree has uncommitted changes. The git commit goes into build-info.json,
# which `kiosk-agent --version` prints.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ref=""
source_dir=""
out="$REPO/artifacts/package"
work=""
lint=1
while (($#)); do
  case "$1" in
    --ref) ref="$2"; shift 2 ;;
    --source) source_dir="$(cd "$2" && pwd)"; shift 2 ;;
    --out) mkdir -p "$2"; out="$(cd "$2" && pwd)"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --no-lintian) lint=0; shift ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$ref" ] && [ -n "$source_dir" ]; then
  echo "package: --ref and --source exclude each other" >&2
  exit 2
fi
say() { echo "package: $*" >&2; }

# --- tools: what a fresh Debian machine lacks (installed here, not by scripts/setup.sh) ----------------
need_apt=()
command -v dpkg-shlibdeps >/dev/null || need_apt+=(dpkg-dev)
command -v lintian >/dev/null || ((lint == 0)) || need_apt+=(lintian)
command -v strip >/dev/null || need_apt+=(binutils)
command -v make >/dev/null || need_apt+=(make)
command -v g++ >/dev/null || need_apt+=(g++)
command -v python3 >/dev/null || need_apt+=(python3)
command -v git >/dev/null || need_apt+=(git)
# @pokusew/pcsclite compiles against the PC/SC headers.
[ -f /usr/include/PCSC/winscard.h ] || need_apt+=(libpcsclite-dev)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    say "installing ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    say "please install: ${need_apt[*]} (needs root)"
    exit 1
  fi
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" != 20 ]; then
  say "Node $node_major here: the package is built with (and for) Node 20"
  exit 1
fi
# node-gyp would download Node's headers from nodejs.org: use the ones the nodejs package installed.
if [ -f /usr/include/node/node_version.h ]; then
  export npm_config_nodedir=/usr
else
  say "Node's headers (/usr/include/node) are missing: install the nodejs package that has them"
  exit 1
fi
arch="$(dpkg --print-architecture)"

# --- the source --------------------------------------------------------------------------------------
if [ -z "$work" ]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/kiosk-agent-package.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
else
  rm -rf "$work"
  mkdir -p "$work"
  work="$(cd "$work" && pwd)"
fi
src="$work/src"
mkdir -p "$src"
dirty=0
if [ -n "$ref" ]; then
  gitdir="$REPO"
  commit="$(git -C "$gitdir" rev-parse --verify "$ref^{commit}")"
  say "source: $ref ($commit), exported with git archive"
  git -C "$gitdir" archive --format=tar "$commit" | tar -x -C "$src"
  label="$ref"
else
  dir="${source_dir:-$REPO}"
  if git -C "$dir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    gitdir="$dir"
    commit="$(git -C "$dir" rev-parse HEAD)"
    [ -z "$(git -C "$dir" status --porcelain)" ] || dirty=1
    say "source: the tree $dir at $commit$([ "$dirty" = 1 ] && echo ' with uncommitted changes')"
    # Tracked and untracked files that are not ignored (no node_modules, dist, artifacts…).
    (cd "$dir" && git ls-files -z --cached --others --exclude-standard |
      tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -x -C "$src"
  else
    gitdir=""
    commit="${KIOSK_AGENT_COMMIT:-unknown}"
    say "source: $dir (not a git checkout; commit $commit from KIOSK_AGENT_COMMIT)"
    tar -C "$dir" --exclude=./node_modules --exclude=./dist --exclude=./artifacts --exclude=./.git -cf - . |
      tar -x -C "$src"
  fi
  label="${source_dir:-working tree}"
fi

upstream="$(node -p "require('$src/package.json').version")"
if [ -n "$gitdir" ]; then
  short="$(git -C "$gitdir" rev-parse --short=7 "$commit")"
  epoch="$(git -C "$gitdir" log -1 --format=%ct "$commit")"
  tag_commit="$(git -C "$gitdir" rev-parse -q --verify "refs/tags/v$upstream^{commit}" || true)"
  if [ "$tag_commit" = "$commit" ]; then
    version="$upstream"
  elif [ -n "$tag_commit" ] && git -C "$gitdir" merge-base --is-ancestor "$tag_commit" "$commit"; then
    version="$upstream+$(git -C "$gitdir" rev-list --count "$tag_commit..$commit").g$short"
  else
    version="$upstream~$(git -C "$gitdir" rev-list --count "$commit").g$short"
  fi
else
  epoch="$(date +%s)"
  version="$upstream"
fi
((dirty == 0)) || version="$version.dirty"
export SOURCE_DATE_EPOCH="$epoch"
say "version $version ($arch)"

# --- build -------------------------------------------------------------------------------------------
cd "$src"
# Debian's hardening flags for the addons node-gyp compiles (gyp's makefiles read these variables).
eval "$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --export=sh)"
say "npm install (locked versions; native addons compiled here) → $work/npm-install.log"
# `npm install` rather than `npm ci`, as scripts/setup.sh explains (optional platform packages the
# registry reachable here does not serve); it installs the locked versions.
if ! npm install --no-audit --no-fund --loglevel=error >"$work/npm-install.log" 2>&1; then
  tail -30 "$work/npm-install.log" >&2
  exit 1
fi
say "npm run build"
npm run --silent build >&2
# What the source's own build keeps external (the native addons), and the newest schema it migrates to.
externals="$(npx --no-install tsx -e 'import("./scripts/build.ts").then((m) => console.log(JSON.stringify(m.EXTERNAL)))')"
schema="$(npx --no-install tsx -e 'import("./agent/store/migrations.ts").then((m) => console.log(Math.max(...m.MIGRATIONS.map((x) => x.version))))')"
# Does the agent refuse a store from a newer agent itself? If not, the package's launcher does (0.1.0).
guard=launcher
grep -q STORE_SCHEMA_NEWER agent/store/migrations.ts && guard=agent
say "store schema $schema (newer-store refusal by the $guard)"

# --- the package ---------------------------------------------------------------------------------------
stage="$work/stage"
stage_args=(--src "$src" --stage "$stage" --version "$version" --commit "$commit" --ref "$label"
  --schema "$schema" --externals "$externals" --epoch "$epoch" --arch "$arch" --guard "$guard")
((dirty == 0)) || stage_args+=(--dirty)
[ -z "${KIOSK_PACKAGE_MAINTAINER:-}" ] || stage_args+=(--maintainer "$KIOSK_PACKAGE_MAINTAINER")
node "$HERE/stage.mjs" "${stage_args[@]}" >"$work/stage.json"
mkdir -p "$out"
deb="$out/kiosk-agent_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
say "built $deb ($(du -k "$deb" | cut -f1) KiB, installed $(node -p "require('$work/stage.json').installedKb") KiB)"

# --- checks --------------------------------------------------------------------------------------------
# No dev-only file: sources, typings, tests, the TypeScript toolchain, build tools, other platforms.
dev_only='\.(ts|mts|cts|c|cc|cpp|h|hpp|gyp|gypi)$|/(test|tests|__tests__|\.github|deps|obj\.target)/|/node_modules/(tsx|esbuild|@esbuild|typescript|vitest|@vitest|@biomejs|@types|playwright-core|prebuild-install|node-gyp|nan|node-addon-api|rollup|vite)/|/prebuilds/(win32|darwin|android|linux-arm|.*musl)'
if dpkg-deb -c "$deb" | awk '{print $6}' | grep -E "$dev_only" >&2; then
  say "dev-only files in the package (above)"
  exit 1
fi
if ((lint)); then
  say "lintian"
  lintian --fail-on error --display-info "$deb" >"$work/lintian.txt" 2>&1 || lint_rc=$?
  cat "$work/lintian.txt" >&2
  if [ "${lint_rc:-0}" != 0 ]; then
    say "lintian reported errors"
    exit 1
  fi
  say "lintian: $(grep -c '^E:' "$work/lintian.txt" || true) errors, $(grep -c '^W:' "$work/lintian.txt" || true) warnings, $(grep -c '^I:' "$work/lintian.txt" || true) info"
fi
echo "$deb"
