import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it, vi } from "vitest";
import { TechnicianAudit } from "../../agent/audit/technician-audit.js";
import { auditCommand } from "../../agent/cli/audit.js";
import { makeSampleJob } from "../../agent/jobs/sample-jobs.js";
import { JobStore } from "../../agent/store/job-store.js";
import { MIGRATIONS } from "../../agent/store/migrations.js";
import { SealedBox } from "../../agent/store/sealed-box.js";
import { StockLedger } from "../../agent/store/stock-ledger.js";
import { ManualClock } from "../../agent/util/clock.js";
import { tempDir } from "./support.js";

/**
 * Issue 14, finding 6: anyone with the file could drop the append-only triggers, edit rows and put
 * the triggers back, leaving nothing to see. The rows are now a hash chain, and `kiosk-agent audit
 * verify` names the first row that was changed or removed (docs/security.md#audit-trail).
 *
 * The chain is recomputed here from its documented definition, as an outsider (an auditor, or an
 * attacker) would, without the agent's code.
 */
const COLUMNS = [
  "at",
  "event",
  "operation_id",
  "card_id",
  "issuer_request_id",
  "from_state",
  "to_state",
  "d1_status",
  "reason",
  "error_code",
  "error",
  "masked_pan",
  "request_id",
  "pushed_by",
  "detail",
];
type Row = Record<string, string | number | null>;
const outsiderHash = (prev: string, row: Row): string =>
  createHash("sha256")
    .update("kiosk-agent audit v1\n")
    .update(prev)
    .update("\n")
    .update(JSON.stringify([row.seq, ...COLUMNS.map((c) => row[c] ?? null)]))
    .digest("hex");
const ZERO = "0".repeat(64);

describe("audit trail hash chain and `audit verify`", () => {
  const cleanups: Array<() => void> = [];
  afterEach(() => {
    vi.restoreAllMocks();
    for (const c of cleanups.splice(0)) c();
  });

  const verify = async (argv: string[]) => {
    let out = "";
    let err = "";
    const code = await auditCommand(
      ["verify", ...argv],
      (t) => {
        out += t;
      },
      (t) => {
        err += `${t}\n`;
      },
    );
    return { code, out, err, json: argv.includes("--json") && code !== 2 ? JSON.parse(out) : undefined };
  };

  /** A store with rows from every writer: jobs, a refusal, ledger movements, a technician command, and a second connection (the `stock` CLI). */
  function storeWithRows(): { dir: string; rows: number } {
    const { dir, remove } = tempDir("kiosk-chain-");
    cleanups.push(remove);
    const clock = new ManualClock(Date.parse("2026-03-01T08:00:00Z"));
    const store = new JobStore(join(dir, "jobs.sqlite"), new SealedBox(Buffer.alloc(32, 7)), clock);
    try {
      for (let i = 0; i < 3; i++) {
        const job = makeSampleJob(i);
        store.accept({
          kind: "valid",
          operationId: job.operationId,
          cardId: job.cardId,
          jobJson: JSON.stringify(job),
          maskedPan: "526609******0009",
          source: { requestId: `req-${i}`, pushedBy: "wss://d1.example/ link abc#1" },
        });
        clock.advance(1_000);
        store.transition(job.operationId, "READY", "CANCELED", { reason: "ISSUER_CANCEL" });
      }
      store.auditRefusal({
        operationId: "op-refused",
        errorCode: "UNSUPPORTED_OPERATION",
        error: "operation",
      });
      store.stock.record({ feeder: "1", stock: "DEBIT", kind: "loaded", quantity: 50, operator: "ann" });
      new TechnicianAudit(store.db, clock).record(
        { command: "clean", via: "console", operator: "ann" },
        { ok: true, command: "clean", message: "cleaning cycle done" },
      );
      // `kiosk-agent stock` writes through its own connection while the agent runs.
      const other = new Database(join(dir, "jobs.sqlite"));
      other.pragma("busy_timeout = 5000");
      new StockLedger(other, clock).binEmptied("reject", 3, "bob");
      other.close();
      store.auditRefusal({ errorCode: "SHUTTING_DOWN", error: "agent stopping" });
    } finally {
      store.close();
    }
    const db = new Database(join(dir, "jobs.sqlite"), { readonly: true });
    const { n } = db.prepare("SELECT COUNT(*) AS n FROM audit_log").get() as { n: number };
    db.close();
    return { dir, rows: n };
  }

  /** What an attacker with the file does: drop the triggers, run `sql`, put the same triggers back. */
  function behindTheTriggers(dir: string, change: (db: Database.Database) => void): void {
    const db = new Database(join(dir, "jobs.sqlite"));
    try {
      const triggers = db
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'")
        .all() as Array<{ name: string; sql: string }>;
      expect(triggers.map((t) => t.name)).toEqual(
        expect.arrayContaining(["audit_log_no_update", "audit_log_no_delete"]),
      );
      for (const t of triggers) db.exec(`DROP TRIGGER ${t.name}`);
      change(db);
      for (const t of triggers) db.exec(t.sql);
      const after = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'")
        .all();
      expect(after).toHaveLength(triggers.length);
    } finally {
      db.close();
    }
  }

  const rowsOf = (dir: string): Row[] => {
    const db = new Database(join(dir, "jobs.sqlite"), { readonly: true });
    try {
      return db.prepare(`SELECT seq, ${COLUMNS.join(", ")}, hash FROM audit_log ORDER BY seq`).all() as Row[];
    } finally {
      db.close();
    }
  };

  it("every writer extends the chain, each hash follows its documented definition, and verify says intact", async () => {
    const { dir, rows } = storeWithRows();
    expect(rows).toBe(11);
    const all = rowsOf(dir);
    expect(all.map((r) => r.seq)).toEqual(Array.from({ length: rows }, (_, i) => i + 1));
    expect(new Set(all.map((r) => r.event))).toEqual(
      new Set(["ACCEPTED", "TRANSITION", "REFUSED", "STOCK", "TECHNICIAN", "BIN"]),
    );
    let prev = ZERO;
    for (const row of all) {
      expect(row.hash).toBe(outsiderHash(prev, row));
      prev = row.hash as string;
    }

    const text = await verify(["--data-dir", dir]);
    expect(text.code).toBe(0);
    expect(text.out).toContain(`audit trail intact: rows 1–${rows}, head ${prev}`);
    const json = await verify(["--data-dir", dir, "--json"]);
    expect(json.json).toMatchObject({
      ok: true,
      rows,
      firstSeq: 1,
      lastSeq: rows,
      head: prev,
      backfilledThrough: 0,
    });
    expect(json.json.problem).toBeUndefined();

    // A row written without its link is refused: every writer goes through the chain.
    const db = new Database(join(dir, "jobs.sqlite"));
    expect(() =>
      db.prepare("INSERT INTO audit_log (at, event) VALUES ('2026-03-01T09:00:00.000Z', 'REFUSED')").run(),
    ).toThrow(/hash-chained/);
    expect(() => db.prepare("UPDATE audit_log SET reason = 'X' WHERE seq = 1").run()).toThrow(/append-only/);
    expect(() => db.prepare("DELETE FROM audit_log WHERE seq = 1").run()).toThrow(/append-only/);
    db.close();
  });

  it("a dropped trigger plus an edited row: verify names the row, exit 1", async () => {
    const { dir, rows } = storeWithRows();
    behindTheTriggers(dir, (db) => {
      db.prepare("UPDATE audit_log SET reason = 'CB_TIME', to_state = 'FAILED' WHERE seq = 4").run();
      db.prepare("UPDATE audit_log SET masked_pan = '411111******1111' WHERE seq = 7").run();
    });
    const text = await verify(["--data-dir", dir]);
    expect(text.code).toBe(1);
    expect(text.out).toMatch(
      /^audit trail BROKEN at row 4: row 4 \(TRANSITION at [0-9T:.-]+Z\) does not match its hash: the row, or its hash, was changed after it was written\nrows 1–3 verify; nothing from row 4 on can be trusted/,
    );
    const json = await verify(["--data-dir", dir, "--json"]);
    expect(json.code).toBe(1);
    expect(json.json).toMatchObject({ ok: false, rows, lastSeq: 3, problem: { seq: 4, code: "CHANGED" } });
  });

  it("an edited hash alone, and a row inserted behind the triggers, are named too", async () => {
    const a = storeWithRows();
    behindTheTriggers(a.dir, (db) =>
      db.prepare(`UPDATE audit_log SET hash = '${"a".repeat(64)}' WHERE seq = 2`).run(),
    );
    expect((await verify(["--data-dir", a.dir, "--json"])).json.problem).toMatchObject({
      seq: 2,
      code: "CHANGED",
    });

    const b = storeWithRows();
    behindTheTriggers(b.dir, (db) =>
      db
        .prepare(
          "INSERT INTO audit_log (at, event, operation_id) VALUES ('2026-03-01T09:00:00.000Z', 'REFUSED', 'op-x')",
        )
        .run(),
    );
    const r = await verify(["--data-dir", b.dir]);
    expect(r.code).toBe(1);
    expect(r.out).toContain(`row ${b.rows + 1} has no hash: it was inserted without the chain`);
  });

  it("a deleted row is a gap; rows deleted at the end are found by the table's sequence", async () => {
    const mid = storeWithRows();
    behindTheTriggers(mid.dir, (db) => db.prepare("DELETE FROM audit_log WHERE seq = 5").run());
    const gap = await verify(["--data-dir", mid.dir]);
    expect(gap.code).toBe(1);
    expect(gap.out).toMatch(
      /^audit trail BROKEN at row 5: row 5 is missing: row 4 is followed at row 6 \(deleted\)/,
    );

    const two = storeWithRows();
    behindTheTriggers(two.dir, (db) => db.prepare("DELETE FROM audit_log WHERE seq IN (1, 2)").run());
    expect((await verify(["--data-dir", two.dir])).out).toMatch(
      /^audit trail BROKEN at row 1: rows 1–2 are missing/,
    );

    const tail = storeWithRows();
    behindTheTriggers(tail.dir, (db) =>
      db.prepare("DELETE FROM audit_log WHERE seq >= ?").run(tail.rows - 1),
    );
    const cut = await verify(["--data-dir", tail.dir, "--json"]);
    expect(cut.code).toBe(1);
    expect(cut.json.problem).toEqual({
      seq: tail.rows - 1,
      code: "TRUNCATED",
      message: `rows ${tail.rows - 1}–${tail.rows} are missing at the end (the table's sequence reached ${tail.rows}; the last row is ${tail.rows - 2}): deleted`,
    });
  });

  it("a chain recomputed by someone who knows the format passes on the box, and fails against the collector's copy", async () => {
    const { dir } = storeWithRows();
    const db = new Database(join(dir, "jobs.sqlite"), { readonly: true });
    const storeId = (db.prepare("SELECT store_id FROM store_meta").get() as { store_id: string }).store_id;
    db.close();
    // What the collector received while the rows were honest: one message per row, here as the
    // message text (JSON) a collector keeps.
    const copy = join(dir, "collector.log");
    writeFileSync(
      copy,
      rowsOf(dir)
        .map(
          (r) =>
            `Mar  1 08:00:00 kiosk-07 kiosk-agent[42]: ${JSON.stringify({ store: storeId, seq: r.seq, hash: r.hash })}\n`,
        )
        .join(""),
    );
    expect((await verify(["--data-dir", dir, "--against", copy])).code).toBe(0);

    // The attacker edits row 4 and recomputes every hash from there: no key stops them (by design:
    // docs/security.md says why the chain has none).
    behindTheTriggers(dir, (w) => {
      w.prepare("UPDATE audit_log SET reason = 'CB_TIME' WHERE seq = 4").run();
      let prev = ZERO;
      for (const row of w
        .prepare(`SELECT seq, ${COLUMNS.join(", ")} FROM audit_log ORDER BY seq`)
        .all() as Row[]) {
        prev = outsiderHash(prev, row);
        w.prepare("UPDATE audit_log SET hash = ? WHERE seq = ?").run(prev, row.seq);
      }
    });
    expect((await verify(["--data-dir", dir])).code).toBe(0);
    const against = await verify(["--data-dir", dir, "--against", copy]);
    expect(against.code).toBe(1);
    expect(against.out).toMatch(
      /^audit trail BROKEN at row 4: row 4 differs from the copy the collector received \(hash [0-9a-f]{16}…, the store has [0-9a-f]{16}…\): rewritten after it was forwarded/,
    );
    expect(against.out).toContain(`compared with ${copy}: 11 row(s) of store ${storeId}`);
  });

  it("migration 7 on a store that already has audit rows: hashes them, and says the chain began there", async () => {
    const { dir, remove } = tempDir("kiosk-chain-");
    cleanups.push(remove);
    const file = join(dir, "jobs.sqlite");
    const old = new Database(file);
    old.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)");
    for (const m of MIGRATIONS.filter((x) => x.version <= 6)) {
      old.exec(m.sql);
      old.prepare("INSERT INTO schema_migrations VALUES (?, '2026-01-01T00:00:00Z')").run(m.version);
    }
    for (let i = 1; i <= 4; i++) {
      old
        .prepare(
          "INSERT INTO audit_log (at, event, operation_id, to_state) VALUES (?, 'ACCEPTED', ?, 'READY')",
        )
        .run(`2026-01-0${i}T00:00:00.000Z`, `op-${i}`);
    }
    old.close();
    const clock = new ManualClock(Date.parse("2026-02-01T00:00:00Z"));
    const store = new JobStore(file, new SealedBox(Buffer.alloc(32, 7)), clock);
    store.auditRefusal({ errorCode: "SHUTTING_DOWN", error: "agent stopping" });
    store.close();
    const r = await verify(["--data-dir", dir, "--json"]);
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({ ok: true, rows: 5, backfilledThrough: 4 });
    const text = await verify(["--data-dir", dir]);
    expect(text.out).toMatch(
      /the chain began \S+ \(migration 7\): rows 1–4 were already there and are vouched for from then on/,
    );
  });

  it("usage, a missing store, a store from before the chain; --config finds the data directory", async () => {
    expect((await verify([])).code).toBe(2);
    expect((await verify(["--data-dir", "/nonexistent-kiosk-dir"])).err).toMatch(
      /no job database in \/nonexistent-kiosk-dir/,
    );
    const { dir, remove } = tempDir("kiosk-chain-");
    cleanups.push(remove);
    const old = new Database(join(dir, "jobs.sqlite"));
    old.exec(MIGRATIONS[0]!.sql);
    old.close();
    const r = await verify(["--data-dir", dir]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(
      /has no hash chain yet \(a store from before kiosk-agent's migration 7\): start the agent once/,
    );

    const { dir: good } = storeWithRows();
    const config = join(good, "agent.json");
    writeFileSync(
      config,
      JSON.stringify({
        station: { id: "K1" },
        dataDir: good,
        d1: { url: "wss://d1.example/ws", token: "t0k3n-t0k3n" },
        printer: { path: "/dev/ttyUSB0" },
      }),
    );
    expect((await verify(["--config", config])).code).toBe(0);
  });
});
