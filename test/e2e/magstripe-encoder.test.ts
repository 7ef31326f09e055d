import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../agent/util/clock.js";
import { attachVirtualMsr206, VirtualMsr206 } from "../../simulator/magstripe/index.js";
import { job, type Rig, STATION, startRig } from "../support/e2e.js";

/**
 * A kiosk with a separate MSR206-family encoder instead of the printer's built-in one: the pipeline
 * encodes through it, over serial or over USB HID (MSR605X framing), with the same codec. The units
 * are hand-swipe: the simulated teller swipes on the next turn unless a test says otherwise.
 */
describe("separate magstripe encoder", () => {
  let rig: Rig;
  afterEach(async () => {
    await rig.close();
  });

  async function produce(n: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const j = job();
      ids.push(j.operationId as string);
      await rig.emulator.push(j, { station: STATION });
    }
    await rig.emulator.waitFor(() => ids.every((id) => rig.emulator.terminalCount(id) > 0), 10_000);
    return ids.map((id) => {
      const d = rig.emulator.latest(id)!.details;
      return d.reason ? `${d.status}/${d.reason}` : d.status;
    });
  }

  it("serial MSR206: tracks are written by the encoder, not the printer", async () => {
    let msr: VirtualMsr206 | undefined;
    rig = await startRig({
      config: { magstripe: { kind: "msr206-serial", path: "/dev/ttyVIRT1" } },
      prepare: async ({ binding }) => {
        msr = attachVirtualMsr206(binding, "/dev/ttyVIRT1");
      },
    });
    expect(await produce(1)).toEqual(["CARD_PROD_DONE"]);
    expect(msr!.record).toHaveLength(1);
    expect(msr!.record[0]!.tracks.map((t) => t.n)).toEqual([1, 2]);
    expect(rig.printer.record[0]!.tracks).toEqual([]);
  });

  it("MSR605X over HID: a verify mismatch fails that card only; the printer stays idle", async () => {
    const msr = new VirtualMsr206({ hid: { payloadPerReport: 20, bytesPerEvent: 30 } });
    rig = await startRig({ config: { magstripe: { kind: "msr206-hid" } }, hidBackend: msr.hidBackend() });
    msr.injectFault("mag-verify", { count: 1 });
    expect(await produce(2)).toEqual(["CARD_PROD_EXCEPTION/MAG_VERIFY", "CARD_PROD_DONE"]);
    expect(rig.printer.record.map((c) => c.outcome)).toEqual(["rejected", "taken"]);
    expect(rig.agent.supervisor.status.state).toBe("idle");
  });

  it("hand-swipe: the agent asks the teller (warn log) before each swipe; the card is done once swiped", async () => {
    let msr: VirtualMsr206 | undefined;
    rig = await startRig({
      config: { magstripe: { kind: "msr206-serial", path: "/dev/ttyVIRT1", swipeTimeoutSec: 30 } },
      prepare: async ({ binding }) => {
        msr = attachVirtualMsr206(binding, "/dev/ttyVIRT1", { swipeAfterMs: null });
      },
    });
    const seen: string[] = [];
    msr!.on("awaiting-swipe", (operation) => {
      // The teller swipes when told to: the prompt is in the log before the unit waits.
      const prompts = rig.logs.lines
        .map((l) => JSON.parse(l) as { level: number; msg: string; operation?: string })
        .filter((l) => l.msg === "swipe the card through the magstripe encoder");
      seen.push(`${operation}:${prompts.at(-1)?.operation}:${prompts.at(-1)?.level}`);
      // …and on the console (the snapshot's `swipe`), with the time it gives up.
      seen.push(`console:${rig.agent.swipePrompt.current?.operation}`);
      setImmediate(() => msr!.swipe());
    });
    expect(await produce(1)).toEqual(["CARD_PROD_DONE"]);
    expect(seen).toEqual(["write:write:40", "console:write", "read:read:40", "console:read"]);
    expect(msr!.record).toHaveLength(1);
    // Once the card moved on, nobody is asked to swipe any more.
    expect(rig.agent.swipePrompt.current).toBeUndefined();
  });

  it("hand-swipe: nobody swipes → CARD_PROD_EXCEPTION/DEVICE_TIMEOUT after swipeTimeoutSec (fake clock); the printer stays idle", async () => {
    const clock = new ManualClock(Date.now());
    let msr: VirtualMsr206 | undefined;
    rig = await startRig({
      clock,
      config: {
        d1: { pingIntervalMs: 300_000 },
        magstripe: { kind: "msr206-serial", path: "/dev/ttyVIRT1", swipeTimeoutSec: 20 },
      } as never,
      prepare: async ({ binding }) => {
        msr = attachVirtualMsr206(binding, "/dev/ttyVIRT1", { clock, swipeAfterMs: null });
      },
    });
    // Time moves only while the encoder waits for the swipe, so nothing else can time out meanwhile.
    msr!.on("awaiting-swipe", () => setImmediate(() => clock.advance(20_000)));
    expect(await produce(1)).toEqual(["CARD_PROD_EXCEPTION/DEVICE_TIMEOUT"]);
    expect(msr!.record).toHaveLength(0);
    // The encoder's timeout says nothing about the printer: it rejects the card and is idle again.
    // (Turns of the event loop, not time: the fake clock stands still now.)
    for (let i = 0; i < 500 && rig.agent.supervisor.status.state !== "idle"; i++) {
      await new Promise<void>((r) => setImmediate(r));
    }
    expect(rig.agent.supervisor.status.state).toBe("idle");
    expect(rig.printer.record.map((c) => c.outcome)).toEqual(["rejected"]);
  });
});
