import { afterEach, describe, expect, it } from "vitest";
import { attachVirtualMsr206, VirtualMsr206 } from "../../simulator/magstripe/index.js";
import { job, type Rig, STATION, startRig } from "../support/e2e.js";

/**
 * A kiosk with a separate MSR206-family encoder instead of the printer's built-in one: the pipeline
 * encodes through it, over serial or over USB HID (MSR605X framing), with the same codec.
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
});
