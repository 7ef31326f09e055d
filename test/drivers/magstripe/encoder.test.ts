import { describe, expect, it } from "vitest";
import { ConfigSchema } from "../../../agent/config/schema.js";
import { silentLogger } from "../../../agent/log/logger.js";
import { ManualClock } from "../../../agent/util/clock.js";
import { createMagstripeEncoder } from "../../../drivers/magstripe/create-encoder.js";
import {
  type Coercivity,
  type MagstripeEncoder,
  type MagstripeTracks,
  printerMagstripeEncoder,
} from "../../../drivers/magstripe/encoder.js";
import type { Msr206Encoder, SwipeRequest } from "../../../drivers/magstripe/msr206-driver.js";
import type { CardPrinter } from "../../../drivers/printer/card-printer.js";
import { attachVirtualMsr206, VirtualMsr206 } from "../../../simulator/magstripe/index.js";
import { VirtualSerialBinding } from "../../../simulator/serial/virtual-binding.js";
import { captureLogs } from "../../support/log-capture.js";
import { settle } from "./rig.js";

describe("MagstripeEncoder", () => {
  it("the printer's built-in encoder is one, through the adapter", async () => {
    const calls: Array<[MagstripeTracks, Coercivity]> = [];
    const printer = {
      encodeMagstripe: async (tracks: MagstripeTracks, coercivity: Coercivity) => {
        calls.push([tracks, coercivity]);
      },
    };
    const encoder: MagstripeEncoder = printerMagstripeEncoder(printer);
    await encoder.encode({ track2: "4111111111111111=2512101" }, "LOCO");
    expect(calls).toEqual([[{ track2: "4111111111111111=2512101" }, "LOCO"]]);
  });

  it("a CardPrinter and Msr206Encoder both fit the interface (checked by the compiler)", () => {
    const fromPrinter = (p: CardPrinter): MagstripeEncoder => printerMagstripeEncoder(p);
    const fromMsr = (m: Msr206Encoder): MagstripeEncoder => m;
    expect(typeof fromPrinter).toBe("function");
    expect(typeof fromMsr).toBe("function");
  });
});

describe("createMagstripeEncoder", () => {
  const TRACK2 = "4111111111111111=25121010000000000000";

  it("printer: the adapter over the printer's encodeMagstripe", async () => {
    let called = 0;
    const configured = createMagstripeEncoder(
      { kind: "printer" },
      {
        clock: new ManualClock(),
        logger: silentLogger,
        printer: {
          encodeMagstripe: async () => {
            called++;
          },
        },
      },
    );
    expect(configured.device).toBeUndefined();
    await configured.encoder.encode({ track2: TRACK2 }, "HICO");
    expect(called).toBe(1);
  });

  it("msr206-hid and msr206-serial: an Msr206Encoder over the right transport", async () => {
    const clock = new ManualClock();
    const hidSim = new VirtualMsr206({ clock });
    const hid = createMagstripeEncoder(
      { kind: "msr206-hid" },
      { clock, logger: silentLogger, hidBackend: hidSim.hidBackend() },
    );
    const binding = new VirtualSerialBinding();
    const serialSim = attachVirtualMsr206(binding, "/dev/ttyMSR1", { clock });
    const serial = createMagstripeEncoder(
      { kind: "msr206-serial", path: "/dev/ttyMSR1" },
      { clock, logger: silentLogger, serialBinding: binding },
    );
    for (const [configured, sim] of [
      [hid, hidSim],
      [serial, serialSim],
    ] as const) {
      await configured.device!.open();
      await configured.encoder.encode({ track2: TRACK2 }, "HICO");
      expect(sim.record).toHaveLength(1);
      await configured.device!.close();
    }
  });

  it("swipeTimeoutSec becomes the swipe wait and onSwipeRequest reaches the driver; a legacy magMs is ignored with a warning", async () => {
    const clock = new ManualClock();
    const { logger, text } = captureLogs("debug");
    const binding = new VirtualSerialBinding();
    const sim = attachVirtualMsr206(binding, "/dev/ttyMSR2", { clock, swipeAfterMs: null });
    const requests: SwipeRequest[] = [];
    const configured = createMagstripeEncoder(
      { kind: "msr206-serial", path: "/dev/ttyMSR2", swipeTimeoutSec: 12, timeouts: { magMs: 15_000 } },
      { clock, logger, serialBinding: binding, onSwipeRequest: (r) => requests.push(r) },
    );
    expect(text()).toContain("magstripe.timeouts.magMs is ignored");
    await configured.device!.open();
    const op = configured.encoder.encode({ track2: TRACK2 }, "HICO").catch((e: unknown) => e);
    await settle(() => sim.awaitingSwipe === "write");
    expect(requests).toEqual([{ operation: "write", waitMs: 12_000 }]);
    clock.advance(12_000);
    expect(await op).toMatchObject({ code: "DEVICE_TIMEOUT" });
    await configured.device!.close();
  });

  it("config: magstripe.swipeTimeoutSec defaults to 30 for both separate kinds, and is validated", () => {
    const magstripe = ConfigSchema.shape.magstripe;
    expect(magstripe.parse({ kind: "msr206-serial", path: "/dev/ttyS0" })).toEqual({
      kind: "msr206-serial",
      path: "/dev/ttyS0",
      swipeTimeoutSec: 30,
    });
    expect(magstripe.parse({ kind: "msr206-hid", swipeTimeoutSec: 90 })).toEqual({
      kind: "msr206-hid",
      swipeTimeoutSec: 90,
    });
    for (const bad of [0, 4, 601, 12.5, "30"]) {
      expect(magstripe.safeParse({ kind: "msr206-hid", swipeTimeoutSec: bad }).success, String(bad)).toBe(
        false,
      );
    }
    // The printer's built-in encoder needs no swipe: the key does not belong there.
    expect(magstripe.safeParse({ kind: "printer", swipeTimeoutSec: 30 }).success).toBe(false);
  });

  it("refuses a configuration without what it needs", () => {
    const deps = { clock: new ManualClock(), logger: silentLogger };
    expect(() => createMagstripeEncoder({ kind: "printer" }, deps)).toThrow(TypeError);
    expect(() => createMagstripeEncoder({ kind: "msr206-serial", path: "/dev/ttyS0" }, deps)).toThrow(
      TypeError,
    );
  });
});
