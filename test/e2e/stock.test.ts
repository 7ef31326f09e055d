import { afterEach, describe, expect, it } from "vitest";
import { SPOIL_REASONS } from "../../agent/store/stock-ledger.js";
import { ManualClock } from "../../agent/util/clock.js";
import { type OpsRig, STATION, sampleJob, startOpsRig } from "../ops/rig.js";
import { job, type Rig, startRig, until } from "../support/e2e.js";

/**
 * Issue 13 end to end: the real agent (ws, SQLite, SerialPortStream) on the simulated Evolis with
 * one or two feeders. Where each card went (the simulator's record) against what the ledger says.
 */
const DEBIT = "DEBIT-CLASSIC";
const CREDIT = "CREDIT-GOLD";
const TWO_FEEDERS = [
  { id: "1", stock: DEBIT },
  { id: "2", stock: CREDIT },
];

let rig: OpsRig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

function jobFor(stock: string) {
  const j = sampleJob();
  j.productionData.cardStock = stock;
  return j;
}

async function pushAll(r: OpsRig, jobs: Array<Record<string, unknown>>): Promise<string[]> {
  for (const j of jobs)
    expect(await r.emulator.push(j, { station: STATION })).toMatchObject({ result: "accepted" });
  return jobs.map((j) => j.operationId as string);
}

const ended = (r: OpsRig, ids: string[]) => () => ids.every((id) => r.emulator.terminalCount(id) > 0);
const outcome = (r: OpsRig, id: string) => {
  const d = r.emulator.latest(id)!.details;
  return d.reason ? `${d.status}/${d.reason}` : d.status;
};

function load(r: OpsRig, feeder: string, stock: string, cards: number) {
  r.agent.store.stock.record({ feeder, stock, kind: "loaded", quantity: cards, operator: "test" });
}

describe("card stock routing: productionData.cardStock picks the feeder", () => {
  it("two stocks in two feeders: each job's card comes from its stock's feeder, and the ledger counts it there", async () => {
    rig = await startOpsRig({
      config: { printer: { feeders: TWO_FEEDERS } },
      printer: { feeders: { "1": 10, "2": 10 } },
    });
    load(rig, "1", DEBIT, 10);
    load(rig, "2", CREDIT, 10);
    const jobs = [jobFor(DEBIT), jobFor(CREDIT), jobFor(CREDIT), jobFor(DEBIT)];
    const ids = await pushAll(rig, jobs);
    await rig.emulator.waitFor(ended(rig, ids), 15_000);
    expect(ids.map((id) => outcome(rig!, id))).toEqual(Array(4).fill("CARD_PROD_DONE"));
    expect(rig.printer.record.map((c) => c.feeder)).toEqual(["1", "2", "2", "1"]);
    expect(rig.printer.state.feeders).toEqual({ "1": 8, "2": 8 });
    // Each job's movement names the feeder and stock its card came from.
    for (const [i, id] of ids.entries()) {
      expect(rig.agent.store.stock.movementOf(id)).toMatchObject({
        kind: "issued",
        feeder: i === 1 || i === 2 ? "2" : "1",
        stock: i === 1 || i === 2 ? CREDIT : DEBIT,
      });
    }
    expect(rig.agent.store.stock.balances()).toEqual([
      { feeder: "1", stock: DEBIT, cards: 8 },
      { feeder: "2", stock: CREDIT, cards: 8 },
    ]);
  });

  it("emptying one feeder holds only its stock's jobs; they are produced once it is refilled", async () => {
    rig = await startOpsRig({
      config: { printer: { feeders: TWO_FEEDERS } },
      printer: { feeders: { "1": 10, "2": 0 } },
    });
    await rig.agent.ready();
    const jobs = [jobFor(CREDIT), jobFor(DEBIT), jobFor(CREDIT), jobFor(DEBIT)];
    const ids = await pushAll(rig, jobs);
    const debit = [ids[1]!, ids[3]!];
    const credit = [ids[0]!, ids[2]!];
    await rig.emulator.waitFor(ended(rig, debit), 15_000);
    // The debit jobs pushed after the held credit job went first; the credit jobs wait, no card used.
    expect(debit.map((id) => outcome(rig!, id))).toEqual(["CARD_PROD_DONE", "CARD_PROD_DONE"]);
    expect(credit.map((id) => rig!.agent.store.get(id)?.state)).toEqual(["READY", "READY"]);
    expect(rig.printer.record.map((c) => c.feeder)).toEqual(["1", "1"]);
    expect(rig.agent.supervisor.status.state).toBe("idle");
    const supplies = rig.agent.supplies();
    expect(supplies.feeders.find((f) => f.feeder === "2")).toMatchObject({ stock: CREDIT, empty: true });
    expect(supplies.warnings).toContainEqual(
      expect.objectContaining({ keyword: "FEEDER_EMPTY", feeder: "2" }),
    );

    // The technician loads feeder 2; the next supply read sees it and the held jobs go.
    rig.printer.loadFeeder(5, "2");
    load(rig, "2", CREDIT, 5);
    await rig.emulator.waitFor(ended(rig, credit), 15_000);
    expect(credit.map((id) => outcome(rig!, id))).toEqual(["CARD_PROD_DONE", "CARD_PROD_DONE"]);
    expect(rig.printer.record.map((c) => c.feeder)).toEqual(["1", "1", "2", "2"]);
    expect(rig.agent.supplies().warnings.map((w) => w.keyword)).not.toContain("FEEDER_EMPTY");
  });

  it("a held job fails FEEDER_EMPTY after the hold bound, and no card is used for it", async () => {
    rig = await startOpsRig({
      config: { printer: { feeders: TWO_FEEDERS }, production: { holdWhileStoppedSec: 0.3 } },
      printer: { feeders: { "1": 10, "2": 0 } },
    });
    await rig.agent.ready();
    const [held] = await pushAll(rig, [jobFor(CREDIT)]);
    await rig.emulator.waitFor(ended(rig, [held!]), 10_000);
    expect(rig.emulator.latest(held!)?.details).toEqual({
      status: "CARD_PROD_EXCEPTION",
      reason: "FEEDER_EMPTY",
    });
    expect(rig.printer.record).toHaveLength(0);
    expect(rig.agent.store.stock.movementOf(held!)).toBeUndefined();
    // The other stock was never held.
    const [debit] = await pushAll(rig, [jobFor(DEBIT)]);
    await rig.emulator.waitFor(ended(rig, [debit!]), 10_000);
    expect(outcome(rig, debit!)).toBe("CARD_PROD_DONE");
  });

  it("a stock no feeder holds is CARD_PROD_EXCEPTION / STOCK_NOT_LOADED, with no card used", async () => {
    rig = await startOpsRig({
      config: { printer: { feeders: TWO_FEEDERS } },
      printer: { feeders: { "1": 5, "2": 5 } },
    });
    const [id] = await pushAll(rig, [jobFor("PLATINUM-METAL")]);
    await rig.emulator.waitFor(ended(rig, [id!]), 10_000);
    expect(rig.emulator.latest(id!)).toMatchObject({
      status: "FAILED",
      errorCode: "STOCK_NOT_LOADED",
      details: { status: "CARD_PROD_EXCEPTION", reason: "STOCK_NOT_LOADED" },
    });
    expect(rig.printer.record).toHaveLength(0);
  });
});

describe("the ledger follows every card", () => {
  let e2e: Rig | undefined;
  afterEach(async () => {
    await e2e?.close();
    e2e = undefined;
  });

  it("jams, a card nobody takes and issued cards: issued + spoiled by reason + remaining = loaded, reasons match where each card went", async () => {
    const clock = new ManualClock(Date.now());
    e2e = await startRig({
      clock,
      config: { printer: { feeders: [{ id: "1", stock: DEBIT }] }, d1: { pingIntervalMs: 300_000 } } as never,
    });
    const r = e2e;
    r.agent.store.stock.record({
      feeder: "1",
      stock: DEBIT,
      kind: "loaded",
      quantity: 100,
      operator: "test",
    });
    r.printer.injectFault("card-jam", { count: 2 });
    r.printer.injectFault("not-taken", { count: 1 });
    const jobs = Array.from({ length: 5 }, () => job());
    for (const j of jobs)
      expect(await r.emulator.push(j, { station: STATION })).toMatchObject({ result: "accepted" });
    const ids = jobs.map((j) => j.operationId as string);
    // Time moves only while a card waits in the mouth, so nothing else can time out meanwhile.
    while (!ids.every((id) => r.emulator.terminalCount(id) > 0)) {
      if (r.printer.state.position === "MOUTH") clock.advance(1000);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    expect(ids.map((id) => r.emulator.latest(id)!.details)).toEqual([
      { status: "CARD_PROD_EXCEPTION", reason: "CARD_JAM" },
      { status: "CARD_PROD_EXCEPTION", reason: "CARD_JAM" },
      { status: "CARD_PROD_EXCEPTION", reason: "CB_TIME" },
      { status: "CARD_PROD_DONE" },
      { status: "CARD_PROD_DONE" },
    ]);
    expect(r.printer.record.map((c) => c.outcome)).toEqual([
      "rejected",
      "rejected",
      "captured",
      "taken",
      "taken",
    ]);
    // Where each card went, job by job.
    expect(ids.map((id) => r.agent.store.stock.movementOf(id)).map((m) => m?.reason ?? m?.kind)).toEqual([
      "MISFEED",
      "MISFEED",
      "CAPTURED_NOT_TAKEN",
      "issued",
      "issued",
    ]);
    const report = r.agent.store.stock.report();
    expect(report.feeders).toHaveLength(1);
    const line = report.feeders[0]!;
    expect(line).toMatchObject({ feeder: "1", stock: DEBIT, opening: 0, loaded: 100, issued: 2 });
    expect(line.spoiled).toMatchObject({ MISFEED: 2, CAPTURED_NOT_TAKEN: 1 });
    const spoiled = SPOIL_REASONS.reduce((n, reason) => n + (line.spoiled[reason] ?? 0), 0);
    expect(line.issued + spoiled + line.expectedClosing).toBe(line.loaded);
    expect(line.expectedClosing).toBe(r.printer.state.feeders["1"]);
    // The printer's own counter agrees once it was read after the last card.
    await until(() => r.agent.store.stock.lastCounter()?.cardsInserted === 5, 5_000, "counter read");
    expect(r.agent.store.stock.counterCheck()).toMatchObject({ counterDelta: 5, ledgerFed: 5, mismatch: 0 });
  });

  it("a card fed behind the agent's back shows as a counter mismatch, reported and never corrected", async () => {
    e2e = await startRig({ config: { printer: { feeders: [{ id: "1", stock: DEBIT }] } } as never });
    const r = e2e;
    r.agent.store.stock.record({
      feeder: "1",
      stock: DEBIT,
      kind: "loaded",
      quantity: 100,
      operator: "test",
    });
    const produce = async () => {
      const j = job();
      await r.emulator.push(j, { station: STATION });
      await r.emulator.waitFor(() => r.emulator.terminalCount(j.operationId as string) > 0, 10_000);
    };
    await produce();
    await until(() => r.agent.store.stock.lastCounter()?.cardsInserted === 1, 5_000, "counter read");
    // Someone prints the printer's own test card at the printer itself, outside the agent.
    r.printer.receive(Buffer.from("\x1bSt\r"));
    await until(
      () => r.printer.state.position === "NONE" && r.printer.record.length === 2,
      5_000,
      "test card taken",
    );
    await produce();
    await until(() => r.agent.store.stock.lastCounter()?.cardsInserted === 3, 5_000, "counter read");
    // Read at start (0) and after each card: 3 cards inserted, 2 fed by the agent.
    expect(r.agent.store.stock.counterCheck()).toMatchObject({ counterDelta: 3, ledgerFed: 2, mismatch: 1 });
    expect(r.agent.supplies().warnings).toContainEqual(
      expect.objectContaining({ keyword: "LEDGER_MISMATCH" }),
    );
    // The ledger itself is untouched: two issued cards, nothing invented for the stray one.
    expect(r.agent.store.stock.report().feeders[0]).toMatchObject({ issued: 2, expectedClosing: 98 });
    expect(r.agent.store.stock.report().printer).toMatchObject({
      counterDelta: 3,
      ledgerFed: 2,
      mismatch: 1,
    });
    // A technician who found the cause acknowledges it, by name and with a note: the live check
    // counts from there, the report over the period still shows it.
    expect(
      r.agent.store.stock.acknowledgeCounter("A. Tech", "test card printed from the printer's panel"),
    ).toBe(true);
    expect(r.agent.store.stock.counterCheck()).toMatchObject({ mismatch: 0 });
    expect(r.agent.supplies().warnings.map((w) => w.keyword)).not.toContain("LEDGER_MISMATCH");
    expect(r.agent.store.stock.report().printer).toMatchObject({ mismatch: 1 });
  });
});
