import { createHash } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { type DeviceFault, isDeviceError } from "../../../drivers/device-fault.js";
import { encodeHidReports } from "../../../drivers/magstripe/hid-framing.js";
import {
  dataTrack,
  encodeReadAnswer,
  encodeStatusReply,
  encodeTestReply,
  encodeWriteIso,
} from "../../../drivers/magstripe/msr206-codec.js";
import type { SwipeRequest } from "../../../drivers/magstripe/msr206-driver.js";
import { captureLogs, findSecrets } from "../../support/log-capture.js";
import {
  ascii,
  type Carrier,
  type EncoderTestOptions,
  hex,
  hidStack,
  type MsrStack,
  scriptedStack,
  settle,
  stackFor,
} from "./rig.js";

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

  it("timeout fault → DEVICE_TIMEOUT after the swipe wait on the clock; the next card resynchronises", async () => {
    const { encoder, sim, clock, wire } = await openStack(carrier, { swipeTimeoutMs: 10_000 });
    sim.injectFault("timeout");
    const op = track(encoder.encode({ track2: TRACK2 }, "HICO"));
    await settle(() => sim.commandLog.includes("writeIso"));
    await settle(undefined, 20);
    clock.advance(9_999);
    await settle(undefined, 20);
    expect(op.done()).toBe(false);
    clock.advance(1);
    const error = await op.result().catch((e) => e);
    expect(faultOf(error)).toBe("DEVICE_TIMEOUT");
    expect((error as Error).message).toBe("write: no card was swiped within 10000 ms (no reply)");
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

  it("a card with tracks 1 and 2 verifies while track 3 reads back empty (ESC +)", async () => {
    const { logger, lines } = captureLogs("debug");
    const { encoder } = await openStack(carrier, { logger });
    await encoder.encode({ track1: TRACK1, track2: TRACK2 }, "HICO");
    const verified = lines.map((l) => JSON.parse(l)).find((l) => l.msg === "magstripe written and verified");
    expect(verified.readBack).toEqual({ 1: "data", 2: "data", 3: "empty" });
  });

  it("asks for a swipe right after sending the write and again after the read, with the wait", async () => {
    const requests: SwipeRequest[] = [];
    const { logger, lines } = captureLogs("debug");
    const { encoder, sim } = await openStack(carrier, {
      logger,
      swipeTimeoutMs: 45_000,
      device: { swipeAfterMs: null },
      onSwipeRequest: (r) => {
        // The device got the command and waits for the card when the agent is asked.
        requests.push({ ...r });
      },
    });
    const op = track(encoder.encode({ track2: TRACK2 }, "HICO"));
    await settle(() => sim.awaitingSwipe === "write");
    expect(requests).toEqual([{ operation: "write", waitMs: 45_000 }]);
    expect(sim.swipe()).toBe(true);
    await settle(() => sim.awaitingSwipe === "read");
    expect(requests).toEqual([
      { operation: "write", waitMs: 45_000 },
      { operation: "read", waitMs: 45_000 },
    ]);
    sim.swipe();
    await op.result();
    const prompts = lines
      .map((l) => JSON.parse(l))
      .filter((l) => l.msg === "swipe the card through the magstripe encoder");
    expect(prompts.map((p) => [p.level, p.operation, p.waitMs])).toEqual([
      [40, "write", 45_000],
      [40, "read", 45_000],
    ]);
    expect(findSecrets(lines.join("\n"), [TRACK2, "4111111111111111"])).toEqual([]);
  });

  it("no swipe → DEVICE_TIMEOUT after swipeTimeoutMs on the clock, saying no card was swiped", async () => {
    const { encoder, sim, clock, wire } = await openStack(carrier, { device: { swipeAfterMs: null } });
    const op = track(encoder.encode({ track2: TRACK2 }, "HICO"));
    await settle(() => sim.awaitingSwipe === "write");
    clock.advance(29_999); // the default wait is 30 s
    await settle(undefined, 20);
    expect(op.done()).toBe(false);
    clock.advance(1);
    const error = await op.result().catch((e) => e);
    expect(faultOf(error)).toBe("DEVICE_TIMEOUT");
    expect((error as Error).message).toBe("write: no card was swiped within 30000 ms (no reply)");
    expect(sim.record).toHaveLength(0);
    // The next card: ESC a drops the write the unit still holds, then it goes as usual once swiped.
    wire();
    sim.on("awaiting-swipe", () => setImmediate(() => sim.swipe()));
    await encoder.encode({ track2: TRACK2 }, "HICO");
    expect(wire().subarray(0, 4)).toEqual(hex("1B 61 1B 65"));
    expect(sim.record).toHaveLength(1);
  });

  it("a swipe for the write but none for the read → DEVICE_TIMEOUT on the read", async () => {
    const requests: SwipeRequest[] = [];
    const { encoder, sim, clock } = await openStack(carrier, {
      device: { swipeAfterMs: null },
      swipeTimeoutMs: 5_000,
      onSwipeRequest: (r) => requests.push(r),
    });
    const op = track(encoder.encode({ track2: TRACK2 }, "HICO"));
    await settle(() => sim.awaitingSwipe === "write");
    clock.advance(4_000);
    sim.swipe();
    await settle(() => sim.awaitingSwipe === "read");
    clock.advance(4_999);
    await settle(undefined, 20);
    expect(op.done()).toBe(false);
    clock.advance(1);
    const error = await op.result().catch((e) => e);
    expect(faultOf(error)).toBe("DEVICE_TIMEOUT");
    expect((error as Error).message).toMatch(/^read: no card was swiped within 5000 ms/);
    expect(requests.map((r) => r.operation)).toEqual(["write", "read"]);
    expect(sim.record).toHaveLength(1); // written, not verified
  });

  it("a teller who swipes after some seconds on the device's clock is in time", async () => {
    const { encoder, sim, clock } = await openStack(carrier, { device: { swipeAfterMs: 12_000 } });
    const op = track(encoder.encode({ track2: TRACK2 }, "HICO"));
    await settle(() => sim.awaitingSwipe === "write");
    clock.advance(12_000);
    await settle(() => sim.awaitingSwipe === "read");
    clock.advance(12_000);
    await op.result();
    expect(sim.record).toHaveLength(1);
  });

  it("erase waits for a swipe too", async () => {
    const requests: SwipeRequest[] = [];
    const { encoder, sim } = await openStack(carrier, { onSwipeRequest: (r) => requests.push(r) });
    await encoder.erase([1, 2]);
    expect(requests).toEqual([{ operation: "erase", waitMs: 30_000 }]);
    expect(sim.commandLog.at(-1)).toBe("erase");
  });

  it("a throwing swipe listener is logged, the card still goes through", async () => {
    const { logger, text } = captureLogs("debug");
    const { encoder, sim } = await openStack(carrier, {
      logger,
      onSwipeRequest: () => {
        throw new Error("console gone");
      },
    });
    await encoder.encode({ track2: TRACK2 }, "HICO");
    expect(sim.record).toHaveLength(1);
    expect(text()).toContain("swipe request listener failed");
  });

  it("bad-track fault: a written track reads back bad (ESC *) → MAG_VERIFY; left unwritten on the next encode, it is fine", async () => {
    const { encoder, sim } = await openStack(carrier);
    sim.injectFault("bad-track", { track: 1 });
    const error = await encoder.encode({ track1: TRACK1, track2: TRACK2 }, "HICO").catch((e) => e);
    expect(faultOf(error)).toBe("MAG_VERIFY");
    expect((error as Error).message).toBe(
      "track 1 read back unreadable (bad track) (read status READ_WRITE_ERROR)",
    );
    // Same card, only track 2 this time: track 1 still reads `ESC *`, and that is not ours to check.
    await expect(encoder.encode({ track2: TRACK2 }, "HICO")).resolves.toBeUndefined();
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

  async function scripted(script: Array<Buffer | null>, options: EncoderTestOptions = {}) {
    const stack = scriptedStack([TEST, ...script], options);
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

  it("a written track that reads back empty (ESC +) → MAG_VERIFY", async () => {
    const { encoder } = await scripted([
      OK,
      OK,
      encodeReadAnswer({ track1: dataTrack(`%${TRACK1}?`) }, "READ_WRITE_ERROR"),
    ]);
    const error = await encoder.encode({ track1: TRACK1, track2: TRACK2 }, "HICO").catch((e) => e);
    expect(faultOf(error)).toBe("MAG_VERIFY");
    expect((error as Error).message).toBe("track 2 read back empty (read status READ_WRITE_ERROR)");
  });

  // Read answers as byte fixtures (named as in msr206-track-markers.test.ts).
  const T2 = `;${TRACK2}?`;
  /** Track 1 empty, track 2 data, track 3 empty, status OK. */
  const TRACK1_EMPTY = Buffer.concat([
    hex("1B 73 1B 01 1B 2B 1B 02"),
    ascii(T2),
    hex("1B 03 1B 2B 3F 1C 1B 30"),
  ]);
  /** Track 1 empty, track 2 data, track 3 bad, status 1. */
  const TRACK3_BAD = Buffer.concat([
    hex("1B 73 1B 01 1B 2B 1B 02"),
    ascii(T2),
    hex("1B 03 1B 2A 3F 1C 1B 31"),
  ]);
  /** Track 2 (the one written) empty, status 1. */
  const TRACK2_EMPTY = hex("1B 73 1B 01 1B 2B 1B 02 1B 2B 1B 03 1B 2B 3F 1C 1B 31");
  /** Track 2 (the one written) bad, status 1. */
  const TRACK2_BAD = hex("1B 73 1B 01 1B 2B 1B 02 1B 2A 1B 03 1B 2B 3F 1C 1B 31");
  /** The programmer's manuals' form: no marker for the empty tracks. */
  const NO_MARKER = Buffer.concat([hex("1B 73 1B 01 1B 02"), ascii(T2), hex("1B 03 3F 1C 1B 30")]);

  it("only track 2 written, track 1 answered ESC + → verifies (this failed as MAG_VERIFY before)", async () => {
    const { encoder } = await scripted([OK, OK, TRACK1_EMPTY]);
    await expect(encoder.encode({ track2: TRACK2 }, "HICO")).resolves.toBeUndefined();
    expect(encoder.stats).toMatchObject({ droppedBytes: 0, droppedFrames: 0 });
  });

  it("an unwritten track answered bad (ESC *) with read status 1 → verifies", async () => {
    const { encoder } = await scripted([OK, OK, TRACK3_BAD]);
    await expect(encoder.encode({ track2: TRACK2 }, "HICO")).resolves.toBeUndefined();
  });

  it("the written track answered ESC + → MAG_VERIFY (read back empty)", async () => {
    const { encoder } = await scripted([OK, OK, TRACK2_EMPTY]);
    const error = await encoder.encode({ track2: TRACK2 }, "HICO").catch((e) => e);
    expect(faultOf(error)).toBe("MAG_VERIFY");
    expect((error as Error).message).toBe("track 2 read back empty (read status READ_WRITE_ERROR)");
  });

  it("the written track answered ESC * → MAG_VERIFY (bad track)", async () => {
    const { encoder } = await scripted([OK, OK, TRACK2_BAD]);
    const error = await encoder.encode({ track2: TRACK2 }, "HICO").catch((e) => e);
    expect(faultOf(error)).toBe("MAG_VERIFY");
    expect((error as Error).message).toBe(
      "track 2 read back unreadable (bad track) (read status READ_WRITE_ERROR)",
    );
  });

  it("empty tracks without a marker (the manuals' form) verify too", async () => {
    const { encoder } = await scripted([OK, OK, NO_MARKER]);
    await expect(encoder.encode({ track2: TRACK2 }, "HICO")).resolves.toBeUndefined();
  });

  it("a bare read error status with no data block → MAG_VERIFY", async () => {
    const { encoder } = await scripted([OK, OK, encodeStatusReply("READ_WRITE_ERROR")]);
    expect(faultOf(await encoder.encode({ track2: TRACK2 }, "HICO").catch((e) => e))).toBe("MAG_VERIFY");
  });

  it("read status 1 from a blank unwritten track is accepted when every written track matches", async () => {
    const { encoder } = await scripted([
      OK,
      OK,
      encodeReadAnswer({ track2: dataTrack(`;${TRACK2}?`) }, "READ_WRITE_ERROR"),
    ]);
    await expect(encoder.encode({ track2: TRACK2 }, "HICO")).resolves.toBeUndefined();
  });

  it("an answer that does not fit the waiting command is dropped; it keeps waiting", async () => {
    const noise = Buffer.concat([encodeTestReply(), hex("00 FF"), OK]);
    const { encoder } = await scripted([noise, OK, encodeReadAnswer({ track2: dataTrack(TRACK2) }, "OK")]);
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
    const stack = await scripted([OK, null], { swipeTimeoutMs: 1_000 });
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
    const cut = encodeReadAnswer({ track2: dataTrack(TRACK2) }, "OK").subarray(0, 12);
    const stack = await scripted([OK, OK, cut], { swipeTimeoutMs: 1_000 });
    const op = track(stack.encoder.encode({ track2: TRACK2 }, "HICO"));
    await settle(() => stack.device.received.includes("readIso"));
    await settle(undefined, 20);
    stack.clock.advance(1_000);
    expect(faultOf(await op.result().catch((e) => e))).toBe("DEVICE_TIMEOUT");
    expect(stack.encoder.stats).toMatchObject({ droppedFrames: 1, droppedBytes: 12 });
  });
});
