import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../agent/util/clock.js";
import type { PrinterFaultName } from "../../simulator/printer/faults.js";
import { job, type Rig, STATION, startRig } from "../support/e2e.js";
import { findSecrets, secretsOf } from "../support/log-capture.js";

/**
 * docs/reasons.md, proven: each printer fault on the first two of three cards ends those two with
 * CARD_PROD_EXCEPTION and the catalogue's reason; the third card is produced because the fault
 * cleared and the printer resumed by itself.
 */
const CASES: Array<[PrinterFaultName, string]> = [
  ["feeder-empty", "FEEDER_EMPTY"],
  ["ribbon-out", "RIBBON_OUT"],
  ["cover-open", "COVER_OPEN"],
  ["card-jam", "CARD_JAM"],
  ["mag-write", "MAG_WRITE"],
  ["mag-verify", "MAG_VERIFY"],
  ["needs-cleaning", "CLEANING_REQUIRED"],
  ["unknown-error", "PRINTER_ERROR"],
  ["timeout", "DEVICE_TIMEOUT"],
  ["garbage", "PROTOCOL_ERROR"],
  ["unplug", "DEVICE_DISCONNECTED"],
];

describe("printer faults end the affected card with the catalogue's reason, then production resumes", () => {
  let rig: Rig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  async function runThree(r: Rig, advance?: () => void): Promise<Array<{ status: string; reason?: string }>> {
    const jobs = [job(), job(), job()];
    for (const j of jobs)
      expect(await r.emulator.push(j, { station: STATION })).toMatchObject({ result: "accepted" });
    const ids = jobs.map((j) => j.operationId as string);
    const allTerminal = () => ids.every((id) => r.emulator.terminalCount(id) > 0);
    if (advance) {
      while (!allTerminal()) {
        advance();
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    } else {
      await r.emulator.waitFor(allTerminal, 15_000);
    }
    const leaks = findSecrets(r.logs.text(), jobs.flatMap(secretsOf));
    expect(leaks).toEqual([]);
    return ids.map((id) => {
      const op = r.emulator.latest(id)!;
      return { status: op.details.status, ...(op.details.reason ? { reason: op.details.reason } : {}) };
    });
  }

  it.each(CASES)("%s → %s", async (fault, reason) => {
    rig = await startRig({ config: { printer: { path: "/dev/ttyVIRT0", timeouts: { defaultMs: 300 } } } });
    rig.printer.injectFault(fault, { count: 2, replugAfterMs: 50 });
    const outcomes = await runThree(rig);
    expect(outcomes).toEqual([
      { status: "CARD_PROD_EXCEPTION", reason },
      { status: "CARD_PROD_EXCEPTION", reason },
      { status: "CARD_PROD_DONE" },
    ]);
    // Every failed card left the printer: nothing is stuck inside for the next job.
    expect(rig.printer.state.position).toBe("NONE");
    expect(rig.agent.supervisor.status.state).toBe("idle");
  });

  it("not-taken → CB_TIME after collectTimeoutSec, card retracted to the capture bin (fake clock)", async () => {
    const clock = new ManualClock(Date.now());
    rig = await startRig({ clock, config: { d1: { pingIntervalMs: 300_000 } } as never });
    rig.printer.injectFault("not-taken", { count: 2 });
    // Time moves only while a card waits in the mouth, so nothing else can time out meanwhile.
    const outcomes = await runThree(rig, () => {
      if (rig!.printer.state.position === "MOUTH") clock.advance(1000);
    });
    expect(outcomes).toEqual([
      { status: "CARD_PROD_EXCEPTION", reason: "CB_TIME" },
      { status: "CARD_PROD_EXCEPTION", reason: "CB_TIME" },
      { status: "CARD_PROD_DONE" },
    ]);
    expect(rig.printer.record.map((c) => c.outcome)).toEqual(["captured", "captured", "taken"]);
  });

  it("slow: a slow printer still produces every card", async () => {
    rig = await startRig({ latency: { commandMs: 1, printMs: 5 } });
    rig.printer.injectFault("slow", { count: 2, factor: 5 });
    const outcomes = await runThree(rig);
    expect(outcomes.map((o) => o.status)).toEqual(["CARD_PROD_DONE", "CARD_PROD_DONE", "CARD_PROD_DONE"]);
  });

  it("a printer switched off and on behind its serial line gets the kiosk settings back before the next card", async () => {
    rig = await startRig({ takeAfterMs: null });
    const settingsAtTake: string[] = [];
    rig.printer.on("card-presented", () => setImmediate(() => rig!.printer.takeCardNow()));
    rig.printer.on("card-taken", () => settingsAtTake.push(rig!.printer.state.settings.bezelAction));
    const produce = async () => {
      const j = job();
      await rig!.emulator.push(j, { station: STATION });
      await rig!.emulator.waitFor(() => rig!.emulator.terminalCount(j.operationId as string) > 0, 10_000);
      return rig!.emulator.latest(j.operationId as string)?.details.status;
    };
    expect(await produce()).toBe("CARD_PROD_DONE");
    // Off and on between cards: the serial line never dropped, so the agent saw nothing.
    rig.printer.powerCycle();
    expect(rig.printer.state.settings.bezelAction).toBe("R");
    expect(await produce()).toBe("CARD_PROD_DONE");
    // Each card was presented with the agent's settings: the printer would never take one away by itself.
    expect(settingsAtTake).toEqual(["D", "D"]);
    expect(rig.printer.state.settings).toMatchObject({
      errorMode: 2,
      ejectAfterPrint: false,
      bezelAction: "D",
    });
  });

  it("spurious OK answers to the ribbon read are retried, not taken for a missing ribbon", async () => {
    rig = await startRig();
    rig.printer.injectFault("spurious-ok", { count: 2 });
    const statusRead = await rig.agent.printer.readStatus();
    expect(statusRead.stopReasons).toEqual([]);
    const outcomes = await runThree(rig);
    expect(outcomes.map((o) => o.status)).toEqual(["CARD_PROD_DONE", "CARD_PROD_DONE", "CARD_PROD_DONE"]);
  });

  it("a printer that stays stopped beyond the hold bound fails the waiting job with its reason, no card used", async () => {
    // Long enough for the reopen after the replug, which resyncs first (the port vanished mid-command).
    rig = await startRig({ config: { production: { holdWhileStoppedSec: 1.5 } } as never });
    rig.printer.injectFault("feeder-empty", { count: 1 });
    rig.binding.unplug("/dev/ttyVIRT0");
    const j = job();
    await rig.emulator.push(j, { station: STATION });
    await rig.emulator.waitFor(() => rig!.emulator.terminalCount(j.operationId as string) > 0, 10_000);
    expect(rig.emulator.latest(j.operationId as string)?.details).toEqual({
      status: "CARD_PROD_EXCEPTION",
      reason: "DEVICE_DISCONNECTED",
    });
    expect(rig.printer.record).toHaveLength(0);
    rig.binding.replug("/dev/ttyVIRT0");
    rig.printer.clearFaults();
    const next = job();
    await rig.emulator.push(next, { station: STATION });
    await rig.emulator.waitFor(() => rig!.emulator.terminalCount(next.operationId as string) > 0, 10_000);
    expect(rig.emulator.latest(next.operationId as string)?.details.status).toBe("CARD_PROD_DONE");
  });
});
