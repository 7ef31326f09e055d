import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../../agent/util/clock.js";
import { encodeHidOutput, HidReassembler } from "../../../drivers/magstripe/hid-framing.js";
import { formatTrack } from "../../../drivers/magstripe/iso7813.js";
import {
  BAD_TRACK,
  dataTrack,
  EMPTY_TRACK,
  encodeCommand,
  encodeWriteIso,
  type Msr206Reply,
  Msr206ReplyParser,
} from "../../../drivers/magstripe/msr206-codec.js";
import type { HidDeviceHandle } from "../../../drivers/transport/hid-transport.js";
import { attachVirtualMsr206, VirtualMsr206 } from "../../../simulator/magstripe/index.js";
import { VirtualSerialBinding, type VirtualSerialLink } from "../../../simulator/serial/virtual-binding.js";
import { ascii, hex, settle } from "../../drivers/magstripe/rig.js";

const TRACK1 = "B4111111111111111^DOE/JOHN^25121010000000000000";
const TRACK2 = "4111111111111111=25121010000000000000";
const sha = (s: string) => createHash("sha256").update(s, "latin1").digest("hex");

/** Drives the simulator as a serial device directly, without a port: the link just collects bytes. */
function direct(options: ConstructorParameters<typeof VirtualMsr206>[0] = {}) {
  const sim = new VirtualMsr206(options);
  const parser = new Msr206ReplyParser();
  const replies: Msr206Reply[] = [];
  let raw = Buffer.alloc(0);
  const link: VirtualSerialLink = {
    path: "/dev/direct",
    send: (bytes) => {
      raw = Buffer.concat([raw, bytes]);
      replies.push(...parser.push(bytes));
    },
    unplug: () => {},
    replug: () => {},
    plugged: true,
  };
  sim.attach(link);
  return { sim, replies, parser, raw: () => raw };
}

describe("VirtualMsr206 on the serial side", () => {
  it("answers the handshake, coercivity, model and firmware with the documented bytes", async () => {
    const { sim, raw } = direct();
    sim.receive(Buffer.concat([hex("1B 61 1B 65 1B 79 1B 64 1B 74 1B 76")]));
    await settle(() => raw().length >= 2 + 2 + 2 + 3 + 9);
    // reset: nothing; test: ESC y; LoCo: ESC 0; query: ESC l; model: ESC 3 S; firmware: ESC REVE1.03
    expect(raw()).toEqual(Buffer.concat([hex("1B 79 1B 30 1B 6C 1B 33 53 1B"), Buffer.from("REVE1.03")]));
  });

  it("writes with sentinels + LRC (iso7813) and reads back with sentinels, LRC checked and stripped", async () => {
    const { sim, replies } = direct();
    sim.receive(encodeWriteIso({ track1: TRACK1, track2: TRACK2 }));
    sim.receive(encodeCommand("readIso"));
    await settle(() => replies.length === 2);
    expect(replies).toEqual([
      { kind: "status", status: "OK" },
      {
        kind: "read",
        tracks: { track1: dataTrack(`%${TRACK1}?`), track2: dataTrack(`;${TRACK2}?`), track3: EMPTY_TRACK },
        status: "OK",
      },
    ]);
    expect(sim.stripeHashes()).toEqual({ 1: sha(TRACK1), 2: sha(TRACK2) });
    expect(formatTrack(2, TRACK2)).toMatch(/^;.*\?.$/);
  });

  it("keeps written tracks as hashes only in its record", async () => {
    const clock = new ManualClock();
    const { sim, replies } = direct({ clock });
    sim.receive(encodeWriteIso({ track2: TRACK2 }));
    await settle(() => replies.length === 1);
    const json = JSON.stringify(sim.record);
    expect(json).not.toContain("4111");
    expect(sim.record).toEqual([
      { serial: 1, at: clock.now(), coercivity: "HICO", tracks: [{ n: 2, sha256: sha(TRACK2) }] },
    ]);
  });

  it("a blank card reads as status 1; unknown commands are 4, malformed blocks 2; bad data 2", async () => {
    const { sim, replies } = direct();
    sim.receive(encodeCommand("readIso"));
    sim.receive(hex("1B 7A"));
    sim.receive(hex("1B 77 1B 73 1B 01 41 1B 1B 65"));
    sim.receive(Buffer.concat([hex("1B 77 1B 73 1B 01 1B 02"), Buffer.from(";1?"), hex("1B 03 3F 1C")]));
    await settle(() => replies.length === 5);
    expect(replies).toEqual([
      {
        kind: "read",
        tracks: { track1: EMPTY_TRACK, track2: EMPTY_TRACK, track3: EMPTY_TRACK },
        status: "READ_WRITE_ERROR",
      },
      { kind: "status", status: "INVALID_COMMAND" },
      { kind: "status", status: "COMMAND_FORMAT_ERROR" },
      { kind: "test-ok" },
      { kind: "status", status: "COMMAND_FORMAT_ERROR" },
    ]);
  });

  it("a track-2-only card reads as ESC + for tracks 1 and 3, byte for byte", async () => {
    const { sim, raw } = direct();
    sim.receive(encodeWriteIso({ track2: TRACK2 }));
    sim.receive(encodeCommand("readIso"));
    const expected = Buffer.concat([
      hex("1B 30"), // the write
      hex("1B 73 1B 01 1B 2B 1B 02"), // track 1: ESC + (no data)
      ascii(`;${TRACK2}?`),
      hex("1B 03 1B 2B 3F 1C 1B 30"), // track 3: ESC +, then the block's end and status OK
    ]);
    await settle(() => raw().length >= expected.length);
    expect(raw()).toEqual(expected);
  });

  it("bad-track fault: the write answers 0, the damaged track reads as ESC * with status 1 from then on", async () => {
    const { sim, replies, raw } = direct();
    sim.injectFault("bad-track", { track: 2 });
    sim.receive(encodeWriteIso({ track1: TRACK1, track2: TRACK2 }));
    sim.receive(encodeCommand("readIso"));
    sim.receive(encodeCommand("readIso"));
    await settle(() => replies.length === 3);
    const read = {
      kind: "read",
      tracks: { track1: dataTrack(`%${TRACK1}?`), track2: BAD_TRACK, track3: EMPTY_TRACK },
      status: "READ_WRITE_ERROR",
    };
    expect(replies).toEqual([{ kind: "status", status: "OK" }, read, read]);
    expect(raw().includes(hex("1B 02 1B 2A 1B 03"))).toBe(true);
    // Its hash is gone from the readable stripe; the record still says what was meant to be written.
    expect(sim.stripeHashes()).toEqual({ 1: sha(TRACK1) });
    expect(sim.record[0]!.tracks.map((t) => t.n)).toEqual([1, 2]);
  });

  it("garbage: the same seed gives the same noise, and it never contains ESC", async () => {
    const runs = [];
    for (let i = 0; i < 2; i++) {
      const { sim, raw } = direct({ seed: 42 });
      sim.injectFault("garbage", { at: "test" });
      sim.receive(encodeCommand("test"));
      await settle(() => raw().subarray(-2).equals(hex("1B 79")));
      runs.push(raw());
    }
    expect(runs[0]).toEqual(runs[1]);
    expect(runs[0]!.length).toBeGreaterThan(2);
    expect(runs[0]!.subarray(0, -2).includes(0x1b)).toBe(false);
  });

  it("unplug under the serial binding: the port vanishes and comes back after replugAfterMs", async () => {
    const clock = new ManualClock();
    const binding = new VirtualSerialBinding();
    const sim = attachVirtualMsr206(binding, "/dev/ttyMSR9", { clock });
    sim.injectFault("unplug", { at: "test", replugAfterMs: 500 });
    sim.receive(encodeCommand("test"));
    expect(binding.isPlugged("/dev/ttyMSR9")).toBe(false);
    clock.advance(500);
    expect(binding.isPlugged("/dev/ttyMSR9")).toBe(true);
  });
});

describe("VirtualMsr206 is hand-swipe", () => {
  it("swipeAfterMs null: write, read and erase wait for swipe(); quick commands do not", async () => {
    const clock = new ManualClock();
    const { sim, replies } = direct({ clock, swipeAfterMs: null });
    const wanted: string[] = [];
    sim.on("awaiting-swipe", (op) => wanted.push(op));
    expect(sim.swipe()).toBe(false); // nothing asked for a swipe: nothing happens
    sim.receive(encodeWriteIso({ track2: TRACK2 }));
    sim.receive(encodeCommand("readIso"));
    await settle(undefined, 20);
    clock.advance(3_600_000);
    await settle(undefined, 20);
    expect(replies).toEqual([]);
    expect(sim.awaitingSwipe).toBe("write");
    expect(sim.record).toHaveLength(0); // the stripe is untouched until the swipe
    expect(sim.swipe()).toBe(true);
    expect(replies).toEqual([{ kind: "status", status: "OK" }]);
    expect(sim.record).toHaveLength(1);
    await settle(() => sim.awaitingSwipe === "read");
    sim.swipe();
    await settle(() => replies.length === 2);
    expect(replies[1]).toMatchObject({ kind: "read", status: "OK" });
    sim.receive(Buffer.concat([hex("1B 63 02"), encodeCommand("test")]));
    await settle(() => sim.awaitingSwipe === "erase");
    expect(replies).toHaveLength(2); // the test waits behind the erase
    sim.swipe();
    await settle(() => replies.length === 4);
    expect(replies.slice(2)).toEqual([{ kind: "status", status: "OK" }, { kind: "test-ok" }]);
    expect(wanted).toEqual(["write", "read", "erase"]);
    expect(sim.stripeHashes()).toEqual({});
  });

  it("swipeAfterMs: the simulated teller swipes that long after the command, on the clock", async () => {
    const clock = new ManualClock();
    const { sim, replies } = direct({ clock, swipeAfterMs: 8_000 });
    sim.receive(encodeWriteIso({ track2: TRACK2 }));
    await settle(() => sim.awaitingSwipe === "write");
    clock.advance(7_999);
    await settle(undefined, 10);
    expect(replies).toEqual([]);
    clock.advance(1);
    expect(replies).toEqual([{ kind: "status", status: "OK" }]);
    expect(sim.awaitingSwipe).toBeUndefined();
  });

  it("a reset drops the command waiting for a swipe: it is never answered, the stripe is untouched", async () => {
    const clock = new ManualClock();
    const { sim, replies } = direct({ clock, swipeAfterMs: 5_000 });
    sim.receive(encodeWriteIso({ track2: TRACK2 }));
    await settle(() => sim.awaitingSwipe === "write");
    sim.receive(hex("1B 61 1B 65")); // what the driver sends after a timeout
    await settle(() => replies.length === 1);
    expect(replies).toEqual([{ kind: "test-ok" }]);
    expect(sim.awaitingSwipe).toBeUndefined();
    clock.advance(5_000); // the old swipe timer finds nothing to swipe
    await settle(undefined, 10);
    expect(replies).toHaveLength(1);
    expect(sim.record).toHaveLength(0);
  });

  it("an unplug drops the command waiting for a swipe; after replug the unit answers again", async () => {
    const { sim, replies } = direct({ swipeAfterMs: null });
    sim.receive(encodeCommand("readIso"));
    await settle(() => sim.awaitingSwipe === "read");
    sim.unplug();
    expect(sim.awaitingSwipe).toBeUndefined();
    expect(sim.swipe()).toBe(false);
    sim.replug();
    sim.receive(encodeCommand("test"));
    await settle(() => replies.length === 1);
    expect(replies).toEqual([{ kind: "test-ok" }]);
  });

  it("timeout fault: the write is swallowed, it does not even wait for a swipe", async () => {
    const { sim, replies } = direct({ swipeAfterMs: null });
    sim.injectFault("timeout");
    sim.receive(encodeWriteIso({ track2: TRACK2 }));
    sim.receive(encodeCommand("test"));
    await settle(() => replies.length === 1);
    expect(replies).toEqual([{ kind: "test-ok" }]);
    expect(sim.awaitingSwipe).toBeUndefined();
  });
});

describe("VirtualMsr206 as a node-hid device object", () => {
  function openHid(options: ConstructorParameters<typeof VirtualMsr206>[0] = {}) {
    const sim = new VirtualMsr206(options);
    const backend = sim.hidBackend();
    const path = backend.devices()[0]!.path!;
    const handle = backend.open(path);
    const events: Buffer[] = [];
    const errors: Error[] = [];
    handle.on("data", (d) => events.push(d));
    handle.on("error", (e) => errors.push(e));
    const send = (message: Buffer) => {
      for (const w of encodeHidOutput(message)) handle.write(w);
    };
    return { sim, backend, handle, events, errors, send };
  }

  it("is listed with VID 0801 / PID 0003 and answers in 64-byte reports", async () => {
    const { backend, events, send } = openHid();
    expect(backend.devices()).toMatchObject([{ vendorId: 0x0801, productId: 0x0003 }]);
    send(encodeCommand("test"));
    await settle(() => events.length > 0);
    expect(events).toHaveLength(1);
    expect(events[0]).toHaveLength(64);
    expect(events[0]!.subarray(0, 3)).toEqual(hex("C2 1B 79"));
  });

  it("cuts a reply over several reports and several data events when told to", async () => {
    const { events, send } = openHid({ hid: { payloadPerReport: 5, bytesPerEvent: 24 } });
    send(encodeWriteIso({ track1: TRACK1, track2: TRACK2 }));
    send(encodeCommand("readIso"));
    await settle(undefined, 50);
    const reassembler = new HidReassembler();
    const messages = events.flatMap((e) => reassembler.push(e));
    expect(events.every((e) => e.length <= 24)).toBe(true);
    expect(reassembler.stats.reports).toBeGreaterThan(20);
    const parser = new Msr206ReplyParser();
    expect(messages.flatMap((m) => parser.push(m))).toMatchObject([
      { kind: "status", status: "OK" },
      { kind: "read", status: "OK" },
    ]);
  });

  it("refuses writes that are not report id 0 + 64 bytes, like hidapi would garble them", () => {
    const { handle } = openHid();
    expect(() => handle.write(Buffer.alloc(64))).toThrow();
    expect(() => handle.write(Buffer.concat([hex("01"), Buffer.alloc(64)]))).toThrow();
  });

  it("unplug: one error event, writes throw, the device is no longer listed; it can be reopened after replug", async () => {
    const { sim, backend, handle, errors } = openHid();
    sim.unplug();
    await settle(() => errors.length > 0);
    expect(errors).toHaveLength(1);
    expect(() => handle.write(encodeHidOutput(encodeCommand("test"))[0]!)).toThrow();
    expect(backend.devices()).toEqual([]);
    expect(() => backend.open("/dev/hidraw-msr605x")).toThrow();
    handle.close();
    sim.replug();
    const again: HidDeviceHandle = backend.open("/dev/hidraw-msr605x");
    expect(again).toBeDefined();
  });

  it("one open handle at a time", () => {
    const { backend } = openHid();
    expect(() => backend.open("/dev/hidraw-msr605x")).toThrow(/busy/);
  });
});
