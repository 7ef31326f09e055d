import { spawnSync } from "node:child_process";
import {
  copyFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { bundleFreshness } from "../../bin/entry-freshness.mjs";
import { build } from "../../scripts/build.js";

/**
 * The shipped entry: bin/kiosk-agent.mjs runs dist/kiosk-agent.mjs (scripts/build.ts) while it is
 * not older than the sources, else the TypeScript under tsx; and the bundle itself works from
 * wherever the checkout lies. Everything happens in temporary copies: the repository's own dist/ is
 * neither read nor written (it may be absent or stale while sources are edited).
 */
const REPO = fileURLToPath(new URL("../../", import.meta.url));
const T0 = new Date("2026-01-01T00:00:00Z");
const at = (seconds: number) => new Date(T0.getTime() + seconds * 1000);

let dir = "";
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "kiosk-entry-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(root: string, rel: string, text: string): void {
  mkdirSync(dirname(join(root, rel)), { recursive: true });
  writeFileSync(join(root, rel), text);
}

/** Every file and directory under root (root included) gets `when`, deepest first. */
function setAllTimes(root: string, when: Date): void {
  for (const name of readdirSync(root)) {
    const path = join(root, name);
    const s = statSync(path, { throwIfNoEntry: false });
    if (!s || name === "node_modules") continue;
    if (s.isDirectory()) setAllTimes(path, when);
    else utimesSync(path, when, when);
  }
  utimesSync(root, when, when);
}

/** A checkout in miniature: sources and package files at T0, the bundle built 10 s later. */
function miniCheckout(root: string): void {
  write(root, "package.json", '{ "type": "module" }\n');
  write(root, "package-lock.json", "{}\n");
  write(root, "agent/cli/main.ts", 'console.log(["from source", ...process.argv.slice(2)].join(" "));\n');
  write(root, "drivers/printer/codec.ts", "export {};\n");
  write(root, "simulator/pty/pty_bridge.py", "\n");
  write(
    root,
    "dist/kiosk-agent.mjs",
    'const maps = "sourceMapsEnabled" in process ? process.sourceMapsEnabled : true;\n' +
      'console.log(["from dist", "maps=" + maps, ...process.argv.slice(2)].join(" "));\n',
  );
  setAllTimes(root, T0);
  utimesSync(join(root, "dist/kiosk-agent.mjs"), at(10), at(10));
}

describe("bundleFreshness (bin/entry-freshness.mjs)", () => {
  beforeEach(() => miniCheckout(dir));

  it("fresh when the bundle is not older than any source; equal times count as fresh", () => {
    expect(bundleFreshness(dir)).toMatchObject({ state: "fresh", bundle: join(dir, "dist/kiosk-agent.mjs") });
    utimesSync(join(dir, "agent/cli/main.ts"), at(10), at(10));
    expect(bundleFreshness(dir).state).toBe("fresh");
  });

  it("missing without dist/kiosk-agent.mjs", () => {
    unlinkSync(join(dir, "dist/kiosk-agent.mjs"));
    expect(bundleFreshness(dir)).toMatchObject({
      state: "missing",
      reason: "dist/kiosk-agent.mjs is missing",
    });
  });

  it.each([
    ["a source file edited", "drivers/printer/codec.ts"],
    ["a file read at run time", "simulator/pty/pty_bridge.py"],
    ["a source deleted or renamed (its directory's mtime)", "agent/cli"],
    ["the dependencies changed", "package-lock.json"],
    ["package.json", "package.json"],
  ])("stale when %s is newer: %s", (_what, rel) => {
    utimesSync(join(dir, rel), at(11), at(11));
    expect(bundleFreshness(dir)).toEqual({
      state: "stale",
      bundle: join(dir, "dist/kiosk-agent.mjs"),
      newer: rel,
      reason: `dist/kiosk-agent.mjs is older than ${rel}`,
    });
  });
});

describe("bin/kiosk-agent.mjs picks its entry", () => {
  /** The real bin in a miniature checkout whose node_modules (tsx) is the repository's. */
  function run(env: Record<string, string | undefined>) {
    mkdirSync(join(dir, "bin"));
    for (const f of ["kiosk-agent.mjs", "entry-freshness.mjs"]) {
      copyFileSync(join(REPO, "bin", f), join(dir, "bin", f));
    }
    symlinkSync(join(REPO, "node_modules"), join(dir, "node_modules"));
    const childEnv: NodeJS.ProcessEnv = { ...process.env };
    delete childEnv["VITEST"];
    delete childEnv["KIOSK_AGENT_FROM_SOURCE"];
    for (const [k, v] of Object.entries(env)) if (v !== undefined) childEnv[k] = v;
    const r = spawnSync(process.execPath, [join(dir, "bin/kiosk-agent.mjs"), "config", "check", "x.json"], {
      cwd: dir,
      env: childEnv,
      encoding: "utf8",
    });
    return { status: r.status, stdout: r.stdout.trim(), stderr: r.stderr };
  }

  beforeEach(() => miniCheckout(dir));

  it("the bundle, with source maps on, when it is fresh; arguments passed through; nothing on stderr", () => {
    expect(run({})).toEqual({ status: 0, stdout: "from dist maps=true config check x.json", stderr: "" });
  });

  it("the sources under tsx when a source is newer, saying so in one stderr line", () => {
    utimesSync(join(dir, "agent/cli/main.ts"), at(11), at(11));
    const r = run({});
    expect(r.stdout).toBe("from source config check x.json");
    expect(r.stderr).toBe(
      "kiosk-agent: dist/kiosk-agent.mjs is older than agent/cli/main.ts; running the TypeScript " +
        "sources under tsx (slower start, more memory). Run `npm run build`.\n",
    );
    expect(r.status).toBe(0);
  });

  it("the sources when the bundle is missing; the notice is left out under vitest", () => {
    unlinkSync(join(dir, "dist/kiosk-agent.mjs"));
    expect(run({ VITEST: "true" })).toEqual({
      status: 0,
      stdout: "from source config check x.json",
      stderr: "",
    });
  });

  it("the sources, silently, with KIOSK_AGENT_FROM_SOURCE=1 even when the bundle is fresh", () => {
    expect(run({ KIOSK_AGENT_FROM_SOURCE: "1" })).toEqual({
      status: 0,
      stdout: "from source config check x.json",
      stderr: "",
    });
  });
});

describe("the bundle (scripts/build.ts)", () => {
  it("runs `config check` from a moved checkout and maps its code back to the .ts files", async () => {
    // A copy of what the bundle is built from and reads at run time, built there, then moved.
    const built = join(dir, "built");
    for (const part of ["agent", "drivers", "simulator", "assets", "package.json", "tsconfig.json"]) {
      cpSync(join(REPO, part), join(built, part), { recursive: true });
    }
    symlinkSync(join(REPO, "node_modules"), join(built, "node_modules"));
    await build({ entry: join(built, "agent/cli/main.ts"), outfile: join(built, "dist/kiosk-agent.mjs") });
    const moved = join(dir, "moved");
    renameSync(built, moved);

    const bundle = join(moved, "dist/kiosk-agent.mjs");
    const text = readFileSync(bundle, "utf8");
    // import.meta.url of each source is its place relative to the bundle, never the build's path.
    expect(text).toContain('new URL("../agent/version.ts", import.meta.url).href');
    expect(text).not.toContain(pathToFileURL(built).href);
    expect(text).not.toContain(`"${built}`);
    expect(text.trimEnd().endsWith("//# sourceMappingURL=kiosk-agent.mjs.map")).toBe(true);
    // Native addons stay imports from node_modules; pure-JS packages (pino, zod…) are inlined.
    expect(text).toMatch(/^import Database from "better-sqlite3";$/m);
    expect(text).not.toMatch(/^import .* from "(pino|zod|ws)";$/m);

    // The build's directory is gone: package.json (read as the bundle loads), the schema, zod… all
    // resolve from where the bundle is now.
    const check = spawnSync(
      process.execPath,
      [bundle, "config", "check", join(REPO, "docs/config.example.json")],
      { encoding: "utf8" },
    );
    expect({ status: check.status, stderr: check.stderr }).toEqual({ status: 0, stderr: "" });
    expect(check.stdout).toContain("config.example.json: valid");

    // Source maps as bin switches them on: a position in the bundle names the .ts file and line; the
    // inlined packages' code is not mapped (the map stays small: Node decodes it on the first stack).
    const map = JSON.parse(readFileSync(`${bundle}.map`, "utf8")) as { sources: string[] };
    expect(map.sources).toContain("../agent/cli/main.ts");
    expect(map.sources.filter((s) => s.includes("node_modules"))).toEqual([]);
    const lines = text.split("\n");
    // (Inside the lazily initialised module of a command, esbuild writes the assignment indented.)
    const line = lines.findIndex((l) => /^\s*(var )?AGENT_VERSION = /.test(l));
    const inWs = lines.indexOf("// node_modules/ws/lib/websocket.js") + 1;
    expect(line).toBeGreaterThan(0);
    expect(inWs).toBeGreaterThan(0);
    const probe = spawnSync(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `import { findSourceMap } from "node:module";
         process.setSourceMapsEnabled(true);
         process.argv = [process.argv[0], "kiosk-agent", "--help"];
         const log = console.log; console.log = () => {};
         await import(${JSON.stringify(pathToFileURL(bundle).href)});
         console.log = log;
         const map = findSourceMap(${JSON.stringify(bundle)});
         console.log(JSON.stringify([map?.findEntry(${line}, 4), map?.findEntry(${inWs}, 4)]));`,
      ],
      { encoding: "utf8" },
    );
    expect(probe.stderr).toBe("");
    const [own, inPackage] = JSON.parse(probe.stdout) as Array<{ originalSource?: string }>;
    expect(own).toMatchObject({
      originalSource: pathToFileURL(join(moved, "agent/version.ts")).href,
      originalLine: 3,
    });
    expect(inPackage?.originalSource).toBeUndefined();
  }, 60_000);
});
