import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { JobStore, StoreError } from "../../agent/store/job-store.js";
import { loadOrCreateKey, SealedBox } from "../../agent/store/sealed-box.js";
import { ManualClock } from "../../agent/util/clock.js";

const JOB_JSON = JSON.stringify({
  productionData: { magstripe: { track2: "5266092201416174=2804201000000000000" } },
});

describe("JobStore", () => {
  let dir: string;
  let store: JobStore;
  const clock = new ManualClock();

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "store-test-"));
    store = new JobStore(
      join(dir, "jobs.sqlite"),
      new SealedBox(loadOrCreateKey(join(dir, "data.key"))),
      clock,
    );
  });
  afterEach(() => store.close());

  const accept = (id: string) =>
    store.accept({
      kind: "valid",
      operationId: id,
      cardId: "c-1",
      jobJson: JOB_JSON,
      maskedPan: "526609******6174",
    });

  it("accepts a job with its READY event in one step, and a duplicate changes nothing", () => {
    const first = accept("op-1");
    expect(first).toMatchObject({ duplicate: false, state: "READY" });
    expect(first.event?.operation).toMatchObject({
      operationId: "op-1",
      operation: "PRODUCE",
      status: "PENDING",
      cardId: "c-1",
      details: { status: "CARD_PROD_READY" },
    });
    expect(accept("op-1")).toEqual({ duplicate: true, state: "READY" });
    expect(store.eventStatuses("op-1")).toEqual(["CARD_PROD_READY"]);
  });

  it("walks the happy path and sets endTime only on the terminal event", () => {
    accept("op-2");
    expect(store.transition("op-2", "READY", "PRODUCING")).toBeNull();
    expect(store.transition("op-2", "PRODUCING", "PRESENTED")).toBeNull();
    clock.advance(5000);
    const done = store.transition("op-2", "PRESENTED", "DONE")!;
    expect(done.operation).toMatchObject({ status: "SUCCESSFUL", details: { status: "CARD_PROD_DONE" } });
    expect(done.operation.endTime).toBe(new Date(clock.now()).toISOString());
    expect(done.operation.startTime).toBe(store.get("op-2")!.acceptedAt);
    expect(store.eventStatuses("op-2")).toEqual(["CARD_PROD_READY", "CARD_PROD_DONE"]);
  });

  it("refuses illegal and stale transitions without writing anything", () => {
    accept("op-3");
    expect(() => store.transition("op-3", "READY", "DONE")).toThrow(StoreError);
    expect(() => store.transition("op-3", "PRODUCING", "PRESENTED")).toThrow(/is READY, not PRODUCING/);
    expect(() => store.transition("nope", "READY", "PRODUCING")).toThrow(/not in the store/);
    expect(store.eventStatuses("op-3")).toEqual(["CARD_PROD_READY"]);
  });

  it("keeps production data sealed at rest and purges it when the job ends", () => {
    accept("op-4");
    expect(store.loadJobJson("op-4")).toBe(JOB_JSON);
    store.db.pragma("wal_checkpoint(TRUNCATE)");
    const bytes = readFileSync(join(dir, "jobs.sqlite"));
    expect(bytes.includes(Buffer.from("5266092201416174"))).toBe(false);
    store.transition("op-4", "READY", "FAILED", {
      reason: "FEEDER_EMPTY",
      errorCode: "FEEDER_EMPTY",
      error: "insert",
    });
    expect(() => store.loadJobJson("op-4")).toThrow(/no production data/);
    expect(store.latestOperation("op-4")).toMatchObject({
      status: "FAILED",
      details: { status: "CARD_PROD_EXCEPTION", reason: "FEEDER_EMPTY" },
      errorCode: "FEEDER_EMPTY",
      error: "insert",
    });
    expect(statSync(join(dir, "data.key")).mode & 0o777).toBe(0o600);
  });

  it("records a DATA_EXCEPTION with reason, errorCode and field path", () => {
    const r = store.accept({
      kind: "data-exception",
      operationId: "op-5",
      cardId: "c-5",
      details: { reason: "MISSING_SATELLITEUID", errorCode: "FIELD_MISSING", error: "persoStation" },
    });
    expect(r.event?.operation).toMatchObject({
      status: "FAILED",
      details: { status: "DATA_EXCEPTION", reason: "MISSING_SATELLITEUID" },
      errorCode: "FIELD_MISSING",
      error: "persoStation",
    });
    expect(r.event?.operation.endTime).toBeDefined();
  });

  it("keeps acknowledged events for audit and returns unacked ones in order", () => {
    accept("a");
    accept("b");
    store.transition("a", "READY", "CANCELED", { reason: "ISSUER_CANCEL" });
    const pending = store.unackedEvents();
    expect(pending.map((e) => `${e.operationId}:${e.d1Status}`)).toEqual([
      "a:CARD_PROD_READY",
      "b:CARD_PROD_READY",
      "a:CARD_PROD_CANCELED",
    ]);
    expect(store.ack([pending[0]!.eventId, pending[0]!.eventId])).toBe(1);
    expect(store.unackedEvents()).toHaveLength(2);
    expect(store.outboxDepth()).toBe(2);
    expect(store.eventStatuses("a")).toEqual(["CARD_PROD_READY", "CARD_PROD_CANCELED"]);
  });

  it("a batch of accepts commits once; a state change commits an open batch first", () => {
    store.beginBatch();
    accept("op-b1");
    accept("op-b2");
    // The printer must not move for a job that is not on disk: the transition commits the batch.
    store.transition("op-b1", "READY", "PRODUCING");
    expect(store.db.inTransaction).toBe(false);
    store.endBatch();
    const reopened = new JobStore(
      join(dir, "jobs.sqlite"),
      new SealedBox(loadOrCreateKey(join(dir, "data.key"))),
      clock,
    );
    expect(reopened.get("op-b1")?.state).toBe("PRODUCING");
    expect(reopened.get("op-b2")?.state).toBe("READY");
    reopened.close();
  });

  it("a batch that a state change failed to commit is reported to whoever opened it", () => {
    store.beginBatch();
    accept("op-f1");
    const exec = store.db.exec.bind(store.db);
    store.db.exec = (sql: string) => {
      if (sql === "COMMIT") throw new Error("SQLITE_IOERR: disk I/O error");
      return exec(sql);
    };
    expect(() => store.transition("op-f1", "READY", "PRODUCING")).toThrow(/disk I\/O error/);
    store.db.exec = exec;
    // The pushes of the batch must not be answered "accepted": endBatch says it did not commit.
    expect(() => store.endBatch()).toThrow(/disk I\/O error/);
    expect(store.get("op-f1")).toBeUndefined();
    // The next batch is a fresh start.
    store.beginBatch();
    accept("op-f2");
    expect(() => store.endBatch()).not.toThrow();
    expect(store.get("op-f2")?.state).toBe("READY");
  });

  it("sent/ack bookkeeping commits without its own fsync, and every other write stays synchronous=FULL", () => {
    const event = accept("op-k").event!;
    store.markSent([event.eventId]);
    expect(store.db.pragma("synchronous", { simple: true })).toBe(2); // FULL
    expect(store.ack([event.eventId])).toBe(1);
    expect(store.db.pragma("synchronous", { simple: true })).toBe(2);
    expect(store.unackedEvents(0, 10)).toEqual([]);
  });

  it("survives a reopen: the accepted job is on disk", () => {
    accept("op-6");
    store.close();
    store = new JobStore(
      join(dir, "jobs.sqlite"),
      new SealedBox(loadOrCreateKey(join(dir, "data.key"))),
      clock,
    );
    expect(store.nextReady()?.operationId).toBe("op-6");
  });

  it("retention deletes finished, fully acknowledged jobs only", () => {
    accept("old-acked");
    accept("old-unacked");
    accept("open");
    store.transition("old-acked", "READY", "CANCELED");
    store.transition("old-unacked", "READY", "CANCELED");
    store.ack(
      store
        .unackedEvents()
        .filter((e) => e.operationId === "old-acked")
        .map((e) => e.eventId),
    );
    clock.advance(1000);
    expect(store.purgeFinishedBefore(new Date(clock.now()).toISOString())).toBe(1);
    expect(store.get("old-acked")).toBeUndefined();
    expect(store.get("old-unacked")?.state).toBe("CANCELED");
    expect(store.get("open")?.state).toBe("READY");
  });
});
