import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeSampleJob } from "../../agent/jobs/sample-jobs.js";
import { type ChipRig, startChipRig } from "../../simulator/chip/chip-rig.js";
import { PcscUnavailableError } from "../../simulator/chip/pcsc-stack.js";
import { VirtualCard } from "../../simulator/chip/virtual-card.js";
import { type Rig, STATION, startRig, statusesAtD1, until } from "../support/e2e.js";
import { captureLogs, findSecrets, secretsOf } from "../support/log-capture.js";

/**
 * The chip step through the real PC/SC stack: agent → PcscApduTransport → @pokusew/pcsclite →
 * pcscd → vsmartcard-vpcd → TCP → the simulator's VpcdCard playing the card model. Skips only where
 * pcscd cannot be installed or started (not root, no apt); on CI (CI set) that is a failure.
 */
describe("chip personalisation through real pcscd", () => {
  let chip: ChipRig | undefined;
  let unavailable = "";
  let rig: Rig | undefined;
  const logDir = mkdtempSync(join(tmpdir(), "kiosk-pcsc-"));
  // A T=0-style card: SELECT answers 61xx, so the runner's GET RESPONSE goes through pcscd too.
  const card = new VirtualCard({ t0Responses: true });
  const chipLogs = captureLogs("debug");

  beforeAll(async () => {
    try {
      chip = await startChipRig({ mode: "pcsc", logDir, card, cardTimeoutMs: 5000, logger: chipLogs.logger });
    } catch (err) {
      if (!(err instanceof PcscUnavailableError) || process.env.CI) throw err;
      unavailable = err.message;
      console.warn(`pcsc e2e skipped: the PC/SC stack is not available here: ${unavailable}`);
    }
  }, 300_000);

  afterAll(async () => {
    await rig?.close();
    await chip?.close();
    if (chip?.stack?.startedPcscd) expect(existsSync(chip.stack.socketPath)).toBe(false);
  });

  it("a job with chip APDUs: DONE, then a wrong SW → CHIP_ERROR at APDU #1; no APDU bytes in any log", async (ctx) => {
    const pcsc = chip;
    const stack = pcsc?.stack;
    if (!pcsc || !stack) {
      ctx.skip(`PC/SC stack unavailable: ${unavailable}`);
      return;
    }
    rig = await startRig({
      takeAfterMs: 20,
      chip: pcsc.transport,
      prepare: async ({ printer }) => pcsc.followPrinter(printer),
    });

    const runId = randomBytes(3).toString("hex");
    const good = makeSampleJob(0, { station: STATION, runId, withChip: true });
    const bad = makeSampleJob(1, { station: STATION, runId, withChip: true });
    const r = rig;
    const terminal = (id: string) => r.emulator.waitFor(() => r.emulator.terminalCount(id) > 0, 15_000);

    expect(await r.emulator.push(good, { station: STATION })).toMatchObject({ result: "accepted" });
    await terminal(good.operationId);
    expect(r.emulator.latest(good.operationId)).toMatchObject({ details: { status: "CARD_PROD_DONE" } });
    expect(statusesAtD1(r.emulator, good.operationId)).toEqual(["CARD_PROD_READY", "CARD_PROD_DONE"]);
    // SELECT → 61xx, GET RESPONSE → FCI 9000, STORE DATA → 9000.
    expect(card.records).toHaveLength(1);
    expect(card.records[0]).toMatchObject({ serial: 1, apdus: 3 });
    expect(card.records[0]!.statusWords).toEqual([expect.stringMatching(/^61[0-9A-F]{2}$/), "9000", "9000"]);

    // The next card answers STORE DATA (its third command) with 6A80.
    card.armFault("wrong-sw", { atCommand: 2, sw: "6A80" });
    expect(await r.emulator.push(bad, { station: STATION })).toMatchObject({ result: "accepted" });
    await terminal(bad.operationId);
    expect(r.emulator.latest(bad.operationId)).toMatchObject({
      status: "FAILED",
      details: { status: "CARD_PROD_EXCEPTION", reason: "CHIP_ERROR" },
      errorCode: "CHIP_SW_MISMATCH",
      error: "chip step failed at APDU #1",
    });
    expect(card.records[1]).toMatchObject({ apdus: 3, fault: "wrong-sw" });
    // FAILED goes out first; the card is then rejected from the printer (and leaves the reader).
    await until(() => r.printer.record[1]?.outcome === "rejected", 5000, "card 2 rejected");
    expect(r.printer.record.map((c) => c.outcome)).toEqual(["taken", "rejected"]);

    // No command bytes anywhere: agent logs, PC/SC transport and virtual card logs, pcscd's log.
    const commands = [good, bad].flatMap((j) => (j.productionData.chip?.apdus ?? []).map((a) => a.command));
    const spaced = commands.map((c) => c.match(/../g)!.join(" "));
    const secrets = [...new Set([...secretsOf(good), ...secretsOf(bad), ...commands])];
    const logs = [r.logs.text(), chipLogs.text()].join("\n");
    expect(logs.length).toBeGreaterThan(0);
    expect(chipLogs.text()).toContain("card connected");
    expect(findSecrets(logs, secrets)).toEqual([]);
    for (const c of commands) expect(logs.toLowerCase()).not.toContain(c.toLowerCase());
    if (stack.pcscdLog) {
      const pcscd = readFileSync(stack.pcscdLog, "utf8");
      expect(pcscd.match(/Received command: TRANSMIT/g)?.length).toBe(6);
      for (const c of [...commands, ...spaced]) expect(pcscd.toUpperCase()).not.toContain(c.toUpperCase());
    }
  }, 30_000);
});
