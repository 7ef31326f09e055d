import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { shippedNodeFlags } from "../../bench/lib/shipped-node-flags.js";
import { newerStoreRefusal, readStoreSchema } from "../../deploy/debian/store-schema.mjs";
import { EXTERNAL } from "../../scripts/build.js";
import { inlinedPackages, runtimeClosure } from "../../scripts/package/stage.mjs";

/**
 * The Debian package's logic that runs without root: what goes into its node_modules, the downgrade
 * guard's schema reading, the unit it ships. The package itself is built and installed in a clean
 * root by `npm run test:package` (scripts/package/test-package.ts; slow, root: not part of npm test).
 */
const REPO = fileURLToPath(new URL("../../", import.meta.url));

describe("the package's node_modules", () => {
  const closure = runtimeClosure(REPO, EXTERNAL).map((k) => k.split("node_modules/").at(-1));

  it("holds the native addons the bundle imports and what they require", () => {
    for (const name of [
      "better-sqlite3",
      "@resvg/resvg-js",
      "@serialport/bindings-cpp",
      "node-hid",
      "@pokusew/pcsclite",
    ]) {
      expect(closure).toContain(name);
    }
    expect(closure).toContain("bindings"); // better-sqlite3 and pcsclite load their .node through it
  });

  it("holds no dev dependency, no loader and no install-time tool", () => {
    for (const name of [
      "tsx",
      "esbuild",
      "typescript",
      "vitest",
      "playwright-core",
      "prebuild-install",
      "nan",
      "node-addon-api",
      "node-gyp",
    ]) {
      expect(closure).not.toContain(name);
    }
    expect(closure.filter((n) => n?.startsWith("@types/") || n?.startsWith("@biomejs/"))).toEqual([]);
  });

  it("names the packages inlined in the bundle from esbuild's comments, nested ones by their own name", () => {
    const text =
      "// node_modules/zod/v4/core/core.js\nx\n// node_modules/@opentelemetry/api/build/a.js\n// node_modules/a/node_modules/ms/index.js\n";
    expect(inlinedPackages(text)).toEqual(["@opentelemetry/api", "ms", "zod"]);
  });
});

describe("the downgrade guard reads a store's schema without changing it", () => {
  let dir = "";
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "kiosk-schema-"));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const makeStore = (versions: number[]) => {
    const db = new Database(join(dir, "jobs.sqlite"));
    db.pragma("journal_mode = WAL");
    db.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)");
    for (const v of versions) db.prepare("INSERT INTO schema_migrations VALUES (?, ?)").run(v, "2026-01-01");
    db.close();
  };
  const sha = () =>
    createHash("sha256")
      .update(readFileSync(join(dir, "jobs.sqlite")))
      .digest("hex");
  const config = () => {
    const file = join(dir, "config.json");
    writeFileSync(file, JSON.stringify({ dataDir: dir }));
    return file;
  };

  it("refuses a store newer than the package's agent knows, with STORE_SCHEMA_NEWER", () => {
    makeStore([1, 2, 3, 4, 5, 6]);
    const before = sha();
    expect(readStoreSchema(dir).version).toBe(6);
    const refusal = newerStoreRefusal(["--config", config()], { schemaVersion: 4, version: "0.1.0" });
    expect(refusal).toMatch(
      /STORE_SCHEMA_NEWER: .*jobs\.sqlite has schema version 6, kiosk-agent 0\.1\.0 knows up to 4/,
    );
    expect(
      newerStoreRefusal([`--config=${config()}`], { schemaVersion: 6, version: "0.2.0" }),
    ).toBeUndefined();
    expect(sha()).toBe(before);
    expect(readdirSync(dir).sort()).toEqual(["config.json", "jobs.sqlite"]);
  });

  it("lets a directory without a store through", () => {
    expect(readStoreSchema(dir).version).toBeUndefined();
    expect(newerStoreRefusal(["-c", config()], { schemaVersion: 4, version: "0.1.0" })).toBeUndefined();
  });

  it("answers maintainer scripts with exit 3 for a newer store, 0 otherwise", () => {
    makeStore([1, 2, 3, 4, 5, 6]);
    const helper = join(REPO, "deploy/debian/store-schema.mjs");
    const run = (schema: string) =>
      spawnSync(
        process.execPath,
        [helper, "check", "--data-dir", dir, "--schema", schema, "--package", "0.1.0"],
        {
          encoding: "utf8",
        },
      );
    const newer = run("4");
    expect(newer.status).toBe(3);
    expect(newer.stderr).toMatch(/STORE_SCHEMA_NEWER/);
    expect(run("6").status).toBe(0);
  });
});

describe("the unit the package ships", () => {
  const unit = readFileSync(join(REPO, "deploy/kiosk-agent.service"), "utf8");

  it("starts the package's launcher with the service's node flags", () => {
    expect(unit).toMatch(
      /^ExecStart=\/usr\/bin\/node .*\/usr\/lib\/kiosk-agent\/bin\/kiosk-agent\.mjs run --config/m,
    );
    expect(shippedNodeFlags()).toEqual(["--max-semi-space-size=1"]);
  });

  it("skips an unchanged example config instead of starting on it", () => {
    const condition = /^ExecCondition=\/bin\/sh -c '(.*)'$/m.exec(unit)?.[1];
    expect(condition).toContain(
      "cmp -s /etc/kiosk-agent/config.json /usr/lib/kiosk-agent/config.example.json",
    );
  });
});
