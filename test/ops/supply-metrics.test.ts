import { EventEmitter } from "node:events";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createMetrics, type MetricsSource } from "../../agent/health/metrics.js";
import type { PipelineEvents } from "../../agent/pipeline/pipeline.js";
import type { SuppliesSnapshot } from "../../agent/stock/supplies.js";
import { StoreHealth } from "../../agent/store/store-health.js";
import { ManualClock } from "../../agent/util/clock.js";
import { type OpsRig, sampleJob, startOpsRig } from "./rig.js";
import { parseExposition, type Sample, scrape, suppliesRead, valuesOf } from "./scrape.js";

/** The supply gauges of /metrics (agent/health/metrics.ts; docs/operations.md#health-and-metrics). */

const SUPPLY_METRICS = [
  "kiosk_printer_ribbon_remaining_panels",
  "kiosk_printer_ribbon_capacity_panels",
  "kiosk_stock_cards",
  "kiosk_stock_near_empty_threshold_cards",
  "kiosk_printer_feeder_empty",
  "kiosk_printer_bin_cards",
  "kiosk_printer_bin_capacity_cards",
  "kiosk_printer_bin_near_full_threshold_cards",
  "kiosk_printer_cleaning_due",
  "kiosk_printer_counter_cards_total",
  "kiosk_stock_ledger_mismatch_cards",
];

/** `metric{labels}` → value of the supply gauges only, for whole-picture comparisons. */
function supplyValues(samples: Sample[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of SUPPLY_METRICS) {
    for (const [labels, value] of valuesOf(samples, name))
      out[labels === "{}" ? name : `${name}${labels}`] = value;
  }
  return out;
}

describe("supply gauges from a snapshot", () => {
  const unknown: SuppliesSnapshot = {
    readAt: null,
    ribbon: { remaining: null, capacity: null },
    feeders: [{ feeder: "1", stock: "UNSPECIFIED", cards: null, empty: false, nearEmpty: false }],
    bins: [{ bin: "reject", cards: 0, capacity: 50, nearFull: false, full: false }],
    cleaning: "none",
    counter: { cardsInserted: null, mismatch: null },
    warnings: [],
  };
  const known: SuppliesSnapshot = {
    readAt: "2026-01-01T00:00:00.000Z",
    ribbon: { remaining: 12, capacity: 200 },
    feeders: [
      { feeder: "1", stock: "DEBIT-CLASSIC", cards: 4, empty: false, nearEmpty: true },
      { feeder: "2", stock: "PREPAID", cards: 0, empty: true, nearEmpty: false },
    ],
    bins: [
      { bin: "reject", cards: 46, capacity: 50, nearFull: true, full: false },
      { bin: "capture", cards: 20, capacity: 20, nearFull: false, full: true },
    ],
    cleaning: "required",
    counter: { cardsInserted: 1234, mismatch: -2 },
    warnings: [],
  };

  function source(read: () => SuppliesSnapshot): MetricsSource {
    return {
      store: {
        countsByState: () => ({}),
        outboxDepth: () => 0,
        health: new StoreHealth({
          clock: new ManualClock(0),
          dataDir: ".",
          minFreeBytes: 0,
          probe: () => undefined,
        }),
      },
      outbox: { stats: { sent: 0, resent: 0, acked: 0 } },
      link: { isUp: true, stats: { sessions: 1, malformed: 0 } },
      supervisor: { status: { state: "idle", since: "2026-01-01T00:00:00.000Z" } },
      pipeline: new EventEmitter<PipelineEvents>(),
      supplies: read,
      config: {
        printer: {
          feeders: [
            { id: "1", stock: "DEBIT-CLASSIC", nearEmptyAt: 10 },
            { id: "2", stock: "PREPAID", nearEmptyAt: 5 },
          ],
          bins: { reject: { capacity: 50, nearFullAt: 45 }, capture: { capacity: 20, nearFullAt: 18 } },
        },
      },
    };
  }

  it("exports what is known, leaves out what is not (never a made-up 0), and follows changes", async () => {
    let snapshot = unknown;
    const { registry, dispose } = createMetrics(
      source(() => snapshot),
      { clock: new ManualClock(), station: "S", version: "0", defaultMetrics: false },
    );
    const read = async () => supplyValues(parseExposition(await registry.metrics()));

    // Before any status read and any load: only configuration and the ledger's bin counts.
    expect(await read()).toEqual({
      'kiosk_stock_near_empty_threshold_cards{feeder="1",stock="UNSPECIFIED"}': 10,
      'kiosk_printer_bin_cards{bin="reject"}': 0,
      'kiosk_printer_bin_capacity_cards{bin="reject"}': 50,
      'kiosk_printer_bin_near_full_threshold_cards{bin="reject"}': 45,
    });
    const text = await registry.metrics();
    expect(text).toContain(
      "# HELP kiosk_printer_cleaning_due 0: no cleaning due; 1: advised (the printer asks for a cleaning soon); 2: required",
    );
    expect(text).toContain("# TYPE kiosk_printer_counter_cards_total counter");

    snapshot = known;
    expect(await read()).toEqual({
      kiosk_printer_ribbon_remaining_panels: 12,
      kiosk_printer_ribbon_capacity_panels: 200,
      'kiosk_stock_cards{feeder="1",stock="DEBIT-CLASSIC"}': 4,
      'kiosk_stock_cards{feeder="2",stock="PREPAID"}': 0,
      'kiosk_stock_near_empty_threshold_cards{feeder="1",stock="DEBIT-CLASSIC"}': 10,
      'kiosk_stock_near_empty_threshold_cards{feeder="2",stock="PREPAID"}': 5,
      'kiosk_printer_feeder_empty{feeder="1",stock="DEBIT-CLASSIC"}': 0,
      'kiosk_printer_feeder_empty{feeder="2",stock="PREPAID"}': 1,
      'kiosk_printer_bin_cards{bin="reject"}': 46,
      'kiosk_printer_bin_cards{bin="capture"}': 20,
      'kiosk_printer_bin_capacity_cards{bin="reject"}': 50,
      'kiosk_printer_bin_capacity_cards{bin="capture"}': 20,
      'kiosk_printer_bin_near_full_threshold_cards{bin="reject"}': 45,
      'kiosk_printer_bin_near_full_threshold_cards{bin="capture"}': 18,
      kiosk_printer_cleaning_due: 2,
      kiosk_printer_counter_cards_total: 1234,
      kiosk_stock_ledger_mismatch_cards: -2,
    });

    // Values that become unknown again (ribbon taken out, printer away) disappear.
    snapshot = {
      ...known,
      ribbon: { remaining: null, capacity: null },
      counter: { cardsInserted: null, mismatch: null },
    };
    const after = await read();
    for (const gone of [
      "kiosk_printer_ribbon_remaining_panels",
      "kiosk_printer_ribbon_capacity_panels",
      "kiosk_printer_counter_cards_total",
      "kiosk_stock_ledger_mismatch_cards",
    ]) {
      expect(after).not.toHaveProperty(gone);
    }
    expect(after.kiosk_printer_cleaning_due).toBe(2);

    // Cleaning: advised is 1, none is 0 once the status was read.
    snapshot = { ...known, cleaning: "advised" };
    expect((await read()).kiosk_printer_cleaning_due).toBe(1);
    snapshot = { ...known, cleaning: "none" };
    expect((await read()).kiosk_printer_cleaning_due).toBe(0);
    dispose();
  });
});

describe("supply gauges of a running agent", () => {
  let rig: OpsRig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  it("ribbon, ledger stock, bins, cleaning advised and the counter check, as the simulated printer has them", async () => {
    rig = await startOpsRig({
      config: { health: { enabled: true, port: 0 } },
      printer: { ribbonPanels: 180, ribbonCapacity: 200, cleaningAdvisedAfterCards: 0 },
    });
    const { agent } = rig;
    await suppliesRead(agent);

    // Nothing loaded yet: feeder 1 has no ledger balance, so no kiosk_stock_cards.
    expect(supplyValues(await scrape(agent))).toEqual({
      kiosk_printer_ribbon_remaining_panels: 180,
      kiosk_printer_ribbon_capacity_panels: 200,
      'kiosk_stock_near_empty_threshold_cards{feeder="1",stock="UNSPECIFIED"}': 10,
      'kiosk_printer_feeder_empty{feeder="1",stock="UNSPECIFIED"}': 0,
      'kiosk_printer_bin_cards{bin="reject"}': 0,
      'kiosk_printer_bin_capacity_cards{bin="reject"}': 50,
      'kiosk_printer_bin_near_full_threshold_cards{bin="reject"}': 45,
      kiosk_printer_cleaning_due: 1,
      kiosk_printer_counter_cards_total: 0,
      kiosk_stock_ledger_mismatch_cards: 0,
    });

    // A technician loads 50 DEBIT-CLASSIC cards into feeder 1 (which takes any stock).
    agent.store.stock.record({
      feeder: "1",
      stock: "DEBIT-CLASSIC",
      kind: "loaded",
      quantity: 50,
      operator: "t",
    });
    // The printer's counter moves by 3 cards the ledger never fed.
    agent.store.stock.recordCounter(3);
    const after = await scrape(agent);
    expect(valuesOf(after, "kiosk_stock_cards")).toEqual(
      new Map([['{feeder="1",stock="DEBIT-CLASSIC"}', 50]]),
    );
    expect(valuesOf(after, "kiosk_stock_near_empty_threshold_cards")).toEqual(
      new Map([['{feeder="1",stock="DEBIT-CLASSIC"}', 10]]),
    );
    expect(valuesOf(after, "kiosk_printer_feeder_empty")).toEqual(
      new Map([['{feeder="1",stock="DEBIT-CLASSIC"}', 0]]),
    );
    expect(valuesOf(after, "kiosk_stock_ledger_mismatch_cards").get("{}")).toBe(3);
    expect(agent.supplies().counter.mismatch).toBe(3);
  });

  it("cleaning required (2) once a print was refused for want of a cleaning; the bins follow the ledger", async () => {
    rig = await startOpsRig({ config: { health: { enabled: true, port: 0 } } });
    const { agent } = rig;
    await suppliesRead(agent);
    expect(valuesOf(await scrape(agent), "kiosk_printer_cleaning_due").get("{}")).toBe(0);

    rig.printer.injectFault("needs-cleaning", { persistent: true });
    const job = sampleJob();
    await rig.emulator.push(job);
    const r = rig;
    await rig.emulator.waitFor(() => r.emulator.terminalCount(job.operationId) > 0, 10_000);
    await vi.waitFor(
      () => {
        if (agent.supplies().cleaning !== "required") throw new Error("not yet");
      },
      { timeout: 10_000, interval: 5 },
    );
    const samples = await scrape(agent);
    expect(valuesOf(samples, "kiosk_printer_cleaning_due").get("{}")).toBe(2);
    expect(valuesOf(samples, "kiosk_agent_printer_stopped_reason").get('{reason="CLEANING_REQUIRED"}')).toBe(
      1,
    );
    const bins = new Map(agent.supplies().bins.map((b) => [`{bin="${b.bin}"}`, b.cards]));
    expect(valuesOf(samples, "kiosk_printer_bin_cards")).toEqual(bins);
  });

  it("an empty feeder is 1; the counter, never read while the printer is stopped, is not exported", async () => {
    rig = await startOpsRig({ config: { health: { enabled: true, port: 0 } }, printer: { feederCards: 0 } });
    const { agent } = rig;
    await agent.ready();
    expect(agent.supervisor.status).toMatchObject({ state: "stopped", reason: "FEEDER_EMPTY" });
    const values = supplyValues(await scrape(agent));
    expect(values['kiosk_printer_feeder_empty{feeder="1",stock="UNSPECIFIED"}']).toBe(1);
    expect(values).not.toHaveProperty("kiosk_printer_counter_cards_total");
    expect(values).not.toHaveProperty("kiosk_stock_ledger_mismatch_cards");
    expect(values).not.toHaveProperty('kiosk_stock_cards{feeder="1",stock="UNSPECIFIED"}');
  });
});
