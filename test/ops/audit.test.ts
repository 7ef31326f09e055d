import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it, vi } from "vitest";
import { readAudit } from "../../agent/audit/audit-log.js";
import { auditCommand } from "../../agent/cli/audit.js";
import { makeSampleJob } from "../../agent/jobs/sample-jobs.js";
import { JobStore } from "../../agent/store/job-store.js";
import { MIGRATIONS } from "../../agent/store/migrations.js";
import { SealedBox } from "../../agent/store/sealed-box.js";
import { ManualClock } from "../../agent/util/clock.js";
import { type OpsRig, sampleJob, startOpsRig } from "./rig.js";
import { cardSecrets, scanText, tempDir } from "./support.js";

describe("audit trail", () => {
  let rig: OpsRig | undefined;
  const dirs: Array<() => void> = [];
  afterEach(async () => {
    vi.restoreAllMocks();
    await rig?.close();
    rig = undefined;
    for (const r of dirs.splice(0)) r();
  });

  const exportAudit = async (argv: string[]) => {
    let out = "";
    const err: string[] = [];
    vi.spyOn(console, "error").mockImplementation((l: string) => void err.push(l));
    const code = await auditCommand(argv, (t) => {
      out += t;
    });
    vi.restoreAllMocks();
    return { code, out, err: err.join("\n") };
  };

  it("every card: who pushed it, when, each status and reason, masked PAN; exported as CSV and JSON", async () => {
    rig = await startOpsRig();
    const r = rig;
    const good = sampleJob();
    const bad = sampleJob();
    bad.productionData.magstripe.track2 = "12345";
    const refused = sampleJob({ operation: "REISSUE" });
    await r.emulator.push(good, { requestId: "req-good" });
    await r.emulator.push(bad, { requestId: "req-bad" });
    await r.emulator.push(refused, { requestId: "req-refused" });
    await r.emulator.waitFor(() => r.emulator.terminalCount(good.operationId) > 0, 10_000);

    const json = await exportAudit(["export", "--data-dir", r.dataDir, "--format", "json"]);
    expect(json.code).toBe(0);
    const rows = JSON.parse(json.out) as Array<Record<string, unknown>>;
    const of = (id: string) => rows.filter((x) => x.operationId === id);
    const masked = `526609******${good.productionData.magstripe.track2.slice(12, 16)}`;
    expect(of(good.operationId).map((x) => [x.event, x.fromState, x.toState, x.d1Status])).toEqual([
      ["ACCEPTED", null, "READY", "CARD_PROD_READY"],
      ["TRANSITION", "READY", "PRODUCING", null],
      ["TRANSITION", "PRODUCING", "PRESENTED", null],
      ["TRANSITION", "PRESENTED", "DONE", "CARD_PROD_DONE"],
      // The card's stock-ledger movement, in the same transaction as DONE (docs/stock.md).
      ["STOCK", null, null, null],
    ]);
    expect(JSON.parse(of(good.operationId)[4]!.detail as string)).toEqual({
      kind: "issued",
      feeder: "1",
      stock: "UNSPECIFIED",
      quantity: 1,
    });
    expect(of(good.operationId)[0]).toMatchObject({
      cardId: good.cardId,
      issuerRequestId: good.issuerRequestId,
      maskedPan: masked,
      requestId: "req-good",
      pushedBy: expect.stringMatching(/^ws:\/\/127\.0\.0\.1:\d+\/ link [0-9a-f-]{36}#1$/),
    });
    expect(of(good.operationId).every((x) => x.event === "STOCK" || x.maskedPan === masked)).toBe(true);
    expect(of(bad.operationId)).toEqual([
      expect.objectContaining({
        event: "ACCEPTED",
        toState: "DATA_EXCEPTION",
        d1Status: "DATA_EXCEPTION",
        reason: "FIELD_INVALID_FORMAT",
        error: "productionData.magstripe.track2",
        requestId: "req-bad",
      }),
    ]);
    expect(of(refused.operationId)).toEqual([
      expect.objectContaining({
        event: "REFUSED",
        errorCode: "UNSUPPORTED_OPERATION",
        error: "operation",
        requestId: "req-refused",
      }),
    ]);
    for (const x of rows) expect(Date.parse(x.at as string)).not.toBeNaN();

    const csv = await exportAudit(["export", "--data-dir", r.dataDir]);
    expect(csv.code).toBe(0);
    const lines = csv.out.trimEnd().split("\r\n");
    expect(lines[0]).toBe(
      "seq,at,event,operationId,cardId,issuerRequestId,fromState,toState,d1Status,reason,errorCode,error,maskedPan,requestId,pushedBy,detail,hash",
    );
    expect(lines).toHaveLength(rows.length + 1);

    // No card data in either export.
    const secrets = cardSecrets([good, bad, refused]);
    for (const text of [json.out, csv.out]) {
      expect(secrets.long.filter((s) => text.includes(s))).toEqual([]);
      expect(scanText(text, secrets.short)).toEqual([]);
    }

    // --since: only what happened at or after that time.
    const doneAt = of(good.operationId).at(-1)!.at as string;
    const recent = JSON.parse(
      (await exportAudit(["export", "--data-dir", r.dataDir, "--format", "json", "--since", doneAt])).out,
    );
    expect(recent.every((x: { at: string }) => x.at >= doneAt)).toBe(true);
    expect(recent.length).toBeGreaterThan(0);
    expect(recent.length).toBeLessThan(rows.length);
  });

  it("is append-only: UPDATE and DELETE abort; retention of finished jobs leaves it alone", async () => {
    const { dir, remove } = tempDir("kiosk-audit-");
    dirs.push(remove);
    const clock = new ManualClock(Date.parse("2026-01-01T00:00:00Z"));
    const store = new JobStore(join(dir, "jobs.sqlite"), new SealedBox(Buffer.alloc(32, 7)), clock);
    try {
      const job = makeSampleJob(1);
      store.accept({
        kind: "valid",
        operationId: job.operationId,
        cardId: job.cardId,
        jobJson: JSON.stringify(job),
      });
      store.transition(job.operationId, "READY", "CANCELED", { reason: "ISSUER_CANCEL" });
      store.ack(store.unackedEvents().map((e) => e.eventId));
      expect(() => store.db.prepare("UPDATE audit_log SET reason = 'X'").run()).toThrow(
        /audit_log is append-only/,
      );
      expect(() => store.db.prepare("DELETE FROM audit_log").run()).toThrow(/audit_log is append-only/);

      clock.advance(100 * 86_400_000);
      expect(store.purgeFinishedBefore(new Date(clock.now()).toISOString())).toBe(1);
      expect(store.get(job.operationId)).toBeUndefined();
      const rows = readAudit(dir, { operationId: job.operationId });
      expect(rows.map((x) => [x.event, x.toState, x.reason])).toEqual([
        ["ACCEPTED", "READY", null],
        ["TRANSITION", "CANCELED", "ISSUER_CANCEL"],
      ]);
    } finally {
      store.close();
    }
  });

  it("is written in the state change's transaction: no audit row, no state change", () => {
    const { dir, remove } = tempDir("kiosk-audit-");
    dirs.push(remove);
    const store = new JobStore(
      join(dir, "jobs.sqlite"),
      new SealedBox(Buffer.alloc(32, 7)),
      new ManualClock(0),
    );
    try {
      const job = makeSampleJob(2);
      store.accept({
        kind: "valid",
        operationId: job.operationId,
        cardId: job.cardId,
        jobJson: JSON.stringify(job),
      });
      store.db.exec(
        "CREATE TEMP TRIGGER fail_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END",
      );
      expect(() => store.transition(job.operationId, "READY", "PRODUCING")).toThrow(/disk full/);
      expect(store.get(job.operationId)?.state).toBe("READY");
      expect(store.eventStatuses(job.operationId)).toEqual(["CARD_PROD_READY"]);
    } finally {
      store.close();
    }
  });

  it("migration 2 on an existing database: one BACKFILL row per job already there", () => {
    const { dir, remove } = tempDir("kiosk-audit-");
    dirs.push(remove);
    const file = join(dir, "jobs.sqlite");
    const old = new Database(file);
    old.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)");
    old.exec(MIGRATIONS[0]!.sql);
    old.prepare("INSERT INTO schema_migrations VALUES (1, '2026-01-01T00:00:00Z')").run();
    old
      .prepare(
        `INSERT INTO jobs (operation_id, card_id, state, masked_pan, accepted_at, updated_at, queue_seq)
       VALUES ('op-1', 'card-1', 'DONE', '526609******0009', '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z', 1)`,
      )
      .run();
    old.close();
    const store = new JobStore(file, new SealedBox(Buffer.alloc(32, 7)), new ManualClock(0));
    store.close();
    expect(readAudit(dir)).toEqual([
      expect.objectContaining({
        event: "BACKFILL",
        operationId: "op-1",
        toState: "DONE",
        maskedPan: "526609******0009",
      }),
    ]);
  });

  it("usage and missing database", async () => {
    expect((await exportAudit(["export"])).code).toBe(2);
    expect((await exportAudit(["export", "--data-dir", "/tmp", "--format", "xml"])).code).toBe(2);
    expect((await exportAudit(["export", "--data-dir", "/tmp", "--since", "yesterday"])).code).toBe(2);
    const missing = await exportAudit(["export", "--data-dir", "/nonexistent-kiosk-dir"]);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/no job database in \/nonexistent-kiosk-dir/);
  });
});
