import { afterEach, describe, expect, it } from "vitest";
import { statusCommand } from "../../agent/cli/status.js";
import type { ConsoleSnapshot } from "../../agent/console/types.js";
import { job, STATION, until } from "../support/e2e.js";
import { CONSOLE_TOKEN, type ConsoleRig, http, startConsoleRig } from "./support.js";

/**
 * Issue 13: ribbon low, one stock's feeder empty and cleaning due are device state, shown in the
 * console's status API (which the page renders) and in `kiosk-agent status`, from the supervisor's
 * supply reads of the simulated Evolis (Rrt;count, Sk;f, Rlr;r).
 */
const FEEDERS = [
  { id: "1", stock: "DEBIT-CLASSIC" },
  { id: "2", stock: "CREDIT-GOLD" },
];

async function snapshot(c: ConsoleRig): Promise<ConsoleSnapshot> {
  const r = await http(`${c.url}/api/status`, { headers: { Authorization: `Bearer ${CONSOLE_TOKEN}` } });
  expect(r.status).toBe(200);
  return JSON.parse(r.body) as ConsoleSnapshot;
}

async function status(argv: string[]) {
  const out: string[] = [];
  const code = await statusCommand(argv, { out: (l) => out.push(l), err: (l) => out.push(l), env: {} });
  return { code, out: out.join("\n") };
}

describe("supplies as device state: console API and kiosk-agent status", () => {
  let c: ConsoleRig | undefined;
  afterEach(async () => {
    await c?.close();
    c = undefined;
  });

  it("ribbon low, feeder 2 (one stock) empty and cleaning due: warnings that keep production going", async () => {
    c = await startConsoleRig({
      rig: {
        config: { printer: { feeders: FEEDERS } } as never,
        printer: {
          feeders: { "1": 50, "2": 0 },
          ribbonPanels: 15,
          ribbonCapacity: 500,
          cleaningAdvisedAfterCards: 0,
        },
      },
    });
    const { rig } = c;
    await rig.agent.ready();
    rig.agent.store.stock.record({
      feeder: "1",
      stock: "DEBIT-CLASSIC",
      kind: "loaded",
      quantity: 50,
      operator: "t",
    });
    await until(() => rig.agent.supervisor.supplies.status !== undefined, 5_000, "first supply read");

    const s = await snapshot(c);
    expect(s.supplies).toMatchObject({
      ribbon: { remaining: 15, capacity: 500 },
      cleaning: "advised",
      feeders: [
        { feeder: "1", stock: "DEBIT-CLASSIC", cards: 50, empty: false },
        { feeder: "2", stock: "CREDIT-GOLD", cards: null, empty: true },
      ],
      bins: [{ bin: "reject", cards: 0, capacity: 50 }],
    });
    expect(s.supplies.warnings.map((w) => w.keyword).sort()).toEqual([
      "CLEANING_ADVISED",
      "FEEDER_EMPTY",
      "RIBBON_LOW",
    ]);
    expect(s.supplies.warnings.find((w) => w.keyword === "FEEDER_EMPTY")).toMatchObject({ feeder: "2" });
    // Warnings do not stop the printer: a debit card is still produced.
    expect(s.devices[0]).toMatchObject({ state: "idle" });
    const j = job();
    await rig.emulator.push(j, { station: STATION });
    await rig.emulator.waitFor(() => rig.emulator.terminalCount(j.operationId as string) > 0, 10_000);
    expect(rig.emulator.latest(j.operationId as string)?.details.status).toBe("CARD_PROD_DONE");
    // The day's stock report is in the snapshot too.
    const after = await snapshot(c);
    expect(after.stock.feeders).toContainEqual(
      expect.objectContaining({
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        loaded: 50,
        issued: 1,
        expectedClosing: 49,
      }),
    );

    const r = await status(["--url", c.url, "--token", CONSOLE_TOKEN]);
    expect(r.code).toBe(3); // supply warnings need attention
    expect(r.out).toMatch(/^SUPPLIES +ribbon 1\d\/500 panels · cleaning advised · reject box 0\/50/m);
    expect(r.out).toMatch(/^ {2}2 +CREDIT-GOLD +- +EMPTY$/m);
    expect(r.out).toMatch(/^WARNING +RIBBON_LOW: ribbon low/m);
    expect(r.out).toMatch(/^WARNING +FEEDER_EMPTY: feeder 2 \(CREDIT-GOLD\) is empty/m);
    expect(r.out).toMatch(/^WARNING +CLEANING_ADVISED/m);
  });

  it("a print refused NEED CLEANING is an error: the printer stops with CLEANING_REQUIRED, shown everywhere", async () => {
    c = await startConsoleRig();
    const { rig } = c;
    await rig.agent.ready();
    rig.printer.injectFault("needs-cleaning", { persistent: true });
    const j = job();
    await rig.emulator.push(j, { station: STATION });
    await rig.emulator.waitFor(() => rig.emulator.terminalCount(j.operationId as string) > 0, 10_000);
    expect(rig.emulator.latest(j.operationId as string)?.details).toEqual({
      status: "CARD_PROD_EXCEPTION",
      reason: "CLEANING_REQUIRED",
    });
    await until(() => rig.agent.supervisor.status.state === "stopped", 5_000, "stopped");
    const s = await snapshot(c);
    expect(s.devices[0]).toMatchObject({ state: "stopped", reason: "CLEANING_REQUIRED" });
    expect(s.supplies.cleaning).toBe("required");
    expect(s.supplies.warnings.map((w) => w.keyword)).toContain("CLEANING_REQUIRED");
    const r = await status(["--url", c.url, "--token", CONSOLE_TOKEN]);
    expect(r.code).toBe(3);
    expect(r.out).toMatch(/^printer +stopped +CLEANING_REQUIRED/m);
    expect(r.out).toMatch(/cleaning required/);
    // The technician runs a cleaning (here: the printer's own counter reset, as Scp does).
    rig.printer.clearFaults();
    rig.printer.clean();
    await until(() => rig.agent.supervisor.status.state === "idle", 5_000, "idle again");
  });
});
