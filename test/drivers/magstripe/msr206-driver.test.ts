import { createHash } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { type DeviceFault, isDeviceError } from "../../../drivers/device-fault.js";
import { encodeHidReports } from "../../../drivers/magstripe/hid-framing.js";
import {
  encodeReadAnswer,
  encodeStatusReply,
  encodeTestReply,
  encodeWriteIso,
} from "../../../drivers/magstripe/msr206-codec.js";
import { captureLogs, findSecrets } from "../../support/log-capture.js";
import { type Carrier, hex, hidStack, type MsrStack, scriptedStack, settle, stackFor } from "./rig.js";

const TRACK1 = "B4111111111111111^DOE/JOHN^25121010000000000000";
const TRACK2 = "4111111111111111=25121010000000000000";
const sha = (s: string) => createHash("sha256").update(s, "latin1").digest("hex");

let closeAfter: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closeAfter) await close();
  closeAfter = [];
});

async function openStack(carrier: Carrier, options: Parameters<typeof stackFor>[1] = {}): Promise<MsrStack> {
  const stack = stackFor(carrier, options);
  await stack.encoder.open();
  stack.wire(); // drop the open handshake so each test sees its own bytes
  closeAfter.push(() => stack.encoder.close());
  return stack;
}

function faultOf(error: unknown): DeviceFault | undefined {
  return isDeviceError(error) ? error.code : undefined;
}

/** Starts `op`, keeping its rejection observed, and returns a way to read the outcome later. */
function track<T>(op: Promise<T>): { done: () => boolean; result: () => Promise<T> } {
  let finished = false;
  const guarded = op.finally(() => {
    finished = true;
  });
  guarded.catch(() => {});
  return { done: () => finished, result: () => guarded };
}

describe.each(["serial", "hid"] as const)("Msr206Encoder over %s (same codec)", (carrier) => {
  it("open() resets and runs the communication test: exactly 1B 61 1B 65", async () => {
    const stack = stackFor(carrier);
    closeAfter.push(() => stack.encoder.close());
    await stack.encoder.open();
    expect(stack.wire()).toEqual(hex("1B 61 1B 65"));
    expect(stack.sim.commandLog).toEqual(["reset", "test"]);
  });

  it("encode() sends ESC x, the ISO write block and ESC r, and the device holds the tracks", async () => {
    const { encoder, wire, sim } = await openStack(carrier);
    await encoder.encode({ track1: TRACK1, track2: TRACK2 }, "HICO");
    expect(wire()).toEqual(
      Buffer.concat([
        hex("1B 78"), // ESC x: HiCo
        hex("1B 77 1B 73 1B 01"),
        Buffer.from(TRACK1, "latin1"),
        hex("1B 02"),
        Buffer.from(TRACK2, "latin1"),
        hex("1B 03 3F 1C"),
        hex("1B 72"), // ESC r: read back
      ]),
    );
    expect(sim.record).toHaveLength(1);
    expect(sim.record[0]).toMatchObject({
      coercivity: "HICO",
      tracks: [
        { n: 1, sha256: sha(TRACK1) },
        { n: 2, sha256: sha(TRACK2) },
      ],
    });
    expect(encoder.stats).toMatchObject({ droppedBytes: 0, droppedFrames: 0, unexpectedReplies: 0 });
  });

  it("LoCo is ESC y, and the device reports it on ESC d", async () => {
    const { encoder, wire, sim } = await openStack(carrier);
    await encoder.encode({ track2: TRACK2 }, "LOCO");
    expect(wire().subarray(0, 2)).toEqual(hex("1B 79"));
    expect(sim.currentCoercivity).toBe("LOCO");
    expect(await encoder.readCoercivity()).toBe("LOCO");
  });

  it("verifies whether or not the device sends sentinels in its read answer", async () => {
    for (const readSentinels of [true, false]) {
      const { encoder } = await openStack(carrier, { device: { readSentinels } });
      await expect(encoder.encode({ track1: TRACK1, track2: TRACK2 }, "HICO")).resolves.toBeUndefined();
    }
  });

  it("reads model and firmware, erases", async () => {
    const { encoder, wire, sim } = await openStack(carrier);
    expect(await encoder.readModel()).toBe("3");
    expect(await encoder.readFirmware()).toBe("REVE1.03");
    await encoder.encode({ track2: TRACK2 }, "HICO");
    wire();
    await encoder.erase([2]);
    expect(wire()).toEqual(hex("1B 63 02"));
    expect(sim.stripeHashes()).toEqual({});
  });

  it("refuses data that is not ISO encodable before sending anything", async () => {
    const { encoder, wire } = await openStack(carrier);
    const error = await encoder.encode({ track2: `;${TRACK2}?` }, "HICO").catch((e: unknown) => e);
    expect(faultOf(error)).toBe("COMMAND_REJECTED");
    expect((error as Error).message).not.toContain("4111");
    expect(wire()).toHaveLength(0);
  });

  it("mag-write fault → MAG_WRITE", async () => {
    const { encoder, sim } = await openStack(carrier);
    sim.injectFault("mag-write");
    expect(faultOf(await encoder.encode({ track2: TRACK2 }, "HICO").catch((e) => e))).toBe("MAG_WRITE");
    expect(sim.record).toHaveLength(0);
    // Cleared after one card.
    await encoder.encode({ track2: TRACK2 }, "HICO");
  });

  it("mag-verify fault → MAG_VERIFY (the read-back differs)", async () => {
    const { encoder, sim } = await openStack(carrier);
    sim.injectFault("mag-verify");
    const error = await encoder.encode({ track1: TRACK1, track2: TRACK2 }, "HICO").catch((e) => e);
    expect(faultOf(error)).toBe("MAG_VERIFY");
    expect((error as Error).message).toMatch(/^track 1 reads back different/);
    expect(sim.record[0]!.tracks[0]!.sha256).not.toBe(sha(TRACK1));
  });

  it("timeout fault → DEVICE_TIMEOUT after magMs on the clock; the next card resynchronises", async () => {
    const { encoder, sim, clock, wire } = await openStack(carrier, { timeouts: { magMs: 10_000 } });
    sim.injectFault("timeout");
    const op = track(encoder.encode({ track2: TRACK2 }, "HICO"));
    await settle(() => sim.commandLog.includes("writeIso"));
    await settle(undefined, 20);
    clock.advance(9_999);
    await settle(undefined, 20);
    expect(op.done()).toBe(false);
    clock.advance(1);
    expect(faultOf(await op.result().catch((e) => e))).toBe("DEVICE_TIMEOUT");
    wire();
    await encoder.encode({ track2: TRACK2 }, "HICO");
    // Reset + communication test first: the device may still sit in write mode.
    expect(wire().subarray(0, 6)).toEqual(hex("1B 61 1B 65 1B 78"));
  });

  it("garbage fault: noise before the read answer is dropped and counted, the card verifies", async () => {
    const stack = await openStack(carrier);
    stack.sim.injectFault("garbage");
    await stack.encoder.encode({ track1: TRACK1, track2: TRACK2 }, "HICO");
    expect(stack.encoder.stats.droppedBytes).toBeGreaterThan(0);
    if (carrier === "hid") {
      const hid = (stack as ReturnType<typeof hidStack>).hid;
      expect(hid.stats.orphanReports).toBe(1);
    }
  });

  it("unplug fault → DEVICE_DISCONNECTED without a crash; after replug open() and the next card work", async () => {
    const { encoder, sim, clock, transport } = await openStack(carrier);
    sim.injectFault("unplug", { replugAfterMs: 2_000 });
    const error = await encoder.encode({ track2: TRACK2 }, "HICO").catch((e) => e);
    expect(faultOf(error)).toBe("DEVICE_DISCONNECTED");
    await settle(() => !transport.isOpen);
    expect(transport.isOpen).toBe(false);
    expect(faultOf(await encoder.encode({ track2: TRACK2 }, "HICO").catch((e) => e))).toBe(
      "DEVICE_DISCONNECTED",
    );
    expect(faultOf(await encoder.open().catch((e) => e))).toBe("DEVICE_DISCONNECTED");
    clock.advance(2_000);
    await encoder.open();
    await encoder.encode({ track2: TRACK2 }, "HICO");
    expect(sim.record).toHaveLength(1);
  });

  it("after an unplug the next operation re-opens the link by itself once the device is back", async () => {
    const { encoder, sim, clock, transport, wire } = await openStack(carrier);
    sim.injectFault("unplug", { replugAfterMs: 2_000 });
    expect(faultOf(await encoder.encode({ track2: TRACK2 }, "HICO").catch((e) => e))).toBe(
      "DEVICE_DISCONNECTED",
    );
    await settle(() => !transport.isOpen);
    expect(faultOf(await encoder.encode({ track2: TRACK2 }, "HICO").catch((e) => e))).toBe(
      "DEVICE_DISCONNECTED",
    );
    clock.advance(2_000);
    wire();
    await encoder.encode({ track2: TRACK2 }, "HICO");
    expect(wire().subarray(0, 6)).toEqual(hex("1B 61 1B 65 1B 78"));
    expect(sim.record).toHaveLength(1);
    // Not after close(): the caller no longer wants the device.
    await encoder.close();
    expect(faultOf(await encoder.readModel().catch((e) => e))).toBe("DEVICE_DISCONNECTED");
    expect(transport.isOpen).toBe(false);
  });

  it("never logs track data", async () => {
    const { logger, text } = captureLogs("debug");
    const { encoder, sim } = await openStack(carrier, { logger });
    sim.injectFault("mag-verify");
    await encoder.encode({ track1: TRACK1, track2: TRACK2 }, "HICO").catch(() => {});
    sim.injectFault("garbage");
    await encoder.encode({ track1: TRACK1, track2: TRACK2 }, "HICO");
    await settle(undefined, 5);
    expect(text()).toContain("encoder command");
    expect(findSecrets(text(), [TRACK1, TRACK2, "4111111111111111"])).toEqual([]);
  });
});

describe("Msr206Encoder over HID: replies cut into many reports and events", () => {
  it("a read answer in 8-byte reports delivered 10 bytes per data event still verifies", async () => {
    const stack = hidStack({ device: { hid: { payloadPerReport: 8, bytesPerEvent: 10 } } });
    closeAfter.push(() => stack.encoder.close());
    await stack.encoder.open();
    await stack.encoder.encode({ track1: TRACK1, track2: TRACK2 }, "HICO");
    const stats = stack.hid.stats;
    // Read answer ≈ 100 bytes → 13 reports; each of the 5 replies is at least one.
    expect(stats.reports).toBeGreaterThan(13);
    expect(stats).toMatchObject({ orphanReports: 0, droppedMessages: 0 });
  });

  it("the write block goes out as reports BF … then 40|rest, each behind report id 0", async () => {
    const stack = hidStack();
    closeAfter.push(() => stack.encoder.close());
    await stack.encoder.open();
    stack.sim.takeHidWrites();
    await stack.encoder.encode({ track1: TRACK1, track2: TRACK2 }, "HICO");
    const writes = stack.sim.takeHidWrites();
    const block = encodeWriteIso({ track1: TRACK1, track2: TRACK2 });
    const expected = [hex("1B 78"), block, hex("1B 72")].flatMap((m) => encodeHidReports(m));
    expect(writes).toEqual(expected.map((r) => Buffer.concat([hex("00"), r])));
    expect(writes.map((w) => w[1])).toEqual([0xc2, 0xbf, 0x40 | (block.length - 63), 0xc2]);
  });
});

describe("Msr206Encoder against scripted answers", () => {
  const OK = encodeStatusReply("OK");
  const TEST = encodeTestReply();

  async function scripted(script: Array<Buffer | null>, timeouts = {}) {
    const stack = scriptedStack([TEST, ...script], { timeouts });
    await stack.encoder.open();
    stack.wire();
    closeAfter.push(() => stack.encoder.close());
    return stack;
  }

  it("status 9 (invalid swipe in write mode) → MAG_WRITE; 2 and 4 → COMMAND_REJECTED", async () => {
    for (const [status, fault] of [
      ["INVALID_SWIPE", "MAG_WRITE"],
      ["READ_WRITE_ERROR", "MAG_WRITE"],
      ["COMMAND_FORMAT_ERROR", "COMMAND_REJECTED"],
      ["INVALID_COMMAND", "COMMAND_REJECTED"],
    ] as const) {
      const { encoder } = await scripted([OK, encodeStatusReply(status)]);
      expect(faultOf(await encoder.encode({ track2: TRACK2 }, "HICO").catch((e) => e))).toBe(fault);
    }
  });

  it("a written track that does not read back → MAG_VERIFY", async () => {
    const { encoder } = await scripted([
      OK,
      OK,
      encodeReadAnswer({ track1: `%${TRACK1}?` }, "READ_WRITE_ERROR"),
    ]);
    const error = await encoder.encode({ track1: TRACK1, track2: TRACK2 }, "HICO").catch((e) => e);
    expect(faultOf(error)).toBe("MAG_VERIFY");
    expect((error as Error).message).toBe("track 2 did not read back (read status READ_WRITE_ERROR)");
  });

  it("a bare read error status with no data block → MAG_VERIFY", async () => {
    const { encoder } = await scripted([OK, OK, encodeStatusReply("READ_WRITE_ERROR")]);
    expect(faultOf(await encoder.encode({ track2: TRACK2 }, "HICO").catch((e) => e))).toBe("MAG_VERIFY");
  });

  it("read status 1 from a blank unwritten track is accepted when every written track matches", async () => {
    const { encoder } = await scripted([
      OK,
      OK,
      encodeReadAnswer({ track2: `;${TRACK2}?` }, "READ_WRITE_ERROR"),
    ]);
    await expect(encoder.encode({ track2: TRACK2 }, "HICO")).resolves.toBeUndefined();
  });

  it("an answer that does not fit the waiting command is dropped; it keeps waiting", async () => {
    const noise = Buffer.concat([encodeTestReply(), hex("00 FF"), OK]);
    const { encoder } = await scripted([noise, OK, encodeReadAnswer({ track2: TRACK2 }, "OK")]);
    await encoder.encode({ track2: TRACK2 }, "HICO");
    expect(encoder.stats).toMatchObject({ droppedFrames: 1, droppedBytes: 2 });
  });

  it("an answer with no command waiting is counted and ignored", async () => {
    const { encoder, device } = await scripted([]);
    device.say(OK);
    await settle(() => encoder.stats.unexpectedReplies > 0);
    expect(encoder.stats.unexpectedReplies).toBe(1);
  });

  it("after a timeout a late status cannot answer the resynchronisation", async () => {
    const stack = await scripted([OK, null], { magMs: 1_000 });
    const op = track(stack.encoder.encode({ track2: TRACK2 }, "HICO"));
    await settle(() => stack.device.received.includes("writeIso"));
    await settle(undefined, 10);
    stack.clock.advance(1_000);
    expect(faultOf(await op.result().catch((e) => e))).toBe("DEVICE_TIMEOUT");
    // The next operation starts with ESC a + ESC e; the late write status lands first and is dropped.
    const next = track(stack.encoder.readModel());
    await settle(() => stack.device.received.filter((k) => k === "test").length === 2);
    stack.device.say(OK);
    await settle(undefined, 10);
    stack.device.say(TEST);
    await settle(() => stack.device.received.includes("model"));
    stack.device.say(hex("1B 33 53"));
    expect(await next.result()).toBe("3");
    expect(stack.encoder.stats.droppedFrames).toBe(1);
  });

  it("a truncated answer is discarded on the timeout and counted", async () => {
    const cut = encodeReadAnswer({ track2: TRACK2 }, "OK").subarray(0, 12);
    const stack = await scripted([OK, OK, cut], { magMs: 1_000 });
    const op = track(stack.encoder.encode({ track2: TRACK2 }, "HICO"));
    await settle(() => stack.device.received.includes("readIso"));
    await settle(undefined, 20);
    stack.clock.advance(1_000);
    expect(faultOf(await op.result().catch((e) => e))).toBe("DEVICE_TIMEOUT");
    expect(stack.encoder.stats).toMatchObject({ droppedFrames: 1, droppedBytes: 12 });
  });
});
