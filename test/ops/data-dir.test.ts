import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { checkStore } from "../../agent/cli/store.js";
import { checkDataDir, KEY_FILE, MARKER_FILE, STORE_FILE, writeMarker } from "../../agent/store/data-dir.js";
import { JobStore } from "../../agent/store/job-store.js";
import { SCHEMA_VERSION } from "../../agent/store/migrations.js";
import { loadOrCreateKey, SealedBox } from "../../agent/store/sealed-box.js";
import { ManualClock } from "../../agent/util/clock.js";
import { mkdirDurably } from "../../agent/util/durable-file.js";

/**
 * Issue 16, "lost files are replaced silently": every damaged-file case refuses to start with one
 * line that names the file and what to do, exits non-zero, and never makes a fresh store (or key)
 * over the old one. The real `kiosk-agent run` is started on each damaged data directory.
 */
const BIN = fileURLToPath(new URL("../../bin/kiosk-agent.mjs", import.meta.url));

let root = "";
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "kiosk-datadir-"));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

/** What the agent does with a data directory at start, then a job accepted: a store in use. */
function storeInUse(dir: string, jobs = 1): void {
  mkdirDurably(dir);
  const state = checkDataDir(dir);
  const box = new SealedBox(loadOrCreateKey(join(dir, KEY_FILE), { create: state.fresh }));
  const store = new JobStore(join(dir, STORE_FILE), box, new ManualClock());
  writeMarker(dir, store.storeId);
  for (let i = 0; i < jobs; i++) {
    store.accept({ kind: "valid", operationId: `op-${i}`, cardId: `card-${i}`, jobJson: '{"x":1}' });
  }
  store.close();
}

function run(dir: string): { code: number | null; stderr: string; stdout: string } {
  const config = join(root, "config.json");
  writeFileSync(
    config,
    JSON.stringify({
      station: { id: "KIOSK-PS-101" },
      d1: { url: "ws://127.0.0.1:9/", token: "test-token-0123", allowInsecure: true },
      dataDir: dir,
      printer: { link: "usb", path: join(root, "no-printer") },
      health: { enabled: false },
      console: { enabled: false },
    }),
  );
  const r = spawnSync(process.execPath, [BIN, "run", "--config", config], {
    encoding: "utf8",
    timeout: 20_000,
  });
  return { code: r.status, stderr: r.stderr, stdout: r.stdout };
}

const digest = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");
const files = (dir: string) => readdirSync(dir).sort();

function expectRefusal(dir: string, code: string, names: RegExp): void {
  const before = files(dir);
  const storeBefore = existsSync(join(dir, STORE_FILE)) ? digest(join(dir, STORE_FILE)) : undefined;
  const r = run(dir);
  expect(r.code).toBe(1);
  const lines = r.stderr
    .trim()
    .split("\n")
    .filter((l) => l.startsWith("kiosk-agent"));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(names);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  // Nothing made, nothing rewritten.
  expect(files(dir)).toEqual(before);
  if (storeBefore) expect(digest(join(dir, STORE_FILE))).toBe(storeBefore);
  // `store check` tells a technician the same.
  const checks = checkStore(dir);
  expect(checks.some((c) => !c.ok && c.code === code)).toBe(true);
}

describe("a data directory that lost or mixed its files is refused, never replaced", () => {
  it("a new data directory gets its key, its store and store.id, each durably", () => {
    const dir = join(root, "data");
    storeInUse(dir, 0);
    expect(files(dir)).toEqual(expect.arrayContaining([KEY_FILE, MARKER_FILE, STORE_FILE]));
    expect(files(dir).some((f) => f.endsWith(".tmp"))).toBe(false);
    expect(checkStore(dir).every((c) => c.ok)).toBe(true);
  });

  it("jobs.sqlite deleted (its -wal and -shm left): STORE_MISSING", () => {
    const dir = join(root, "data");
    storeInUse(dir);
    unlinkSync(join(dir, STORE_FILE));
    writeFileSync(join(dir, `${STORE_FILE}-wal`), Buffer.alloc(4096, 1));
    expectRefusal(
      dir,
      "STORE_MISSING",
      /jobs\.sqlite is missing, but .*store\.id says store .* restore jobs\.sqlite/,
    );
  });

  it("jobs.sqlite truncated to 0 bytes: STORE_EMPTY", () => {
    const dir = join(root, "data");
    storeInUse(dir);
    truncateSync(join(dir, STORE_FILE), 0);
    expectRefusal(dir, "STORE_EMPTY", /jobs\.sqlite is empty \(0 bytes\)/);
  });

  it("data.key deleted beside a store of sealed jobs: KEY_MISSING, and no new key is made", () => {
    const dir = join(root, "data");
    storeInUse(dir);
    unlinkSync(join(dir, KEY_FILE));
    expectRefusal(dir, "KEY_MISSING", /data key .*data\.key is missing/);
  });

  it("another data key put in its place: KEY_MISMATCH", () => {
    const dir = join(root, "data");
    storeInUse(dir);
    const other = join(root, "other");
    storeInUse(other, 0);
    copyFileSync(join(other, KEY_FILE), join(dir, KEY_FILE));
    expectRefusal(dir, "KEY_MISMATCH", /the data key does not open .*jobs\.sqlite/);
  });

  it("a store written by a newer agent: STORE_SCHEMA_NEWER, and the store is not changed", () => {
    const dir = join(root, "data");
    storeInUse(dir);
    const db = new Database(join(dir, STORE_FILE));
    db.prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)").run(
      SCHEMA_VERSION + 1,
      "x",
    );
    db.close();
    expectRefusal(
      dir,
      "STORE_SCHEMA_NEWER",
      new RegExp(`schema version ${SCHEMA_VERSION + 1}, this agent knows up to ${SCHEMA_VERSION}`),
    );
  });

  it("a migration whose effects are there but not its record: refused whole, the store unchanged", () => {
    const dir = join(root, "data");
    storeInUse(dir);
    const db = new Database(join(dir, STORE_FILE));
    db.prepare("DELETE FROM schema_migrations WHERE version = ?").run(SCHEMA_VERSION);
    db.close();
    const r = run(dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(`schema migration ${SCHEMA_VERSION} failed \\(.*already exists\\) and was rolled back`),
    );
    const after = new Database(join(dir, STORE_FILE), { readonly: true });
    expect(after.prepare("SELECT MAX(version) AS v FROM schema_migrations").get()).toEqual({
      v: SCHEMA_VERSION - 1,
    });
    after.close();
  });

  it("a damaged page in the middle of the store: STORE_CORRUPT, and the store is not opened", () => {
    const dir = join(root, "data");
    storeInUse(dir, 3);
    const file = join(dir, STORE_FILE);
    const db = new Database(file);
    const pageSize = db.pragma("page_size", { simple: true }) as number;
    const root_ = (
      db.prepare("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").get() as { rootpage: number }
    ).rootpage;
    db.close();
    const bytes = readFileSync(file);
    bytes.fill(0xa5, (root_ - 1) * pageSize + 100, root_ * pageSize);
    writeFileSync(file, bytes);
    expectRefusal(
      dir,
      "STORE_CORRUPT",
      /jobs\.sqlite is damaged \(SQLite: .*\): run 'kiosk-agent store check', then restore/,
    );
  });

  it("another store's write-ahead log left beside this store: STORE_MISMATCH, never replayed", () => {
    const dir = join(root, "data");
    storeInUse(dir, 2);
    // Store B with commits still in its log (no checkpoint yet), as a copy taken mid-run would be.
    const other = join(root, "other");
    storeInUse(other, 0);
    const b = new Database(join(other, STORE_FILE));
    b.pragma("wal_autocheckpoint = 0");
    b.prepare(
      `INSERT INTO jobs (operation_id, card_id, state, accepted_at, updated_at, queue_seq)
       VALUES ('b-job', 'c', 'READY', 'x', 'x', 1)`,
    ).run();
    copyFileSync(join(other, `${STORE_FILE}-wal`), join(dir, `${STORE_FILE}-wal`));
    b.close();
    expectRefusal(
      dir,
      "STORE_MISMATCH",
      /jobs\.sqlite with its write-ahead log jobs\.sqlite-wal holds store .*, but .*store\.id/,
    );
    // The file itself was not touched (checked above); without the foreign log its own jobs are there.
    for (const f of [`${STORE_FILE}-wal`, `${STORE_FILE}-shm`]) rmSync(join(dir, f), { force: true });
    const mine = new Database(join(dir, STORE_FILE), { readonly: true });
    expect(mine.prepare("SELECT operation_id FROM jobs ORDER BY operation_id").all()).toEqual([
      { operation_id: "op-0" },
      { operation_id: "op-1" },
    ]);
    mine.close();
  });

  it("a first start cut off before the store held anything is simply started again", () => {
    const dir = join(root, "data");
    mkdirDurably(dir);
    writeFileSync(join(dir, STORE_FILE), ""); // created, nothing written: no store.id yet
    writeFileSync(join(dir, KEY_FILE), "", { mode: 0o600 }); // the old non-durable key: empty
    expect(checkDataDir(dir)).toMatchObject({ fresh: true });
    storeInUse(dir);
    expect(checkStore(dir).every((c) => c.ok)).toBe(true);
  });
});
