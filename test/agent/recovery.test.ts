import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { JobState } from "../../agent/jobs/state-machine.js";
import { silentLogger } from "../../agent/log/logger.js";
import { JobStore } from "../../agent/store/job-store.js";
import { loadOrCreateKey, SealedBox } from "../../agent/store/sealed-box.js";
import { systemClock } from "../../agent/util/clock.js";
import { EvolisPrinter } from "../../drivers/printer/evolis/evolis-printer.js";
import { SerialTransport } from "../../drivers/transport/serial-transport.js";
import type { VirtualSerialBinding } from "../../simulator/serial/virtual-binding.js";
import { job, PRINTER_PATH, type Rig, startRig, statusesAtD1 } from "../support/e2e.js";

/**
 * docs/recovery.md, row by row: what a restart does with jobs a previous run left behind. The
 * previous run is staged directly: job rows in the store file, a card placed in the simulated
 * printer through the same serial path the agent uses.
 */
type CardPlace = "none" | "inside" | "mouth";

async function stage(
  dataDir: string,
  binding: VirtualSerialBinding,
  leftIn: JobState,
  card: CardPlace,
  retractReason?: string,
): Promise<string> {
  const j = job();
  const id = j.operationId as string;
  const store = new JobStore(
    join(dataDir, "jobs.sqlite"),
    new SealedBox(loadOrCreateKey(join(dataDir, "data.key"))),
    systemClock,
  );
  store.accept({ kind: "valid", operationId: id, cardId: j.cardId as string, jobJson: JSON.stringify(j) });
  if (leftIn !== "READY") store.transition(id, "READY", "PRODUCING");
  if (leftIn === "PRESENTED") store.transition(id, "PRODUCING", "PRESENTED");
  if (retractReason) store.setRetractIntent(id, retractReason);
  store.close();
  if (card !== "none") {
    const transport = new SerialTransport({ path: PRINTER_PATH, baudRate: 115200, binding });
    const printer = new EvolisPrinter({
      transport,
      link: "serial",
      clock: systemClock,
      logger: silentLogger,
    });
    await printer.open();
    await printer.insertCard();
    if (card === "mouth") await printer.presentCard();
    await printer.close();
  }
  return id;
}

describe("crash recovery at start (docs/recovery.md)", () => {
  let rig: Rig;
  afterEach(async () => {
    await rig.close();
  });

  async function restartWith(leftIn: JobState, card: CardPlace, retractReason?: string): Promise<string> {
    let id = "";
    rig = await startRig({
      takeAfterMs: null,
      prepare: async ({ dataDir, binding }) => {
        id = await stage(dataDir, binding, leftIn, card, retractReason);
      },
    });
    await rig.emulator.waitFor(() => rig.emulator.terminalCount(id) > 0, 10_000);
    return id;
  }

  it("PRODUCING with a card in the printer → card rejected, CARD_PROD_EXCEPTION / INTERRUPTED, never re-run", async () => {
    const id = await restartWith("PRODUCING", "inside");
    expect(rig.emulator.latest(id)?.details).toEqual({
      status: "CARD_PROD_EXCEPTION",
      reason: "INTERRUPTED",
    });
    expect(statusesAtD1(rig.emulator, id)).toEqual(["CARD_PROD_READY", "CARD_PROD_EXCEPTION"]);
    expect(rig.printer.record.map((c) => c.outcome)).toEqual(["rejected"]);
  });

  it("PRODUCING with no card found → CARD_PROD_EXCEPTION / INTERRUPTED, no card made", async () => {
    const id = await restartWith("PRODUCING", "none");
    expect(rig.emulator.latest(id)?.details).toEqual({
      status: "CARD_PROD_EXCEPTION",
      reason: "INTERRUPTED",
    });
    expect(rig.printer.record).toHaveLength(0);
  });

  it("PRESENTED with the card still in the mouth → retracted to the capture bin, INTERRUPTED", async () => {
    const id = await restartWith("PRESENTED", "mouth");
    expect(rig.emulator.latest(id)?.details).toEqual({
      status: "CARD_PROD_EXCEPTION",
      reason: "INTERRUPTED",
    });
    expect(rig.printer.record.map((c) => c.outcome)).toEqual(["captured"]);
  });

  it("PRESENTED with the mouth empty → the cardholder took it: CARD_PROD_DONE", async () => {
    const id = await restartWith("PRESENTED", "none");
    expect(rig.emulator.latest(id)?.details).toEqual({ status: "CARD_PROD_DONE" });
  });

  it("PRESENTED committed but the card still inside (killed before Seb) → rejected, INTERRUPTED", async () => {
    const id = await restartWith("PRESENTED", "inside");
    expect(rig.emulator.latest(id)?.details).toEqual({
      status: "CARD_PROD_EXCEPTION",
      reason: "INTERRUPTED",
    });
    expect(rig.printer.record.map((c) => c.outcome)).toEqual(["rejected"]);
  });

  it("PRESENTED with a CB_TIME retract under way, mouth empty → it was retracted: CB_TIME, not DONE", async () => {
    const id = await restartWith("PRESENTED", "none", "CB_TIME");
    expect(rig.emulator.latest(id)?.details).toEqual({ status: "CARD_PROD_EXCEPTION", reason: "CB_TIME" });
  });

  it("PRESENTED with a CB_TIME retract under way, card still in the mouth → retract finished, CB_TIME", async () => {
    const id = await restartWith("PRESENTED", "mouth", "CB_TIME");
    expect(rig.emulator.latest(id)?.details).toEqual({ status: "CARD_PROD_EXCEPTION", reason: "CB_TIME" });
    expect(rig.printer.record.map((c) => c.outcome)).toEqual(["captured"]);
  });

  it("READY → simply produced after the restart", async () => {
    let id = "";
    rig = await startRig({
      prepare: async ({ dataDir, binding }) => {
        id = await stage(dataDir, binding, "READY", "none");
      },
    });
    await rig.emulator.waitFor(() => rig.emulator.terminalCount(id) > 0, 10_000);
    expect(statusesAtD1(rig.emulator, id)).toEqual(["CARD_PROD_READY", "CARD_PROD_DONE"]);
    expect(rig.printer.record).toHaveLength(1);
  });
});
