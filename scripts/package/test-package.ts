/**
 * `npm run test:package`: the Debian package installed the way a bank installs it, in a clean Debian 12
 * root, and upgraded with jobs pending (docs/operations.md, "Testing the package"). Slow (minutes: two
 * package builds, a debootstrap, two roots), so not part of `npm test`.
 *
 *   npm run test:package                               # builds both packages, then both tests
 *   npm run test:package -- --new DEB --old DEB        # given packages
 *   npm run test:package -- --new-ref HEAD             # the new package from a commit, not the tree
 *   options: --old-ref REF (default v0.1.0), --new-source DIR, --node-deb FILE, --only install|upgrade,
 *            --work DIR (kept), --fresh-root, --out DIR (default artifacts/package)
 *
 * Needs root (chroot, mount, dpkg in a root of its own) and reaches Debian's mirror only (mmdebstrap).
 * It runs in a mount namespace of its own (unshare): the roots' /dev, /proc, /run and /tmp mounts end
 * with it, whatever happens.
 *
 * 1. Clean root: `mmdebstrap --variant=minbase` of bookworm with the package's Depends (resolved by apt
 *    from Debian, as `apt install` would), then Node 20 and the package with `dpkg -i`, no npm and no
 *    compiler inside. Checks the user, groups, modes, the enabled unit (not started), the unit's
 *    "unconfigured" condition, `kiosk-agent --version`, `config check`, a 3-card demo, then `dpkg -r`
 *    (data kept) and `dpkg -P` (data gone).
 * 2. Upgrade: the old package (v0.1.0) in a fresh root; the D1 emulator (on the host, as D1 is) pushes 5
 *    jobs; the agent runs as the service user with the old simulated printer on a pty (there is no
 *    systemd in a chroot: the agent is started directly, `kiosk-agent run --config …`, and stopped with
 *    SIGTERM as systemd would); it is stopped with a card in the mouth and 4 jobs queued; the new
 *    package is installed over it (`dpkg -i --force-confold`), the agent runs again and every job
 *    ends. Then a downgrade over the new store is refused, and never rewrites it.
 *
 * Node 20 for the root: --node-deb FILE or KIOSK_NODE_DEB (a bank's mirrored nodejs_20.x .deb); else a
 * nodejs_20.* .deb in /var/cache/apt/archives; else `apt-get download nodejs` when apt offers 20.x; else
 * `dpkg-repack nodejs` of this machine's installed Node 20 (cached). npm, corepack and the headers are
 * left out at install (`dpkg --path-exclude`).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { homedir, tmpdir } from "node:os";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const SUITE = "bookworm";
const MIRROR = process.env.KIOSK_DEBIAN_MIRROR ?? "http://deb.debian.org/debian";
const SECURITY = process.env.KIOSK_DEBIAN_SECURITY ?? "http://deb.debian.org/debian-security";
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** Installed from the nodejs package: node itself, not its npm, corepack or C headers. */
const NODE_EXCLUDES = [
  "--path-exclude=/usr/lib/node_modules/*",
  "--path-exclude=/usr/bin/npm",
  "--path-exclude=/usr/bin/npx",
  "--path-exclude=/usr/bin/corepack",
  "--path-exclude=/usr/include/node/*",
];
const TERMINAL = new Set(["CARD_PROD_DONE", "CARD_PROD_EXCEPTION", "CARD_PROD_CANCELED", "DATA_EXCEPTION"]);
const STATION = "KIOSK-UPG-1";
/** dpkg-query formats (dpkg's ${Field} syntax, not a template string). */
const DPKG_STATUS = ["-f=$", "{Status}"].join("");
const DPKG_VERSION_STATUS = ["-f=$", "{Version} $", "{Status}"].join("");
const JOBS = 5;

interface Options {
  oldDeb?: string;
  newDeb?: string;
  oldRef: string;
  newRef?: string;
  newSource?: string;
  nodeDeb?: string;
  only?: "install" | "upgrade";
  work: string;
  keepWork: boolean;
  freshRoot: boolean;
  out: string;
  cache: string;
}

// --- output and checks ------------------------------------------------------------------------------

let reportFile = "";
function log(text = ""): void {
  process.stdout.write(`${text}\n`);
  if (reportFile) appendFileSync(reportFile, `${text}\n`);
}
const results: { name: string; ok: boolean }[] = [];
function check(name: string, ok: boolean, detail?: string): boolean {
  results.push({ name, ok });
  log(`${ok ? "ok" : "NOT OK"}  ${name}${detail ? `: ${detail}` : ""}`);
  return ok;
}
function section(title: string): void {
  log("");
  log(`== ${title}`);
}
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Ran {
  code: number;
  out: string;
  err: string;
  ms: number;
}
function run(
  cmd: string,
  args: string[],
  opts: { input?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Ran {
  const started = performance.now();
  const r = spawnSync(cmd, args, {
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024,
    input: opts.input ?? "",
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.env ? { env: opts.env } : {}),
  });
  if (r.error) throw r.error;
  return { code: r.status ?? 128, out: r.stdout, err: r.stderr, ms: performance.now() - started };
}
function must(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Ran {
  const r = run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}\n${r.out}\n${r.err}`);
  return r;
}
const indent = (text: string, prefix = "    ") =>
  text
    .trimEnd()
    .split("\n")
    .map((l) => `${prefix}${l}`)
    .join("\n");

// --- a process with its output as lines ---------------------------------------------------------------

class Proc {
  readonly lines: string[] = [];
  readonly exited: Promise<number>;
  private waiters: Array<() => void> = [];
  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    logFile: string,
  ) {
    const onData = (chunk: Buffer) => {
      appendFileSync(logFile, chunk);
      const text = chunk.toString("utf8");
      for (const line of text.split("\n")) if (line) this.lines.push(line);
      for (const w of this.waiters.splice(0)) w();
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    this.exited = new Promise((resolve) =>
      child.on("exit", (code, signal) => {
        for (const w of this.waiters.splice(0)) w();
        resolve(code ?? (signal ? 128 : 1));
      }),
    );
  }
  count(re: RegExp): number {
    return this.lines.filter((l) => re.test(l)).length;
  }
  /** Resolves with the first line matching `re` once at least `times` lines match. */
  async waitFor(re: RegExp, timeoutMs: number, times = 1): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const hits = this.lines.filter((l) => re.test(l));
      if (hits.length >= times) return hits[0]!;
      if (this.child.exitCode !== null) throw new Error(`${this.name} exited before ${re}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`${this.name}: no ${re} (×${times}) within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 500));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 90_000): Promise<number> {
    if (this.child.exitCode === null) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

// --- a Debian root --------------------------------------------------------------------------------------

class Root {
  private mounts: string[] = [];
  constructor(
    readonly dir: string,
    readonly logDir: string,
  ) {}

  static fromBase(base: string, dir: string, logDir: string): Root {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    must("tar", ["--numeric-owner", "-xf", base, "-C", dir]);
    const root = new Root(dir, logDir);
    root.mount();
    return root;
  }

  path(p: string): string {
    return join(this.dir, p);
  }

  /** A /dev of its own (a few nodes, a private devpts), /proc, and tmpfs on /run, /tmp, /dev/shm. */
  private mount(): void {
    const m = (args: string[], at: string) => {
      mkdirSync(at, { recursive: true });
      must("mount", [...args, at]);
      this.mounts.push(at);
    };
    m(["-t", "tmpfs", "-o", "mode=0755", "tmpfs"], this.path("dev"));
    for (const [name, major, minor] of [
      ["null", 1, 3],
      ["zero", 1, 5],
      ["full", 1, 7],
      ["random", 1, 8],
      ["urandom", 1, 9],
      ["tty", 5, 0],
    ] as const) {
      must("mknod", ["-m", "0666", this.path(`dev/${name}`), "c", String(major), String(minor)]);
    }
    m(["-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620,gid=5", "devpts"], this.path("dev/pts"));
    must("ln", ["-s", "pts/ptmx", this.path("dev/ptmx")]);
    m(["-t", "tmpfs", "-o", "mode=1777", "tmpfs"], this.path("dev/shm"));
    m(["-t", "proc", "proc"], this.path("proc"));
    m(["-t", "tmpfs", "-o", "mode=0755", "tmpfs"], this.path("run"));
    m(["-t", "tmpfs", "-o", "mode=1777", "tmpfs"], this.path("tmp"));
  }

  /** The service user's numeric ids (chroot --userspec takes numbers: no lookup outside the root). */
  private userSpec(): string[] {
    const passwd = readFileSync(this.path("etc/passwd"), "utf8").split("\n");
    const group = readFileSync(this.path("etc/group"), "utf8").split("\n");
    const user = passwd.find((l) => l.startsWith("kiosk-agent:"))?.split(":");
    if (!user) throw new Error("no kiosk-agent user in the root");
    const gids = ["lp", "dialout", "plugdev"].map(
      (g) => group.find((l) => l.startsWith(`${g}:`))?.split(":")[2],
    );
    return [`--userspec=${user[2]}:${user[3]}`, `--groups=${gids.join(",")}`];
  }

  private argv(args: string[], user: boolean, env: Record<string, string>): string[] {
    const home = user ? "/var/lib/kiosk-agent" : "/root";
    const vars = Object.entries({
      PATH,
      LANG: "C.UTF-8",
      HOME: home,
      DEBIAN_FRONTEND: "noninteractive",
      ...env,
    });
    return [
      ...(user ? this.userSpec() : []),
      this.dir,
      "/usr/bin/env",
      "-i",
      ...vars.map(([k, v]) => `${k}=${v}`),
      ...args,
    ];
  }

  exec(args: string[], opts: { user?: boolean; env?: Record<string, string>; input?: string } = {}): Ran {
    return run("chroot", this.argv(args, opts.user ?? false, opts.env ?? {}), { input: opts.input ?? "" });
  }

  start(name: string, args: string[], opts: { user?: boolean; env?: Record<string, string> } = {}): Proc {
    const child = spawn("chroot", this.argv(args, opts.user ?? false, opts.env ?? {}), {
      stdio: ["pipe", "pipe", "pipe"],
    });
    return new Proc(name, child, join(this.logDir, `${name}.log`));
  }

  /** `stat` owner:group mode of a path inside the root, or "absent". */
  stat(p: string): string {
    const r = this.exec(["stat", "-c", "%U:%G %a", p]);
    return r.code === 0 ? r.out.trim() : "absent";
  }

  exists(p: string): boolean {
    try {
      lstatSync(this.path(p));
      return true;
    } catch {
      return false;
    }
  }

  remove(): void {
    for (const at of this.mounts.reverse()) run("umount", ["-l", at]);
    this.mounts = [];
    const mounted = readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .some((l) => l.split(" ")[4]?.startsWith(`${this.dir}/`));
    if (mounted) throw new Error(`${this.dir} still has mounts: not removed`);
    must("rm", ["-rf", "--one-file-system", this.dir]);
  }
}

// --- inputs: the packages, Node 20, the base root ----------------------------------------------------------

function buildPackage(label: string, args: string[], o: Options): string {
  log(`building the ${label} package: npm run package -- ${args.join(" ")}`);
  const logFile = join(o.work, `build-${label}.log`);
  const r = run("bash", [join(REPO, "scripts/package/build-deb.sh"), ...args, "--out", o.out]);
  writeFileSync(logFile, `${r.err}\n${r.out}`);
  if (r.code !== 0)
    throw new Error(`the ${label} package did not build (${logFile}):\n${r.err.slice(-3000)}`);
  const deb = r.out.trim().split("\n").at(-1)!;
  const lintian = r.err.split("\n").find((l) => l.startsWith("package: lintian:")) ?? "";
  log(`  ${basename(deb)} in ${seconds(r.ms)}; ${lintian.replace("package: ", "")}`);
  return deb;
}

function debField(deb: string, field: string): string {
  return must("dpkg-deb", ["-f", deb, field]).out.trim();
}

/** Package names a Depends field needs (the first of alternatives; versions dropped). */
function dependsNames(depends: string): string[] {
  return depends
    .split(",")
    .map((d) => d.split("|")[0]!.trim().split(/[\s(]/)[0]!)
    .filter(Boolean);
}

function nodeDeb(o: Options): { file: string; how: string } {
  const given = o.nodeDeb ?? process.env.KIOSK_NODE_DEB;
  if (given) return { file: given, how: "given (--node-deb / KIOSK_NODE_DEB)" };
  const arch = must("dpkg", ["--print-architecture"]).out.trim();
  const archives = "/var/cache/apt/archives";
  const cached = existsSync(archives)
    ? readdirSync(archives).filter((f) => /^nodejs_20\..*\.deb$/.test(f) && f.endsWith(`_${arch}.deb`))
    : [];
  if (cached.length > 0)
    return { file: join(archives, cached.sort().at(-1)!), how: `apt's cache (${archives})` };
  const policy = run("apt-cache", ["policy", "nodejs"]).out;
  const candidate = /Candidate:\s*(\S+)/.exec(policy)?.[1];
  const installed = /Installed:\s*(\S+)/.exec(policy)?.[1];
  const dir = join(o.cache, "node");
  mkdirSync(dir, { recursive: true });
  if (candidate?.startsWith("20.") && candidate !== installed) {
    const r = run("apt-get", ["download", `nodejs=${candidate}`], { cwd: dir });
    const file = readdirSync(dir).find((f) => f.startsWith(`nodejs_${candidate.replace(/:/g, "%3a")}`));
    if (r.code === 0 && file) return { file: join(dir, file), how: `apt-get download nodejs=${candidate}` };
  }
  if (installed?.startsWith("20.")) {
    const mark = join(dir, `repack-${installed}`);
    const done = existsSync(mark) ? readFileSync(mark, "utf8").trim() : "";
    if (done && existsSync(done))
      return { file: done, how: `dpkg-repack of the installed nodejs ${installed} (cached)` };
    if (!existsSync("/usr/bin/dpkg-repack")) {
      must("apt-get", ["install", "-y", "-qq", "dpkg-repack"], {
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      });
    }
    log(`  dpkg-repack nodejs ${installed} (once; cached in ${dir})`);
    const scratch = mkdtempSync(join(dir, "repack-"));
    must("dpkg-repack", ["--deb-option=-Zgzip", "--deb-option=-z1", "nodejs"], { cwd: scratch });
    const file = readdirSync(scratch).find((f) => f.endsWith(".deb"))!;
    renameSync(join(scratch, file), join(dir, file));
    rmSync(scratch, { recursive: true, force: true });
    writeFileSync(mark, `${join(dir, file)}\n`);
    return { file: join(dir, file), how: `dpkg-repack of the installed nodejs ${installed}` };
  }
  throw new Error("no Node 20 package: give one with --node-deb FILE (a nodejs_20.x .deb)");
}

function baseRoot(o: Options, include: string[]): string {
  const key = createHash("sha256")
    .update(JSON.stringify([SUITE, MIRROR, SECURITY, include]))
    .digest("hex")
    .slice(0, 16);
  const tar = join(o.cache, `${SUITE}-minbase-${key}.tar`);
  if (existsSync(tar) && !o.freshRoot) {
    log(`base root: ${tar} (cached; --fresh-root makes it again)`);
    return tar;
  }
  if (!existsSync("/usr/bin/mmdebstrap")) {
    must("apt-get", ["install", "-y", "-qq", "mmdebstrap"], {
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
  }
  log(`base root: mmdebstrap --variant=minbase ${SUITE} with ${include.join(",")}`);
  const r = run("mmdebstrap", [
    "--variant=minbase",
    "--format=tar",
    `--include=${include.join(",")}`,
    '--aptopt=Acquire::Retries "3"',
    SUITE,
    `${tar}.part`,
    `deb ${MIRROR} ${SUITE} main`,
    `deb ${MIRROR} ${SUITE}-updates main`,
    `deb ${SECURITY} ${SUITE}-security main`,
  ]);
  writeFileSync(join(o.work, "mmdebstrap.log"), r.err + r.out);
  if (r.code !== 0) throw new Error(`mmdebstrap failed:\n${r.err.slice(-3000)}`);
  renameSync(`${tar}.part`, tar);
  log(`  made in ${seconds(r.ms)} (${Math.round(statSync(tar).size / 1048576)} MiB)`);
  return tar;
}

function installNode(root: Root, node: string): void {
  copyFileSync(node, root.path("tmp/nodejs.deb"));
  const r = root.exec(["dpkg", ...NODE_EXCLUDES, "-i", "/tmp/nodejs.deb"]);
  check(
    "Node 20 installed with dpkg -i (npm, corepack, headers excluded)",
    r.code === 0,
    r.code === 0 ? seconds(r.ms) : r.err,
  );
  const v = root.exec(["node", "--version"]).out.trim();
  const tools = root
    .exec([
      "sh",
      "-c",
      "for c in npm npx corepack cc gcc g++ c++ make node-gyp; do command -v $c; done; ls -d /usr/lib/node_modules/npm 2>/dev/null; true",
    ])
    .out.trim();
  check("no npm and no compiler in the root", tools === "", tools || `node ${v}`);
}

/**
 * systemctl and deb-systemd-invoke replaced by stubs that log their calls and say the service is active
 * while /run/systemd-stub.active exists, and /run/systemd/system made: the maintainer scripts then take
 * their systemd branches, whose calls are checked (no systemd runs in a chroot). Returns the call log.
 */
function stubSystemd(root: Root): {
  calls: () => string[];
  active: (on: boolean) => void;
  remove: () => void;
} {
  const stub = (name: string, body: string) => {
    writeFileSync(
      root.path(`usr/local/bin/${name}`),
      `#!/bin/sh\necho "${name} $*" >> /run/systemd-stub.log\n${body}exit 0\n`,
    );
    root.exec(["chmod", "0755", `/usr/local/bin/${name}`]);
  };
  stub("systemctl", 'case " $* " in *" is-active "*) [ -e /run/systemd-stub.active ] || exit 3 ;; esac\n');
  stub("deb-systemd-invoke", "");
  mkdirSync(root.path("run/systemd/system"), { recursive: true });
  const logFile = root.path("run/systemd-stub.log");
  writeFileSync(logFile, "");
  return {
    calls: () => {
      const lines = readFileSync(logFile, "utf8").split("\n").filter(Boolean);
      writeFileSync(logFile, "");
      return lines;
    },
    active: (on) =>
      on
        ? writeFileSync(root.path("run/systemd-stub.active"), "")
        : rmSync(root.path("run/systemd-stub.active"), { force: true }),
    remove: () => {
      for (const f of [
        "usr/local/bin/systemctl",
        "usr/local/bin/deb-systemd-invoke",
        "run/systemd-stub.active",
      ]) {
        rmSync(root.path(f), { force: true });
      }
      rmSync(root.path("run/systemd"), { recursive: true, force: true });
    },
  };
}

function copyDeb(root: Root, deb: string): string {
  copyFileSync(deb, root.path(`tmp/${basename(deb)}`));
  return `/tmp/${basename(deb)}`;
}

// --- the store, read on a copy ---------------------------------------------------------------------------

interface StoreView {
  jobs: { operation_id: string; state: string; reason: string | null; queue_seq: number }[];
  migrations: { version: number; applied_at: string }[];
}
function readStore(dataDir: string): StoreView {
  const scratch = mkdtempSync(join(tmpdir(), "kiosk-store-"));
  try {
    const file = join(dataDir, "jobs.sqlite");
    copyFileSync(file, join(scratch, "jobs.sqlite"));
    if (existsSync(`${file}-wal`)) copyFileSync(`${file}-wal`, join(scratch, "jobs.sqlite-wal"));
    const db = new Database(join(scratch, "jobs.sqlite"));
    try {
      return {
        jobs: db
          .prepare("SELECT operation_id, state, reason, queue_seq FROM jobs ORDER BY queue_seq")
          .all() as StoreView["jobs"],
        migrations: db
          .prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")
          .all() as StoreView["migrations"],
      };
    } finally {
      db.close();
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
function jobsTable(view: StoreView): string {
  return view.jobs
    .map(
      (j) => `${String(j.queue_seq).padStart(3)}  ${j.operation_id}  ${j.state.padEnd(10)} ${j.reason ?? ""}`,
    )
    .join("\n");
}
const migrationsText = (view: StoreView) =>
  view.migrations.map((m) => `${m.version}@${m.applied_at}`).join(" ");

/** D1's record: every distinct status event, in order. */
interface Op {
  operationId: string;
  status: string;
  details: { status: string; reason?: string };
}
function readRecord(file: string): Op[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Op);
}
function recordByOperation(ops: Op[]): Map<string, string[]> {
  const by = new Map<string, string[]>();
  for (const op of ops) {
    const list = by.get(op.operationId) ?? [];
    list.push(op.details.status + (op.details.reason ? `/${op.details.reason}` : ""));
    by.set(op.operationId, list);
  }
  return by;
}

// --- 1. the clean-root install ------------------------------------------------------------------------------

async function installTest(o: Options, base: string, node: string, deb: string): Promise<void> {
  section("clean root: install, config check, demo, remove, purge");
  const root = Root.fromBase(base, join(o.work, "root-install"), o.work);
  try {
    installNode(root, node);
    const version = debField(deb, "Version");
    const inRoot = copyDeb(root, deb);
    const systemd = stubSystemd(root);
    const inst = root.exec(["dpkg", "-i", inRoot]);
    check(`dpkg -i ${basename(deb)}`, inst.code === 0, inst.code === 0 ? `in ${seconds(inst.ms)}` : inst.err);
    log(indent(inst.out));
    const installCalls = systemd.calls();
    check(
      "a new install is not started (systemd stubbed: daemon-reload, no start)",
      installCalls.some((c) => /daemon-reload/.test(c)) &&
        !installCalls.some((c) => / (start|restart) /.test(c)),
      installCalls.join("; "),
    );

    const ver = root.exec(["kiosk-agent", "--version"]);
    const info = JSON.parse(readFileSync(root.path("usr/lib/kiosk-agent/build-info.json"), "utf8")) as {
      commit: string;
    };
    check(
      "kiosk-agent --version names the package version and the git commit",
      ver.code === 0 && ver.out.includes(version) && ver.out.includes(info.commit),
      ver.out.trim(),
    );
    const id = root.exec(["id", "kiosk-agent"]).out.trim();
    check(
      "system user kiosk-agent in lp, dialout, plugdev",
      /\(lp\)/.test(id) && /\(dialout\)/.test(id) && /\(plugdev\)/.test(id),
      id,
    );
    const modes = {
      "/etc/kiosk-agent": root.stat("/etc/kiosk-agent"),
      "/etc/kiosk-agent/config.json": root.stat("/etc/kiosk-agent/config.json"),
      "/var/lib/kiosk-agent": root.stat("/var/lib/kiosk-agent"),
    };
    check(
      "config root:kiosk-agent 0640 (dir 0750), data directory kiosk-agent 0700",
      modes["/etc/kiosk-agent"] === "root:kiosk-agent 750" &&
        modes["/etc/kiosk-agent/config.json"] === "root:kiosk-agent 640" &&
        modes["/var/lib/kiosk-agent"] === "kiosk-agent:kiosk-agent 700",
      JSON.stringify(modes),
    );
    check(
      "unit enabled (multi-user.target.wants), not started (no agent process)",
      root.exists("etc/systemd/system/multi-user.target.wants/kiosk-agent.service") &&
        run("pgrep", ["-f", "/usr/lib/kiosk-agent/bin/kiosk-agent.mjs"]).code !== 0,
    );
    // The unit's ExecCondition, run as systemd would: the example config is refused, an edited one not.
    const unit = readFileSync(root.path("lib/systemd/system/kiosk-agent.service"), "utf8");
    const condition = /^ExecCondition=\/bin\/sh -c '(.*)'$/m.exec(unit)?.[1] ?? "";
    const unconfigured = root.exec(["/bin/sh", "-c", condition]);
    check(
      "the unit skips the unchanged example config (ExecCondition exit 1)",
      unconfigured.code === 1 && /still the example/.test(unconfigured.err),
      unconfigured.err.trim(),
    );
    const cfg = root.exec(["kiosk-agent", "config", "check", "/etc/kiosk-agent/config.json"], { user: true });
    check(
      "kiosk-agent config check /etc/kiosk-agent/config.json (as kiosk-agent)",
      cfg.code === 0,
      (cfg.out + cfg.err).trim(),
    );
    const dpkgC = must("dpkg-deb", ["-c", deb]).out;
    check(
      "dpkg-deb -c lists no .ts source, test, tsx, esbuild, typescript, vitest",
      !/\.ts$|\/test\/|node_modules\/(tsx|esbuild|typescript|vitest|@types)\//m.test(
        dpkgC
          .split("\n")
          .map((l) => l.split(/\s+/)[5] ?? "")
          .join("\n"),
      ),
    );

    const demo = root.exec(["kiosk-agent", "demo", "--jobs", "3", "--data-dir", "/var/lib/kiosk-agent"], {
      user: true,
    });
    check(
      "kiosk-agent demo --jobs 3 (as kiosk-agent)",
      demo.code === 0 && /3 × CARD_PROD_DONE/.test(demo.out),
      `exit ${demo.code} in ${seconds(demo.ms)}`,
    );
    log(
      indent(
        demo.out
          .split("\n")
          .filter((l) => /D1 <-|summary|×/.test(l))
          .join("\n"),
      ),
    );
    if (demo.code !== 0) log(indent(demo.err));

    const data = readdirSync(root.path("var/lib/kiosk-agent")).sort();
    const storeSha = existsSync(root.path("var/lib/kiosk-agent/jobs.sqlite"))
      ? sha256(root.path("var/lib/kiosk-agent/jobs.sqlite"))
      : "";
    log(`  /var/lib/kiosk-agent: ${data.join(" ")}`);

    systemd.active(true);
    const rm = root.exec(["dpkg", "-r", "kiosk-agent"]);
    const removeCalls = systemd.calls();
    systemd.remove();
    check(
      "dpkg -r of a running service stops it first (prerm: deb-systemd-invoke stop)",
      removeCalls.some((c) => c === "deb-systemd-invoke stop kiosk-agent.service"),
      removeCalls.join("; "),
    );
    const status = root.exec(["dpkg-query", "-W", DPKG_STATUS, "kiosk-agent"]).out.trim();
    const kept =
      existsSync(root.path("var/lib/kiosk-agent/jobs.sqlite")) &&
      sha256(root.path("var/lib/kiosk-agent/jobs.sqlite")) === storeSha;
    check(
      "dpkg -r: the program is gone, the data and the config are kept",
      rm.code === 0 &&
        status === "deinstall ok config-files" &&
        !root.exists("usr/lib/kiosk-agent") &&
        !root.exists("usr/bin/kiosk-agent") &&
        kept &&
        root.exists("etc/kiosk-agent/config.json"),
      `${status}; /var/lib/kiosk-agent: ${readdirSync(root.path("var/lib/kiosk-agent")).sort().join(" ")}`,
    );
    const purge = root.exec(["dpkg", "-P", "kiosk-agent"]);
    const overrides = root.exec(["dpkg-statoverride", "--list"]).out.trim();
    check(
      "dpkg -P: the data directory, the config and the mode overrides are gone",
      purge.code === 0 &&
        !root.exists("var/lib/kiosk-agent") &&
        !root.exists("etc/kiosk-agent/config.json") &&
        !/kiosk-agent/.test(overrides) &&
        root.exec(["dpkg-query", "-W", "kiosk-agent"]).code !== 0,
      (purge.out + purge.err).trim().split("\n").join(" | "),
    );
  } finally {
    if (!o.keepWork) root.remove();
  }
}

// --- 2. the upgrade with jobs pending, and the downgrade ---------------------------------------------------------

async function upgradeTest(
  o: Options,
  base: string,
  node: string,
  oldDeb: string,
  newDeb: string,
): Promise<void> {
  section(`upgrade: ${basename(oldDeb)} → ${basename(newDeb)} with jobs pending`);
  const root = Root.fromBase(base, join(o.work, "root-upgrade"), o.work);
  const procs: Proc[] = [];
  const record = join(o.work, "d1-record.jsonl");
  rmSync(record, { force: true });
  const dataDir = root.path("var/lib/kiosk-agent");
  const configFile = root.path("etc/kiosk-agent/config.json");
  try {
    installNode(root, node);
    const oldVersion = debField(oldDeb, "Version");
    const newVersion = debField(newDeb, "Version");
    const oldIn = copyDeb(root, oldDeb);
    const newIn = copyDeb(root, newDeb);
    const inst = root.exec(["dpkg", "-i", oldIn]);
    check(`dpkg -i ${basename(oldDeb)}`, inst.code === 0, inst.code === 0 ? seconds(inst.ms) : inst.err);
    log(`  ${root.exec(["kiosk-agent", "--version"]).out.trim()}`);

    // D1: the emulator from the new package, on the host (D1 is not on the kiosk and is not upgraded).
    const hostNew = join(o.work, "new-package");
    rmSync(hostNew, { recursive: true, force: true });
    must("dpkg-deb", ["-x", newDeb, hostNew]);
    const token = randomBytes(12).toString("hex");
    const d1 = new Proc(
      "d1-emulator",
      spawn(
        process.execPath,
        [
          join(hostNew, "usr/lib/kiosk-agent/bin/kiosk-agent.mjs"),
          "d1-emulator",
          "--port",
          "0",
          "--token",
          token,
          "--station",
          STATION,
          "--sample",
          String(JOBS),
          "--record",
          record,
          "--timeout-sec",
          "600",
        ],
        { stdio: ["ignore", "pipe", "pipe"] },
      ),
      join(o.work, "d1-emulator.log"),
    );
    procs.push(d1);
    const url = /listening on (ws:\/\/\S+)/.exec(await d1.waitFor(/listening on ws:/, 20_000))![1]!;

    // The administrator's configuration: valid for both versions; the file keeps its mode and owner.
    writeFileSync(
      configFile,
      `${JSON.stringify(
        {
          station: { id: STATION },
          d1: { url, token, allowInsecure: true, resendAfterMs: 2000 },
          dataDir: "/var/lib/kiosk-agent",
          printer: { path: "/run/kiosk-sim/printer" },
          production: { defaultCollectTimeoutSec: 60 },
          shutdown: { graceSec: 3, flushSec: 5 },
          log: { level: "info" },
        },
        null,
        2,
      )}\n`,
    );
    const configSha = sha256(configFile);
    const configMode = root.stat("/etc/kiosk-agent/config.json");
    const cfg = root.exec(["kiosk-agent", "config", "check", "/etc/kiosk-agent/config.json"], { user: true });
    check(
      "the kiosk's config passes the old agent's config check",
      cfg.code === 0,
      (cfg.out + cfg.err).trim(),
    );
    root.exec(["install", "-d", "-o", "kiosk-agent", "-g", "kiosk-agent", "/run/kiosk-sim"]);

    // The old agent: the first card stays in the mouth (the cardholder never takes it), 4 jobs queue.
    const oldSim = root.start(
      "simulator-old",
      ["kiosk-agent", "simulator", "--link", "/run/kiosk-sim/printer", "--take-after-ms", "never"],
      { user: true },
    );
    procs.push(oldSim);
    await oldSim.waitFor(/virtual printer ready/, 30_000);
    const oldAgent = root.start(
      "agent-old",
      ["kiosk-agent", "run", "--config", "/etc/kiosk-agent/config.json"],
      { user: true },
    );
    procs.push(oldAgent);
    await d1.waitFor(/D1 <- .*CARD_PROD_READY/, 60_000, JOBS);
    await oldSim.waitFor(/presented in the mouth/, 60_000);
    log(
      `  old agent: ${JOBS} jobs READY, the first card presented in the mouth; SIGTERM (as systemctl stop)`,
    );
    const stopStarted = performance.now();
    const oldExit = await oldAgent.stop("SIGTERM");
    check(
      "the old agent stops cleanly on SIGTERM with a card in the mouth",
      oldExit === 0,
      `exit ${oldExit} after ${seconds(performance.now() - stopStarted)}`,
    );
    oldSim.child.stdin?.write("quit\n");
    await oldSim.stop("SIGTERM", 10_000);

    const before = readStore(dataDir);
    log("  jobs before the upgrade (the store, in queue order):");
    log(indent(jobsTable(before)));
    log(`  schema_migrations: ${migrationsText(before)}`);
    const recordBefore = readRecord(record);

    // The upgrade, unattended: keep the administrator's config (--force-confold). systemd stubbed as
    // running the service: the old prerm stops it, the new postinst starts it again.
    const systemd = stubSystemd(root);
    systemd.active(true);
    const up = root.exec(["dpkg", "--force-confdef", "--force-confold", "-i", newIn]);
    const upgradeCalls = systemd.calls();
    systemd.remove();
    const stopAt = upgradeCalls.indexOf("deb-systemd-invoke stop kiosk-agent.service");
    const startAt = upgradeCalls.indexOf("deb-systemd-invoke start kiosk-agent.service");
    check(
      "the upgrade stops the running service before unpacking and starts it after (systemd stubbed)",
      stopAt >= 0 && startAt > stopAt,
      upgradeCalls.join("; "),
    );
    check(
      `dpkg -i ${basename(newDeb)} over ${oldVersion}`,
      up.code === 0,
      up.code === 0 ? `in ${seconds(up.ms)}` : up.err,
    );
    log(indent((up.out + up.err).trim()));
    const upgradedAt = new Date().toISOString();
    check(
      "config.json untouched by the upgrade (same bytes, same owner and mode)",
      sha256(configFile) === configSha && root.stat("/etc/kiosk-agent/config.json") === configMode,
      `sha256 ${configSha.slice(0, 16)}…, ${configMode}${root.exists("etc/kiosk-agent/config.json.dpkg-dist") ? "; the new example beside it as config.json.dpkg-dist" : ""}`,
    );
    log(`  ${root.exec(["kiosk-agent", "--version"]).out.trim()}`);

    // The new agent, against the new simulated printer (a different protocol: the old one's process is gone).
    const newSim = root.start(
      "simulator-new",
      ["kiosk-agent", "simulator", "--link", "/run/kiosk-sim/printer", "--take-after-ms", "300"],
      { user: true },
    );
    procs.push(newSim);
    await newSim.waitFor(/ready|agent configuration/, 30_000);
    const newAgent = root.start(
      "agent-new",
      ["kiosk-agent", "run", "--config", "/etc/kiosk-agent/config.json"],
      { user: true },
    );
    procs.push(newAgent);
    const deadline = performance.now() + 180_000;
    const open = () => {
      const by = recordByOperation(readRecord(record));
      return (
        [...by.values()].filter((s) => !s.some((x) => TERMINAL.has(x.split("/")[0]!))).length +
        (JOBS - by.size)
      );
    };
    while (open() > 0 && performance.now() < deadline && newAgent.child.exitCode === null) await sleep(500);
    const newExit = await newAgent.stop("SIGTERM");
    check(
      "the new agent finished the queued jobs and stopped cleanly",
      open() === 0 && newExit === 0,
      `${open()} open, exit ${newExit}`,
    );
    const after = readStore(dataDir);

    // A second start of the new agent: nothing migrates again, nothing is reported again.
    const recordCount = readRecord(record).length;
    const connections = d1.count(/connected \(agent/);
    const again = root.start(
      "agent-new-2",
      ["kiosk-agent", "run", "--config", "/etc/kiosk-agent/config.json"],
      { user: true },
    );
    procs.push(again);
    await again.waitFor(/kiosk agent starting/, 30_000);
    await d1.waitFor(/connected \(agent/, 30_000, connections + 1);
    await sleep(3000);
    const againExit = await again.stop("SIGTERM");
    newSim.child.stdin?.write("quit\n");
    await newSim.stop("SIGTERM", 10_000);
    const afterAgain = readStore(dataDir);

    log("  jobs after the upgrade:");
    log(indent(jobsTable(after)));
    log(`  schema_migrations: ${migrationsText(after)}`);
    const oldMigrations = before.migrations.map((m) => m.version).join(",");
    const kept = before.migrations.every(
      (m) => after.migrations.find((a) => a.version === m.version)?.applied_at === m.applied_at,
    );
    const added = after.migrations.filter((m) => !before.migrations.some((b) => b.version === m.version));
    check(
      "migrations ran once: the old ones kept their record, the new ones applied at the upgrade, none on the next start",
      kept &&
        added.length > 0 &&
        added.every((m) => m.applied_at >= upgradedAt) &&
        migrationsText(afterAgain) === migrationsText(after) &&
        againExit === 0,
      `before ${oldMigrations}; added ${added.map((m) => m.version).join(",")}; second start exit ${againExit}`,
    );

    // D1's record: every job exactly one terminal status, across both versions.
    const ops = readRecord(record);
    const by = recordByOperation(ops);
    log("  D1's record (every distinct status event, per operation; old agent | new agent):");
    for (const [id, statuses] of by) {
      const oldPart = recordByOperation(recordBefore).get(id) ?? [];
      log(`    ${id}  ${oldPart.join(" ")} | ${statuses.slice(oldPart.length).join(" ")}`);
    }
    const terminalCounts = [...by.values()].map(
      (s) => s.filter((x) => TERMINAL.has(x.split("/")[0]!)).length,
    );
    const readyCounts = [...by.values()].map((s) => s.filter((x) => x === "CARD_PROD_READY").length);
    check(
      `every job ended exactly once (${JOBS} jobs)`,
      by.size === JOBS && terminalCounts.every((n) => n === 1) && readyCounts.every((n) => n === 1),
      `terminal per job ${terminalCounts.join(",")}`,
    );
    check("no protocol violation seen by D1", d1.count(/protocol violation/) === 0);
    check("the second start reported nothing again", readRecord(record).length === recordCount);
    check(
      "the store agrees with D1 (every job terminal in the store)",
      after.jobs.length === JOBS &&
        after.jobs.every((j) => !["READY", "PRODUCING", "PRESENTED"].includes(j.state)),
    );
    log(
      `  D1 saw: ${d1.lines
        .filter((l) => /connected \(agent/.test(l))
        .map((l) => l.trim())
        .join(" · ")}`,
    );
    writeFileSync(
      join(o.out, "upgrade-record.json"),
      `${JSON.stringify({ oldVersion, newVersion, before, after, d1: ops }, null, 2)}\n`,
    );
    await d1.stop("SIGTERM", 10_000);

    // The downgrade: the old package over the new store.
    section(`downgrade: ${basename(oldDeb)} over the schema-${after.migrations.at(-1)?.version} store`);
    const storeFiles = () =>
      readdirSync(dataDir)
        .sort()
        .map((f) => `${f}:${statSync(join(dataDir, f)).size}`)
        .join(" ");
    const storeSha = sha256(join(dataDir, "jobs.sqlite"));
    const filesBefore = storeFiles();
    const unchanged = () => sha256(join(dataDir, "jobs.sqlite")) === storeSha && storeFiles() === filesBefore;
    const down = root.exec(["dpkg", "--force-confdef", "--force-confold", "-i", oldIn]);
    const stillNew = root.exec(["dpkg-query", "-W", DPKG_VERSION_STATUS, "kiosk-agent"]).out.trim();
    check(
      "dpkg -i of the old package over it is refused by its preinst; the new one stays installed",
      down.code !== 0 &&
        /STORE_SCHEMA_NEWER/.test(down.err) &&
        stillNew === `${newVersion} install ok installed`,
      stillNew,
    );
    log(indent(down.err.trim()));
    check("the store was not rewritten (same bytes, same files)", unchanged(), filesBefore);

    const removed = root.exec(["dpkg", "-r", "kiosk-agent"]);
    const fresh = root.exec(["dpkg", "--force-confdef", "--force-confold", "-i", oldIn]);
    const half = root.exec(["dpkg-query", "-W", DPKG_VERSION_STATUS, "kiosk-agent"]).out.trim();
    check(
      "after dpkg -r, installing the old package is refused by its postinst (left unconfigured)",
      removed.code === 0 && fresh.code !== 0 && /STORE_SCHEMA_NEWER/.test(fresh.err),
      half,
    );
    log(
      indent(
        fresh.err
          .trim()
          .split("\n")
          .filter((l) => /^kiosk-agent:|^dpkg: error/.test(l))
          .join("\n"),
      ),
    );
    const start = root.exec(["kiosk-agent", "run", "--config", "/etc/kiosk-agent/config.json"], {
      user: true,
    });
    check(
      "the old agent refuses to start on it, with a clear message",
      start.code === 1 && /STORE_SCHEMA_NEWER/.test(start.err),
      start.err.trim(),
    );
    check("the store was still not rewritten", unchanged());

    // What 0.1.0 itself does without the package's guard, on a copy of the store, with D1 pushing one
    // job (evidence for docs/operations.md; not a pass/fail check).
    await probeUnguarded(o, root, hostNew, configFile, oldVersion);

    const back = root.exec(["dpkg", "--force-confdef", "--force-confold", "-i", newIn]);
    const checkStore = root.exec(["kiosk-agent", "store", "check", "--data-dir", "/var/lib/kiosk-agent"], {
      user: true,
    });
    check(
      "the way back: the new package installs again and `store check` accepts the store",
      back.code === 0 && checkStore.code === 0 && unchanged(),
      checkStore.out.trim().split("\n").join(" | "),
    );
  } finally {
    for (const p of procs)
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
    if (!o.keepWork) root.remove();
  }
}

/** Runs the old bundle directly (no launcher, so no guard) on a copy of the newer store, D1 pushing a job. */
async function probeUnguarded(
  o: Options,
  root: Root,
  hostNew: string,
  configFile: string,
  oldVersion: string,
) {
  root.exec(["cp", "-a", "/var/lib/kiosk-agent", "/var/lib/kiosk-agent-probe"]);
  const token = randomBytes(12).toString("hex");
  const d1 = new Proc(
    "d1-emulator-probe",
    spawn(
      process.execPath,
      [
        join(hostNew, "usr/lib/kiosk-agent/bin/kiosk-agent.mjs"),
        "d1-emulator",
        "--port",
        "0",
        "--token",
        token,
        "--station",
        STATION,
        "--sample",
        "1",
        "--timeout-sec",
        "60",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    ),
    join(o.work, "d1-emulator-probe.log"),
  );
  const probeDir = root.path("var/lib/kiosk-agent-probe");
  try {
    const url = /listening on (ws:\/\/\S+)/.exec(await d1.waitFor(/listening on ws:/, 20_000))![1]!;
    const config = JSON.parse(readFileSync(configFile, "utf8")) as Record<string, unknown>;
    config.dataDir = "/var/lib/kiosk-agent-probe";
    config.d1 = { url, token, allowInsecure: true };
    writeFileSync(root.path("tmp/probe.json"), JSON.stringify(config));
    root.exec(["chmod", "0644", "/tmp/probe.json"]);
    const shaBefore = sha256(join(probeDir, "jobs.sqlite"));
    const jobsBefore = readStore(probeDir).jobs.length;
    const probe = root.start(
      "probe-old-unguarded",
      ["node", "/usr/lib/kiosk-agent/dist/kiosk-agent.mjs", "run", "--config", "/tmp/probe.json"],
      { user: true },
    );
    let pushed = "no push answered";
    try {
      pushed = (await d1.waitFor(/push \S+ (accepted|refused)/, 20_000)).trim();
    } catch {
      // reported below
    }
    await sleep(1000);
    const exit = await probe.stop("SIGTERM", 30_000);
    const view = readStore(probeDir);
    const changed =
      sha256(join(probeDir, "jobs.sqlite")) !== shaBefore || existsSync(join(probeDir, "jobs.sqlite-wal"));
    log(
      `  ${oldVersion} run directly (no package guard) on a copy of the newer store: ${pushed}; exit ${exit}; ` +
        `jobs ${jobsBefore} → ${view.jobs.length}; store ${changed ? "WRITTEN" : "unchanged"}; schema_migrations ` +
        `${view.migrations.map((m) => m.version).join(",")} (it does not check the schema: the package's guard does)`,
    );
  } finally {
    await d1.stop("SIGTERM", 10_000);
    root.exec(["rm", "-rf", "/var/lib/kiosk-agent-probe", "/tmp/probe.json"]);
  }
}

// --- main ----------------------------------------------------------------------------------------------------

function parseArgs(argv: string[]): Options {
  const o: Options = {
    oldRef: "v0.1.0",
    work: "",
    keepWork: false,
    freshRoot: false,
    out: join(REPO, "artifacts/package"),
    cache: join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "kiosk-agent-package"),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--old") o.oldDeb = value();
    else if (a === "--new") o.newDeb = value();
    else if (a === "--old-ref") o.oldRef = value();
    else if (a === "--new-ref") o.newRef = value();
    else if (a === "--new-source") o.newSource = value();
    else if (a === "--node-deb") o.nodeDeb = value();
    else if (a === "--only") o.only = value() as Options["only"];
    else if (a === "--work") {
      o.work = value();
      o.keepWork = true;
    } else if (a === "--fresh-root") o.freshRoot = true;
    else if (a === "--out") o.out = value();
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error(
      "test:package needs root: it makes a Debian root (mmdebstrap), mounts in it and runs dpkg there",
    );
    return 1;
  }
  if (process.env.KIOSK_PACKAGE_TEST_NS !== "1") {
    // A mount namespace of its own: the roots' mounts go away with this process, whatever happens.
    const r = spawnSync(
      "unshare",
      [
        "--mount",
        "--propagation",
        "private",
        process.execPath,
        ...process.execArgv,
        ...process.argv.slice(1),
      ],
      { stdio: "inherit", env: { ...process.env, KIOSK_PACKAGE_TEST_NS: "1" } },
    );
    return r.status ?? 1;
  }
  const o = parseArgs(process.argv.slice(2));
  mkdirSync(o.out, { recursive: true });
  mkdirSync(o.cache, { recursive: true });
  if (!o.work) o.work = mkdtempSync(join(tmpdir(), "kiosk-agent-package-test-"));
  mkdirSync(o.work, { recursive: true });
  reportFile = join(o.out, "test-package.log");
  writeFileSync(reportFile, "");
  const started = performance.now();
  log(`kiosk-agent package test · work ${o.work} · report ${reportFile}`);
  try {
    section("packages");
    const newArgs = o.newRef ? ["--ref", o.newRef] : o.newSource ? ["--source", o.newSource] : [];
    const newDeb = o.newDeb ?? buildPackage("new", newArgs, o);
    const oldDeb =
      o.only === "install" ? undefined : (o.oldDeb ?? buildPackage("old", ["--ref", o.oldRef], o));
    for (const deb of [oldDeb, newDeb]) {
      if (!deb) continue;
      log(
        `  ${basename(deb)}: ${Math.round(statSync(deb).size / 1024)} KiB, installed ${debField(deb, "Installed-Size")} KiB; ` +
          `Depends: ${debField(deb, "Depends")}`,
      );
    }
    const node = nodeDeb(o);
    log(`Node: ${basename(node.file)} (${node.how}), sha256 ${sha256(node.file)}`);
    const include = [
      ...new Set(
        [newDeb, oldDeb, node.file]
          .filter((d): d is string => d !== undefined)
          .flatMap((d) => dependsNames(debField(d, "Depends")))
          .filter((n) => n !== "nodejs"),
      ),
    ].sort();
    const base = baseRoot(o, include);
    if (o.only !== "upgrade") await installTest(o, base, node.file, newDeb);
    if (o.only !== "install" && oldDeb) await upgradeTest(o, base, node.file, oldDeb, newDeb);
  } catch (err) {
    check("the test ran to its end", false, (err as Error).stack ?? String(err));
  } finally {
    if (!o.keepWork) rmSync(o.work, { recursive: true, force: true });
  }
  const failed = results.filter((r) => !r.ok).length;
  log("");
  log(`package test in ${seconds(performance.now() - started)}`);
  log(`${results.length - failed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

process.exitCode = await main();
