import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { JobState } from "../../agent/jobs/state-machine.js";
import { CARD_MOVEMENT_TABLE, type CardFeed } from "../../agent/stock/card-movement.js";
import { JobStore } from "../../agent/store/job-store.js";
import { loadOrCreateKey, SealedBox } from "../../agent/store/sealed-box.js";
import { SPOIL_REASONS, StockError, StockLedger } from "../../agent/store/stock-ledger.js";
import { ManualClock } from "../../agent/util/clock.js";

const JOB_JSON = JSON.stringify({ productionData: { cardStock: "DEBIT-CLASSIC" } });
const ROUTE = { feeder: "1", ledgerStock: "DEBIT-CLASSIC" };

describe("StockLedger", () => {
  let dir: string;
  let store: JobStore;
  let clock: ManualClock;
  let ledger: StockLedger;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "stock-ledger-"));
    clock = new ManualClock();
    store = new JobStore(
      join(dir, "jobs.sqlite"),
      new SealedBox(loadOrCreateKey(join(dir, "data.key"))),
      clock,
    );
    ledger = store.stock;
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const tick = () => clock.advance(1000);
  const load = (cards: number, feeder = "1", stock = "DEBIT-CLASSIC") =>
    ledger.record({ feeder, stock, kind: "loaded", quantity: cards, operator: "alice" });
  const auditStock = (event = "STOCK") =>
    store.db
      .prepare(
        "SELECT operation_id AS operationId, reason, detail FROM audit_log WHERE event = ? ORDER BY seq",
      )
      .all(event) as Array<{ operationId: string | null; reason: string | null; detail: string }>;

  /** A job walked to `from` with its card routed and fed as `feed`, then moved to `to`. */
  const endJob = (id: string, feed: CardFeed | null, from: JobState, to: JobState) => {
    store.accept({
      kind: "valid",
      operationId: id,
      cardId: `card-${id}`,
      jobJson: JOB_JSON,
      cardStock: "DEBIT-CLASSIC",
    });
    store.transition(id, "READY", "PRODUCING", {}, ROUTE);
    store.markCardFed(id, feed);
    if (from === "PRESENTED") store.transition(id, "PRODUCING", "PRESENTED");
    tick();
    store.transition(id, from, to, to === "FAILED" ? { reason: "CARD_JAM", errorCode: "CARD_JAM" } : {});
  };

  it("is append-only: UPDATE and DELETE of a movement abort", () => {
    load(100);
    expect(() => store.db.prepare("UPDATE stock_ledger SET quantity = 1").run()).toThrow(/append-only/);
    expect(() => store.db.prepare("DELETE FROM stock_ledger").run()).toThrow(/append-only/);
    expect(ledger.balances()).toEqual([{ feeder: "1", stock: "DEBIT-CLASSIC", cards: 100 }]);
  });

  it("every row of the card-movement table is written by JobStore.transition, once, with its audit row", () => {
    load(100);
    CARD_MOVEMENT_TABLE.forEach((row, i) => {
      const id = `op-${i}`;
      endJob(id, row.feed, row.from, row.to);
      expect(ledger.movementOf(id)).toMatchObject({
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        kind: row.movement.kind,
        reason: row.movement.kind === "spoiled" ? row.movement.reason : null,
        quantity: 1,
        operationId: id,
      });
      const audit = auditStock().filter((a) => a.operationId === id);
      expect(audit).toHaveLength(1);
      expect(audit[0]!.reason).toBe(row.movement.kind === "spoiled" ? row.movement.reason : null);
      expect(JSON.parse(audit[0]!.detail)).toEqual({
        kind: row.movement.kind,
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        quantity: 1,
      });
    });
    const report = ledger.report();
    expect(report.feeders).toHaveLength(1);
    const line = report.feeders[0]!;
    // Issued: taken from the mouth, or found gone from it; rejected: after a failed step, or
    // never having reached the mouth.
    expect(line.issued).toBe(2);
    expect(line.spoiled).toEqual({
      REJECTED_AFTER_PRINT: 2,
      CAPTURED_NOT_TAKEN: 1,
      MISFEED: 1,
      TEST_CARD: 0,
      CANCELED_IN_PRODUCTION: 1,
    });
    expect(line.expectedClosing).toBe(100 - CARD_MOVEMENT_TABLE.length);
  });

  it("no card left the feeder, or the job did not end: no movement", () => {
    endJob("no-feed", null, "PRODUCING", "FAILED");
    store.accept({ kind: "valid", operationId: "open", cardId: "c", jobJson: JOB_JSON });
    store.transition("open", "READY", "PRODUCING", {}, ROUTE);
    store.markCardFed("open", "fed");
    store.transition("open", "PRODUCING", "PRESENTED");
    endJob("undecided", "unknown", "PRODUCING", "FAILED");
    expect(ledger.movementOf("no-feed")).toBeUndefined();
    expect(ledger.movementOf("open")).toBeUndefined();
    expect(ledger.movementOf("undecided")).toBeUndefined();
    expect(auditStock()).toEqual([]);
  });

  it("counts a job's card once, whoever records it again", () => {
    load(10);
    endJob("op-once", "presented", "PRESENTED", "DONE");
    tick();
    // Crash recovery or the supervisor recording the same card: refused quietly, nothing written.
    expect(
      ledger.record({
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        kind: "spoiled",
        reason: "MISFEED",
        operationId: "op-once",
      }),
    ).toBe(false);
    expect(
      ledger.record({ feeder: "1", stock: "DEBIT-CLASSIC", kind: "issued", operationId: "op-once" }),
    ).toBe(false);
    expect(ledger.movementOf("op-once")).toMatchObject({ kind: "issued", reason: null });
    expect(auditStock().filter((a) => a.operationId === "op-once")).toHaveLength(1);
    expect(ledger.balances()).toEqual([{ feeder: "1", stock: "DEBIT-CLASSIC", cards: 9 }]);
    expect(ledger.fedTotal()).toBe(1);
  });

  it("refuses a malformed movement with BAD_MOVEMENT and writes nothing", () => {
    const bad = [
      { feeder: "1", stock: "S", kind: "loaded" as const, quantity: 5 }, // no operator
      { feeder: "1", stock: "S", kind: "loaded" as const, quantity: 0, operator: "alice" },
      { feeder: "1", stock: "S", kind: "returned" as const, quantity: 2.5, operator: "alice" },
      { feeder: "1", stock: "S", kind: "issued" as const, reason: "MISFEED" as const },
      { feeder: "1", stock: "S", kind: "spoiled" as const },
      { feeder: "1", stock: "S", kind: "adjusted" as const, quantity: -2, operator: "alice" }, // no note
      { feeder: "1", stock: "S", kind: "adjusted" as const, quantity: 0, operator: "alice", note: "n" },
      { feeder: " ", stock: "S", kind: "loaded" as const, quantity: 1, operator: "alice" },
      { feeder: "1", stock: "S", kind: "eaten" as never, quantity: 1, operator: "alice" },
    ];
    for (const m of bad) {
      expect(() => ledger.record(m), JSON.stringify(m)).toThrow(
        expect.objectContaining({ name: "StockError", code: "BAD_MOVEMENT" }),
      );
    }
    expect(store.db.prepare("SELECT COUNT(*) AS n FROM stock_ledger").get()).toEqual({ n: 0 });
    expect(auditStock()).toEqual([]);
  });

  it("holds every adjustment above the threshold to dual control, whoever the caller is", () => {
    load(100);
    const adjust = (cards: number, secondOperator?: string) =>
      ledger.adjust({
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        cards,
        operator: "Alice",
        note: "counted after a jam",
        ...(secondOperator !== undefined ? { secondOperator } : {}),
      });
    expect(ledger.dualControlAbove).toBe(10);
    adjust(-10); // at the threshold: one operator is enough
    for (const [cards, second] of [
      [-11, undefined],
      [25, undefined],
      [-25, "Alice"],
      [-25, "  alice "],
    ] as const) {
      expect(() => adjust(cards, second)).toThrow(
        expect.objectContaining({ name: "StockError", code: "DUAL_CONTROL_REQUIRED" }),
      );
    }
    // The same rule through record(): no way around it.
    expect(() =>
      ledger.record({
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        kind: "adjusted",
        quantity: 11,
        operator: "a",
        note: "n",
      }),
    ).toThrow(StockError);
    expect(() => adjust(-25)).toThrow(
      "an adjustment of 25 cards is above the dual-control threshold (10): a second operator must confirm it",
    );
    adjust(-25, "Bob");
    const rows = store.db
      .prepare(
        "SELECT quantity, operator, second_operator AS second FROM stock_ledger WHERE kind = 'adjusted'",
      )
      .all();
    expect(rows).toEqual([
      { quantity: -10, operator: "Alice", second: null },
      { quantity: -25, operator: "Alice", second: "Bob" },
    ]);
    expect(JSON.parse(auditStock().at(-1)!.detail)).toEqual({
      kind: "adjusted",
      feeder: "1",
      stock: "DEBIT-CLASSIC",
      quantity: -25,
      operator: "Alice",
      secondOperator: "Bob",
      note: "counted after a jam",
    });
    expect(ledger.balances()[0]!.cards).toBe(65);

    // The threshold is the configuration's: a ledger opened with another one holds to it.
    const strict = new StockLedger(store.db, clock, { dualControlAbove: 2 });
    expect(() =>
      strict.adjust({ feeder: "1", stock: "DEBIT-CLASSIC", cards: 3, operator: "Alice", note: "n" }),
    ).toThrow(/threshold \(2\)/);
    expect(() => new StockLedger(store.db, clock, { dualControlAbove: -1 })).toThrow(StockError);
  });

  it("report: every spoil reason listed, opening balances before --since, the period's movements", () => {
    load(50);
    tick();
    endJob("a", "presented", "PRESENTED", "DONE");
    endJob("b", "misfed", "PRODUCING", "FAILED");
    tick();
    const since = new Date(clock.now()).toISOString();
    tick();
    endJob("c", "presented", "PRESENTED", "DONE");
    endJob("d", "presented", "PRESENTED", "FAILED");
    ledger.record({
      feeder: "1",
      stock: "DEBIT-CLASSIC",
      kind: "spoiled",
      reason: "TEST_CARD",
      operator: "tech",
    });
    ledger.record({ feeder: "1", stock: "DEBIT-CLASSIC", kind: "returned", quantity: 5, operator: "alice" });
    ledger.adjust({ feeder: "1", stock: "DEBIT-CLASSIC", cards: 2, operator: "alice", note: "found two" });
    load(20, "2", "CREDIT-GOLD");

    const all = ledger.report();
    expect(all.since).toBeNull();
    expect(all.feeders.map((f) => [f.feeder, f.stock, f.opening, f.expectedClosing])).toEqual([
      ["1", "DEBIT-CLASSIC", 0, 50 - 5 - 5 + 2],
      ["2", "CREDIT-GOLD", 0, 20],
    ]);

    const period = ledger.report({ since });
    expect(period.since).toBe(since);
    expect(period.feeders[0]).toEqual({
      feeder: "1",
      stock: "DEBIT-CLASSIC",
      opening: 48,
      loaded: 0,
      issued: 1,
      spoiled: {
        REJECTED_AFTER_PRINT: 0,
        CAPTURED_NOT_TAKEN: 1,
        MISFEED: 0,
        TEST_CARD: 1,
        CANCELED_IN_PRODUCTION: 0,
      },
      returned: 5,
      adjusted: 2,
      expectedClosing: 42,
      // Two lines: the printer-wide counter belongs to neither.
      printerCounterDelta: null,
    });
    expect(Object.keys(period.feeders[0]!.spoiled)).toEqual([...SPOIL_REASONS]);
    expect(period.feeders[1]).toMatchObject({ feeder: "2", opening: 0, loaded: 20, expectedClosing: 20 });
    expect(period.printer).toEqual({ counterDelta: null, ledgerFed: 3, mismatch: null });

    // A line with nothing before or in the period is left out; one named in `include` is kept.
    tick();
    const later = new Date(clock.now()).toISOString();
    tick();
    ledger.record({ feeder: "1", stock: "DEBIT-CLASSIC", kind: "returned", quantity: 42, operator: "alice" });
    ledger.record({ feeder: "2", stock: "CREDIT-GOLD", kind: "returned", quantity: 20, operator: "alice" });
    tick();
    const after = new Date(clock.now()).toISOString();
    expect(ledger.report({ since: after }).feeders).toEqual([]);
    expect(
      ledger
        .report({ since: after, include: [{ feeder: "3", stock: "PREPAID" }] })
        .feeders.map((f) => f.feeder),
    ).toEqual(["3"]);
    expect(ledger.report({ since: later }).feeders.map((f) => f.expectedClosing)).toEqual([0, 0]);
  });

  it("report: the printer counter per line only for the one line of a single-feeder printer", () => {
    load(10);
    ledger.recordCounter(500);
    endJob("a", "presented", "PRESENTED", "DONE");
    ledger.recordCounter(501);
    const one = ledger.report();
    expect(one.feeders[0]!.printerCounterDelta).toBe(1);
    expect(one.printer).toEqual({ counterDelta: 1, ledgerFed: 1, mismatch: 0 });
    // The configuration says several feeders: never per line.
    expect(ledger.report({ singleFeeder: false }).feeders[0]!.printerCounterDelta).toBeNull();
  });

  it("counterCheck compares deltas; an acknowledgement rebases the live check, not the reports", () => {
    expect(ledger.counterCheck()).toBeUndefined();
    expect(ledger.acknowledgeCounter("tech", "nothing to acknowledge")).toBe(false);
    load(20);
    ledger.recordCounter(1000);
    ledger.recordCounter(1000); // unchanged: not stored again
    expect(store.db.prepare("SELECT COUNT(*) AS n FROM printer_counter_log").get()).toEqual({ n: 1 });
    tick();
    const since = new Date(clock.now()).toISOString();
    endJob("a", "presented", "PRESENTED", "DONE");
    ledger.recordCounter(1001);
    expect(ledger.counterCheck()).toEqual({ counterDelta: 1, ledgerFed: 1, mismatch: 0 });
    // A test card printed from the printer's own menu: the printer counted it, the ledger did not.
    tick();
    ledger.recordCounter(1002);
    expect(ledger.counterCheck()).toEqual({ counterDelta: 2, ledgerFed: 1, mismatch: 1 });
    expect(ledger.lastCounter()).toEqual({ cardsInserted: 1002, ledgerFed: 1 });

    // A card fed after the last reading, then the acknowledgement: the base is the reading as read,
    // so that card is not turned into a difference once the next reading comes.
    endJob("b", "presented", "PRESENTED", "DONE");
    expect(() => ledger.acknowledgeCounter("tech", " ")).toThrow(
      expect.objectContaining({ code: "BAD_MOVEMENT" }),
    );
    expect(() => ledger.acknowledgeCounter("", "a note")).toThrow(StockError);
    tick();
    expect(ledger.acknowledgeCounter("tech", "test card from the printer menu")).toBe(true);
    expect(ledger.counterCheck()).toEqual({ counterDelta: 0, ledgerFed: 0, mismatch: 0 });
    tick();
    ledger.recordCounter(1003);
    expect(ledger.counterCheck()).toEqual({ counterDelta: 1, ledgerFed: 1, mismatch: 0 });
    const ack = auditStock().find((a) => JSON.parse(a.detail).kind === "counter-acknowledged");
    expect(JSON.parse(ack!.detail)).toEqual({
      kind: "counter-acknowledged",
      mismatch: 1,
      operator: "tech",
      note: "test card from the printer menu",
    });

    // Reports over a period that includes the acknowledged difference still show it.
    expect(ledger.report().printer).toEqual({ counterDelta: 3, ledgerFed: 2, mismatch: 1 });
    expect(ledger.report({ since }).printer).toEqual({ counterDelta: 3, ledgerFed: 2, mismatch: 1 });
    const afterAck = new Date(clock.now() - 500).toISOString();
    expect(ledger.report({ since: afterAck }).printer).toEqual({
      counterDelta: 1,
      ledgerFed: 1,
      mismatch: 0,
    });
  });

  it("a bin's count starts again when it is emptied, and the emptying is audited", () => {
    load(10);
    endJob("a", "fed", "PRODUCING", "FAILED");
    endJob("b", "presented", "PRESENTED", "FAILED");
    expect(ledger.spoiledSinceEmptied("reject")).toMatchObject({
      REJECTED_AFTER_PRINT: 1,
      CAPTURED_NOT_TAKEN: 1,
    });
    tick();
    ledger.binEmptied("reject", 2, "alice");
    expect(Object.values(ledger.spoiledSinceEmptied("reject"))).toEqual([0, 0, 0, 0, 0]);
    tick();
    endJob("c", "misfed", "PRODUCING", "FAILED");
    expect(ledger.spoiledSinceEmptied("reject")).toMatchObject({ MISFEED: 1, REJECTED_AFTER_PRINT: 0 });
    // The capture bin was never emptied: it counts from the start.
    expect(ledger.spoiledSinceEmptied("capture")).toMatchObject({ REJECTED_AFTER_PRINT: 1, MISFEED: 1 });
    expect(auditStock("BIN").map((a) => JSON.parse(a.detail))).toEqual([
      { bin: "reject", cards: 2, operator: "alice" },
    ]);
    expect(() => ledger.binEmptied("reject", -1, "alice")).toThrow(StockError);
    expect(() => ledger.binEmptied("reject", 1, " ")).toThrow(StockError);
  });
});
