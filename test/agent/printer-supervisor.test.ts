import { afterEach, describe, expect, it } from "vitest";
import { PrinterSupervisor } from "../../agent/devices/printer-supervisor.js";
import { silentLogger } from "../../agent/log/logger.js";
import { ManualClock } from "../../agent/util/clock.js";
import { FakePrinter, settle } from "../support/fake-printer.js";

const HOLD_MS = 120_000;
const POLL_MS = 1_000;

describe("PrinterSupervisor.awaitReady", () => {
  let supervisor: PrinterSupervisor | undefined;
  afterEach(() => supervisor?.stop());

  async function started(printer: FakePrinter, clock: ManualClock): Promise<PrinterSupervisor> {
    supervisor = new PrinterSupervisor({
      printer: printer.driver,
      clock,
      logger: silentLogger,
      pollMs: POLL_MS,
      reopen: { initialMs: POLL_MS, maxMs: 10 * POLL_MS },
    });
    await supervisor.start();
    return supervisor;
  }

  it("an abort ends the wait for a stopped printer at once: not ready, hold timer gone, printer not taken", async () => {
    const clock = new ManualClock();
    const sup = await started(new FakePrinter({ stopReasons: ["FEEDER_EMPTY"] }), clock);
    expect(sup.status).toMatchObject({ state: "stopped", reason: "FEEDER_EMPTY" });
    const timersBefore = clock.pendingTimers(); // the supervisor's status poll

    const abort = new AbortController();
    let outcome: unknown;
    const waiting = sup.awaitReady(HOLD_MS, abort.signal).then((o) => {
      outcome = o;
    });
    await settle();
    expect(outcome).toBeUndefined();
    expect(clock.pendingTimers()).toBe(timersBefore + 1); // the hold bound

    const t0 = clock.now();
    abort.abort();
    await settle();
    expect(outcome).toEqual({ ready: false, reason: "FEEDER_EMPTY", aborted: true });
    expect(clock.now()).toBe(t0);
    expect(clock.pendingTimers()).toBe(timersBefore);
    expect(sup.status.state).toBe("stopped");
    await waiting;
  });

  it("an already aborted signal never takes the printer, even an idle one", async () => {
    const clock = new ManualClock();
    const sup = await started(new FakePrinter(), clock);
    expect(sup.status.state).toBe("idle");
    const outcome = await sup.awaitReady(HOLD_MS, AbortSignal.abort());
    expect(outcome).toMatchObject({ ready: false, aborted: true });
    expect(sup.status.state).toBe("idle");
    // Without an abort the idle printer is taken at once.
    expect(await sup.awaitReady(HOLD_MS, new AbortController().signal)).toEqual({ ready: true });
    expect(sup.status.state).toBe("busy");
  });

  it("without an abort: the hold bound still fails the wait with the reason, and a cleared printer is taken", async () => {
    const clock = new ManualClock();
    const printer = new FakePrinter({ stopReasons: ["FEEDER_EMPTY"] });
    const sup = await started(printer, clock);
    const abort = new AbortController();

    const held = sup.awaitReady(HOLD_MS, abort.signal);
    clock.advance(HOLD_MS);
    expect(await held).toEqual({ ready: false, reason: "FEEDER_EMPTY" });

    const resumed = sup.awaitReady(HOLD_MS, abort.signal);
    printer.status.stopReasons = [];
    clock.advance(POLL_MS); // the next status poll sees the feeder loaded
    expect(await resumed).toEqual({ ready: true });
    expect(sup.status.state).toBe("busy");
    // A later abort of the same signal touches nothing: the wait's listener was removed.
    abort.abort();
    expect(sup.status.state).toBe("busy");
  });
});
