#!/usr/bin/env node
// Lays out the Debian package's tree from a built source tree (scripts/package/build-deb.sh runs it
// after `npm install` and `npm run build` in its private copy of the source). Plain Node, no
// dependency: it runs before anything is installed in the repository it lives in.
//
//   node scripts/package/stage.mjs --src BUILT_SOURCE --stage DIR --version V --commit SHA [--dirty]
//        --ref REF --schema N --externals '["better-sqlite3",…]' --epoch SOURCE_DATE_EPOCH
//
// What comes from where:
//  - the agent (dist/kiosk-agent.mjs and its map, package.json's version, the files the bundle reads
//    next to itself, docs/config.example.json, the README and docs) from the source tree, i.e. the
//    ref or directory being packaged;
//  - the packaging (the launcher and store-schema helper, maintainer scripts, udev rules, lintian
//    overrides in deploy/debian/, the unit deploy/kiosk-agent.service) from this repository, the one
//    running the script: an old ref (v0.1.0) is packaged the way HEAD packages.
//
// node_modules holds only what the bundle imports at run time: the external packages of
// scripts/build.ts (the native addons) and what they require, walked through package-lock.json, less
// build-only packages (prebuild-install, nan, node-addon-api) and less tsx, esbuild, playwright-core.
// Each is pruned to what loads: no C/C++ sources, build intermediates, typings, tests, docs, or
// prebuilt binaries for other platforms; the ELF files left are stripped and must be for the target.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const PACKAGING = fileURLToPath(new URL("../../", import.meta.url));
const PACKAGE = "kiosk-agent";
const LIB = `usr/lib/${PACKAGE}`;
const DOC = `usr/share/doc/${PACKAGE}`;
const DEJAVU = "/usr/share/fonts/truetype/dejavu";

/** Never in the package, whatever requires them: build tools and the TypeScript loader. */
export const BUILD_ONLY = new Set([
  "prebuild-install",
  "node-gyp",
  "nan",
  "node-addon-api",
  "tsx",
  "esbuild",
  "playwright-core",
  "typescript",
]);

/** Debian architecture → Node's process.arch, and the ELF e_machine of its binaries. */
export const ARCHES = {
  amd64: { node: "x64", machine: 62 },
  arm64: { node: "arm64", machine: 183 },
  armhf: { node: "arm", machine: 40 },
  i386: { node: "ia32", machine: 3 },
};

/** Licenses Debian keeps in /usr/share/common-licenses: referred to there, not copied. */
const COMMON_LICENSES = new Set(["Apache-2.0", "MPL-2.0", "MPL-1.1", "GPL-2", "GPL-3", "LGPL-2.1", "LGPL-3"]);

function parseArgs(argv) {
  const o = { dirty: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2);
    if (key === "dirty") o.dirty = true;
    else o[key] = argv[++i];
  }
  for (const k of ["src", "stage", "version", "commit", "ref", "schema", "externals", "epoch"]) {
    if (o[k] === undefined) throw new Error(`--${k} is required`);
  }
  return {
    ...o,
    schema: Number(o.schema),
    externals: JSON.parse(o.externals),
    epoch: Number(o.epoch),
    arch: o.arch ?? execFileSync("dpkg", ["--print-architecture"], { encoding: "utf8" }).trim(),
    maintainer: o.maintainer ?? "kiosk-agent maintainers <kiosk-agent@example.com>",
    guard: o.guard ?? "agent",
  };
}

const readJson = (file) => JSON.parse(readFileSync(file, "utf8"));

function write(file, text, mode = 0o644) {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
  chmodSync(file, mode);
}

function copy(from, to, mode = 0o644) {
  mkdirSync(dirname(to), { recursive: true });
  copyFileSync(from, to);
  chmodSync(to, mode);
}

// --- the runtime node_modules ----------------------------------------------------------------------

/** package-lock.json's key for `name` as required from the package at `from` (Node's lookup upwards). */
function resolveInLock(packages, from, name) {
  let base = from;
  for (;;) {
    const key = `${base ? `${base}/` : ""}node_modules/${name}`;
    if (packages[key]) return key;
    if (!base) return undefined;
    const i = base.lastIndexOf("/node_modules/");
    base = i < 0 ? "" : base.slice(0, i);
  }
}

/** Lock keys (node_modules/…) of the packages the externals need at run time, sorted. */
export function runtimeClosure(src, externals) {
  const lock = readJson(join(src, "package-lock.json"));
  const packages = lock.packages;
  const keep = new Set();
  const queue = externals.filter((n) => !BUILD_ONLY.has(n)).map((n) => resolveInLock(packages, "", n));
  while (queue.length > 0) {
    const key = queue.pop();
    if (!key || keep.has(key)) continue;
    if (!existsSync(join(src, key))) continue; // an optional package for another platform
    keep.add(key);
    const entry = packages[key];
    for (const dep of Object.keys({ ...entry.dependencies, ...entry.optionalDependencies })) {
      if (BUILD_ONLY.has(dep)) continue;
      queue.push(resolveInLock(packages, key, dep));
    }
  }
  return [...keep].sort();
}

const DROP_DIRS = new Set([
  "test",
  "tests",
  "__tests__",
  "example",
  "examples",
  "benchmark",
  "benchmarks",
  "docs",
  "doc",
  ".github",
  "node_modules",
  ".bin",
]);
/** Vendored C libraries compiled into an addon: left out (their license texts go to the copyright file). */
const VENDORED = new Set(["deps", "hidapi"]);
const DROP_FILES =
  /(\.(c|cc|cpp|cxx|h|hh|hpp|lzz|gyp|gypi|mk|o|a|map|md|markdown|ts|mts|cts|yml|yaml|tgz|sh|cmd|ps1)|^Makefile|^\.[a-z].*|^tsconfig\.json|^CHANGELOG.*|^README.*)$/;
const LICENSE_FILE = /^(licen[cs]e|copying|notice)([-._].*)?$/i;

/**
 * Copies one package's directory (not its nested node_modules), pruned to what loads at run time.
 * License files are left out here: their texts are in the package's copyright file.
 */
function copyPackage(from, to, nodeArch) {
  // A package's command-line programs (package.json "bin") are install-time tools, never required.
  const { bin } = readJson(join(from, "package.json"));
  const bins = new Set(
    Object.values(typeof bin === "string" ? { bin } : (bin ?? {})).map((b) => b.replace(/^\.\//, "")),
  );
  const walk = (rel) => {
    const abs = join(from, rel);
    for (const name of readdirSync(abs)) {
      const relName = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(abs, name));
      if (st.isDirectory()) {
        if (DROP_DIRS.has(name)) continue;
        if (VENDORED.has(name)) continue;
        // build/: only the addon itself (build/Release/*.node), no objects, makefiles or test addons.
        if (rel === "build" && name !== "Release") continue;
        if (rel === "build/Release" && name === "obj.target") continue;
        if (rel.startsWith("build/Release") && name === ".deps") continue;
        // prebuilds/: this platform's only (linux-<arch>, glibc).
        if (rel === "prebuilds" && (!name.includes(`linux-${nodeArch}`) || name.includes("musl"))) continue;
        walk(relName);
        continue;
      }
      if (!st.isFile()) continue;
      if (LICENSE_FILE.test(name) || DROP_FILES.test(name) || bins.has(relName)) continue;
      if (rel.startsWith("build") && !name.endsWith(".node")) continue;
      if (name === "test_extension.node") continue;
      if (rel.startsWith("prebuilds") && name.includes("musl")) continue;
      copy(join(abs, name), join(to, relName));
    }
  };
  walk("");
}

function isElf(file) {
  const fd = openSync(file, "r");
  const head = Buffer.alloc(20);
  try {
    readSync(fd, head, 0, 20, 0);
  } finally {
    closeSync(fd);
  }
  return head.readUInt32BE(0) === 0x7f454c46 ? head.readUInt16LE(18) : undefined;
}

function* filesUnder(dir) {
  for (const name of readdirSync(dir)) {
    const abs = join(dir, name);
    const st = lstatSync(abs);
    if (st.isDirectory()) yield* filesUnder(abs);
    else if (st.isFile()) yield abs;
  }
}

function removeEmptyDirs(dir) {
  for (const name of readdirSync(dir)) {
    const abs = join(dir, name);
    if (lstatSync(abs).isDirectory()) removeEmptyDirs(abs);
  }
  if (readdirSync(dir).length === 0) rmSync(dir, { recursive: true });
}

/** Packages inlined in the bundle (esbuild's `// node_modules/<pkg>/…` comments). */
export function inlinedPackages(bundleText) {
  const names = new Set();
  for (const m of bundleText.matchAll(/^\/\/ (\S*node_modules\/\S+)$/gm)) {
    const parts = m[1].split("node_modules/");
    const last = parts.at(-1);
    const seg = last.split("/");
    names.add(seg[0].startsWith("@") ? `${seg[0]}/${seg[1]}` : seg[0]);
  }
  return [...names].sort();
}

// --- the package -----------------------------------------------------------------------------------

function fillIn(text, o) {
  return text.replaceAll("@VERSION@", o.version).replaceAll("@SCHEMA_VERSION@", String(o.schema));
}

function rfc2822(epoch) {
  return new Date(epoch * 1000).toUTCString().replace("GMT", "+0000");
}

function licenseEntry(dir, name) {
  const pkg = readJson(join(dir, "package.json"));
  const license = typeof pkg.license === "string" ? pkg.license : (pkg.license?.type ?? "see its files");
  const files = readdirSync(dir).filter((f) => LICENSE_FILE.test(f));
  for (const v of VENDORED) {
    if (!existsSync(join(dir, v))) continue;
    files.push(
      ...readdirSync(join(dir, v))
        .filter((f) => LICENSE_FILE.test(f))
        .map((f) => `${v}/${f}`),
    );
  }
  const texts = files.map((f) => {
    const text = readFileSync(join(dir, f), "utf8").trimEnd();
    // A full GPL text (hidapi, in node-hid, offers GPL-3, BSD or its own license: used under BSD):
    // Debian keeps it in common-licenses.
    if (/GNU GENERAL PUBLIC LICENSE\s+Version 3/.test(text)) {
      return `${f}: the GNU GPL version 3, /usr/share/common-licenses/GPL-3 (one of its licenses to choose from)`;
    }
    return `${f}:\n\n${text}`;
  });
  return { name, version: pkg.version, license, texts };
}

function copyrightFile(entries, fontLicense) {
  const lines = [
    "kiosk-agent, the instant-issuance agent for bank branch kiosks.",
    "",
    "Copyright: the kiosk-agent authors. All rights reserved. kiosk-agent is not free software: its",
    'package.json says "private": true and grants no license; the package is for the bank that deploys it.',
    "",
    "The package includes third-party software under its own licenses: the packages inlined into",
    `/${LIB}/dist/kiosk-agent.mjs and those installed in /${LIB}/node_modules (native addons`,
    "and what they load), and the DejaVu Sans font.",
    "",
    ...entries.map((e) => `  ${`${e.name} ${e.version}`.padEnd(44)} ${e.license} (${e.where})`),
    `  ${"DejaVu Sans (assets/fonts/DejaVuSans.ttf)".padEnd(44)} Bitstream Vera / public domain (font)`,
    "",
    "Licenses in /usr/share/common-licenses (Apache-2.0, MPL-2.0) are referred to there; the other",
    "license texts follow, as each package ships them.",
  ];
  for (const e of entries) {
    if (COMMON_LICENSES.has(e.license)) {
      lines.push("", `--- ${e.name} ${e.version}: ${e.license}, /usr/share/common-licenses/${e.license}`);
      continue;
    }
    for (const text of e.texts) {
      lines.push("", `--- ${e.name} ${e.version}: ${e.license}`, "", text.trimEnd());
    }
  }
  if (fontLicense) lines.push("", "--- DejaVu Sans", "", fontLicense.trimEnd());
  return `${lines.join("\n")}\n`;
}

function manPage(o, help) {
  const date = new Date(o.epoch * 1000).toISOString().slice(0, 10);
  const esc = (line) => {
    const t = line.replaceAll("\\", "\\e").replaceAll("-", "\\-");
    return /^[.']/.test(t) ? `\\&${t}` : t;
  };
  return [
    `.TH KIOSK\\-AGENT 1 "${date}" "kiosk\\-agent ${o.version.replaceAll("-", "\\-")}" "kiosk\\-agent"`,
    ".SH NAME",
    "kiosk\\-agent \\- instant card issuance agent for bank branch kiosks",
    ".SH SYNOPSIS",
    ".B kiosk\\-agent",
    ".I command",
    "[\\fIoptions\\fR]",
    ".br",
    ".B kiosk\\-agent \\-\\-version",
    ".SH DESCRIPTION",
    "kiosk\\-agent receives card production jobs pushed by the issuer platform (D1), drives the",
    "kiosk card printer, its magstripe encoder and chip station, and reports the statuses back.",
    "The service is started by systemd (kiosk\\-agent.service).",
    ".PP",
    ".nf",
    ...help.trimEnd().split("\n").map(esc),
    ".fi",
    ".SH FILES",
    ".TP",
    ".I /etc/kiosk\\-agent/config.json",
    "the configuration (kiosk\\-agent config check FILE validates it)",
    ".TP",
    ".I /etc/kiosk\\-agent/env",
    "secrets as environment overrides, e.g. KIOSK_AGENT__D1__TOKEN",
    ".TP",
    ".I /var/lib/kiosk\\-agent",
    "the data directory: jobs, audit trail, stock ledger, data key",
    ".SH SEE ALSO",
    `/${DOC}/operations.md.gz, /${DOC}/cli.md.gz`,
    "",
  ].join("\n");
}

function main() {
  const o = parseArgs(process.argv.slice(2));
  const arch = ARCHES[o.arch];
  if (!arch) throw new Error(`unsupported architecture ${o.arch}`);
  const src = o.src;
  const stage = o.stage;
  const lib = join(stage, LIB);
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(lib, { recursive: true });

  // The agent: the bundle, and what it reads next to itself (paths relative to the bundle).
  for (const f of ["dist/kiosk-agent.mjs", "dist/kiosk-agent.mjs.map"]) copy(join(src, f), join(lib, f));
  for (const f of ["agent/console/page.html", "simulator/pty/pty_bridge.py"]) {
    if (existsSync(join(src, f))) copy(join(src, f), join(lib, f));
  }
  // The font: Debian's fonts-dejavu-core holds the same file; linked to it when it is byte for byte
  // the one in the source (then a Depends), else shipped (lintian: duplicate-font-file).
  const extraDepends = [];
  for (const f of readdirSync(join(src, "assets/fonts"))) {
    if (LICENSE_FILE.test(f)) continue; // in the copyright file
    const system = join(DEJAVU, f);
    if (existsSync(system) && readFileSync(system).equals(readFileSync(join(src, "assets/fonts", f)))) {
      mkdirSync(join(lib, "assets/fonts"), { recursive: true });
      symlinkSync(
        relative(join(lib, "assets/fonts"), join(stage, DEJAVU.slice(1), f)),
        join(lib, "assets/fonts", f),
      );
      if (!extraDepends.includes("fonts-dejavu-core")) extraDepends.push("fonts-dejavu-core");
    } else {
      copy(join(src, "assets/fonts", f), join(lib, "assets/fonts", f));
    }
  }
  copy(join(src, "docs/config.example.json"), join(lib, "config.example.json"));

  // The runtime node_modules.
  const closure = runtimeClosure(src, o.externals);
  for (const key of closure) copyPackage(join(src, key), join(lib, key), arch.node);
  const nm = join(lib, "node_modules");
  removeEmptyDirs(nm);
  for (const file of filesUnder(nm)) {
    const machine = isElf(file);
    if (machine === undefined) continue;
    if (machine !== arch.machine) throw new Error(`${relative(stage, file)}: ELF for machine ${machine}`);
    execFileSync("strip", ["--strip-unneeded", "--remove-section=.comment", "--remove-section=.note", file]);
  }

  // package.json: the agent reads its version from here (agent/version.ts): the package's version.
  const sourcePkg = readJson(join(src, "package.json"));
  const roots = o.externals.filter((n) => !BUILD_ONLY.has(n) && closure.includes(`node_modules/${n}`));
  const runtimeDeps = Object.fromEntries(
    roots.map((n) => [n, readJson(join(src, "node_modules", n, "package.json")).version]),
  );
  write(
    join(lib, "package.json"),
    `${JSON.stringify(
      {
        name: sourcePkg.name,
        version: o.version,
        private: true,
        description: sourcePkg.description,
        type: "module",
        engines: sourcePkg.engines,
        dependencies: runtimeDeps,
      },
      null,
      2,
    )}\n`,
  );
  const info = {
    name: PACKAGE,
    version: o.version,
    upstreamVersion: sourcePkg.version,
    commit: o.commit,
    dirty: o.dirty,
    ref: o.ref,
    schemaVersion: o.schema,
    schemaGuard: o.guard,
    node: process.version,
    nodeModuleVersion: process.versions.modules,
    arch: o.arch,
  };
  write(join(lib, "build-info.json"), `${JSON.stringify(info, null, 2)}\n`);

  // The packaging's own files.
  copy(join(PACKAGING, "deploy/debian/kiosk-agent.mjs"), join(lib, "bin/kiosk-agent.mjs"), 0o755);
  copy(join(PACKAGING, "deploy/debian/store-schema.mjs"), join(lib, "bin/store-schema.mjs"), 0o755);
  mkdirSync(join(stage, "usr/bin"), { recursive: true });
  symlinkSync(`../lib/${PACKAGE}/bin/kiosk-agent.mjs`, join(stage, "usr/bin/kiosk-agent"));
  copy(join(src, "docs/config.example.json"), join(stage, "etc/kiosk-agent/config.json"));
  copy(join(PACKAGING, "deploy/kiosk-agent.service"), join(stage, "lib/systemd/system/kiosk-agent.service"));
  copy(
    join(PACKAGING, "deploy/debian/60-kiosk-agent.rules"),
    join(stage, "lib/udev/rules.d/60-kiosk-agent.rules"),
  );
  copy(
    join(PACKAGING, "deploy/debian/lintian-overrides"),
    join(stage, `usr/share/lintian/overrides/${PACKAGE}`),
  );
  const pyBridge = join(lib, "simulator/pty/pty_bridge.py");
  if (existsSync(pyBridge) && readFileSync(pyBridge, "utf8").startsWith("#!")) chmodSync(pyBridge, 0o755);

  // Documentation: the README and the operator's docs, the copyright, a changelog, a man page.
  const gz = (text) => gzipSync(Buffer.from(text), { level: 9 });
  for (const f of ["README.md", "docs/operations.md", "docs/cli.md", "docs/security.md", "docs/reasons.md"]) {
    if (!existsSync(join(src, f))) continue;
    const out = join(stage, DOC, `${f.split("/").at(-1)}.gz`);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, gz(readFileSync(join(src, f))));
  }
  const bundleText = readFileSync(join(src, "dist/kiosk-agent.mjs"), "utf8");
  const entries = [
    ...inlinedPackages(bundleText).map((name) => ({
      ...licenseEntry(join(src, "node_modules", name), name),
      where: "inlined",
    })),
    ...closure.map((key) => ({
      ...licenseEntry(join(src, key), key.split("node_modules/").at(-1)),
      where: "node_modules",
    })),
  ].sort((a, b) => a.name.localeCompare(b.name));
  const fontLicense = join(src, "assets/fonts/LICENSE-DejaVu.txt");
  write(
    join(stage, DOC, "copyright"),
    copyrightFile(entries, existsSync(fontLicense) ? readFileSync(fontLicense, "utf8") : undefined),
  );
  const changelog = [
    `${PACKAGE} (${o.version}) bookworm; urgency=medium`,
    "",
    `  * Built from git commit ${o.commit}`,
    `    (${o.ref}${o.dirty ? ", with uncommitted changes" : ""}).`,
    "    The changes are the project's git history.",
    "",
    ` -- ${o.maintainer}  ${rfc2822(o.epoch)}`,
    "",
  ].join("\n");
  mkdirSync(join(stage, DOC), { recursive: true });
  writeFileSync(join(stage, DOC, "changelog.gz"), gz(changelog));
  const help = execFileSync(process.execPath, [join(lib, "bin/kiosk-agent.mjs"), "--help"], {
    encoding: "utf8",
  });
  const man = join(stage, "usr/share/man/man1/kiosk-agent.1.gz");
  mkdirSync(dirname(man), { recursive: true });
  writeFileSync(man, gz(manPage(o, help)));

  // DEBIAN/: maintainer scripts, conffiles, control.
  const debian = join(stage, "DEBIAN");
  for (const s of ["preinst", "postinst", "prerm", "postrm"]) {
    write(join(debian, s), fillIn(readFileSync(join(PACKAGING, "deploy/debian", s), "utf8"), o), 0o755);
  }
  write(join(debian, "conffiles"), "/etc/kiosk-agent/config.json\n");
  const elves = [...filesUnder(lib)].filter((f) => isElf(f) !== undefined);
  const shlibs = shlibDepends(elves, o.src);
  const depends = mergeDepends([
    // better-sqlite3 and pcsclite are built against Node 20's ABI (NODE_MODULE_VERSION 115): another
    // major Node cannot load them, so the package is for Node 20 only.
    `nodejs (>= 20)`,
    `nodejs (<< 21)`,
    "passwd",
    ...shlibs,
    "libusb-1.0-0",
    "pcscd",
    "libpcsclite1",
    ...extraDepends,
  ]);
  const installedKb = [...filesUnder(stage)]
    .filter((f) => !f.startsWith(debian))
    .reduce((kb, f) => kb + Math.ceil(statSync(f).size / 1024), 0);
  const control = [
    `Package: ${PACKAGE}`,
    `Version: ${o.version}`,
    `Architecture: ${o.arch}`,
    `Maintainer: ${o.maintainer}`,
    `Installed-Size: ${installedKb}`,
    `Depends: ${depends.join(", ")}`,
    "Suggests: python3",
    "Section: misc",
    "Priority: optional",
    "Description: instant card issuance agent for bank branch kiosks",
    " kiosk-agent runs on a kiosk's perso-station PC. It receives card production",
    " jobs pushed by the issuer platform (D1) over a WebSocket it dials out, drives",
    " the kiosk card printer (an Evolis, over USB, TCP or serial), its magstripe",
    " encoder and chip station, and reports the CARD_PROD statuses back to D1.",
    " .",
    " The package holds the agent as one JavaScript bundle for Node.js 20, the",
    " native addons it loads built for this architecture, a systemd unit and udev",
    ` rules. Built from git commit ${o.commit.slice(0, 12)}.`,
    "",
  ].join("\n");
  write(join(debian, "control"), control);
  const sums = [...filesUnder(stage)]
    .filter((f) => !f.startsWith(debian) && !f.startsWith(join(stage, "etc")))
    .map((f) => `${createHash("md5").update(readFileSync(f)).digest("hex")}  ${relative(stage, f)}`)
    .sort((a, b) => a.slice(34).localeCompare(b.slice(34)));
  write(join(debian, "md5sums"), `${sums.join("\n")}\n`);

  // Reproducible: every file and directory carries the commit's time.
  const touch = (abs) => {
    const st = lstatSync(abs);
    if (st.isSymbolicLink()) lutimesSync(abs, o.epoch, o.epoch);
    else utimesSync(abs, o.epoch, o.epoch);
    if (st.isDirectory()) {
      chmodSync(abs, 0o755);
      for (const name of readdirSync(abs)) touch(join(abs, name));
    }
  };
  touch(stage);
  process.stdout.write(
    `${JSON.stringify({ closure: closure.map((k) => k.slice("node_modules/".length)), depends, installedKb })}\n`,
  );
}

/** dpkg-shlibdeps' Depends for the ELF files (it wants a debian/control beside it: a scratch one). */
function shlibDepends(elves, scratchParent) {
  if (elves.length === 0) return [];
  const scratch = join(scratchParent, ".shlibdeps");
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(join(scratch, "debian"), { recursive: true });
  writeFileSync(
    join(scratch, "debian/control"),
    `Source: ${PACKAGE}\n\nPackage: ${PACKAGE}\nArchitecture: any\n`,
  );
  const out = execFileSync("dpkg-shlibdeps", ["-O", ...elves.map((e) => `-e${e}`)], {
    cwd: scratch,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  rmSync(scratch, { recursive: true, force: true });
  const line = out.split("\n").find((l) => l.startsWith("shlibs:Depends="));
  return line ? line.slice("shlibs:Depends=".length).split(/,\s*/).filter(Boolean) : [];
}

/** One entry per package name (the versioned one wins); nodejs keeps both of its bounds. */
function mergeDepends(list) {
  const out = [];
  for (const dep of list) {
    const name = dep.split(/[\s(]/)[0];
    const i = out.findIndex((d) => d.split(/[\s(]/)[0] === name);
    if (i < 0 || name === "nodejs") out.push(dep);
    else if (!out[i].includes("(") && dep.includes("(")) out[i] = dep;
  }
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
