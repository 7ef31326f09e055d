import { afterEach, describe, expect, it } from "vitest";
import { PrinterSupervisor } from "../../agent/devices/printer-supervisor.js";
import { silentLogger } from "../../agent/log/logger.js";
import { ManualClock } from "../../agent/util/clock.js";
import { DeviceError } from "../../drivers/device-fault.js";
import { FakePrinter, settle } from "../support/fake-printer.js";

const HOLD_MS = 120_000;
const POLL_MS = 1_000;

type SupervisorOptions = ConstructorParameters<typeof PrinterSupervisor>[0];

/** Every supervisor a test started, stopped after it. */
const running: PrinterSupervisor[] = [];
afterEach(() => {
  for (const s of running.splice(0)) s.stop();
});

/** A supervisor over the fake printer with the test's poll and reopen bounds, not started. */
function supervisorFor(printer: FakePrinter, clock: ManualClock, extra: Partial<SupervisorOptions> = {}) {
  const supervisor = new PrinterSupervisor({
    printer: printer.driver,
    clock,
    logger: silentLogger,
    pollMs: POLL_MS,
    reopen: { initialMs: POLL_MS, maxMs: 10 * POLL_MS },
    ...extra,
  });
  running.push(supervisor);
  return supervisor;
}

async function started(printer: FakePrinter, clock: ManualClock, extra: Partial<SupervisorOptions> = {}) {
  const supervisor = supervisorFor(printer, clock, extra);
  await supervisor.start();
  return supervisor;
}

describe("PrinterSupervisor.awaitReady", () => {
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

describe("PrinterSupervisor: supplies, feeders and cleaning (docs/stock.md)", () => {
  const needCleaning = () =>
    new DeviceError("CLEANING_REQUIRED", "print: NEED CLEANING", { device: "printer" });

  it("a print refused NEED CLEANING stops production until the printer was cleaned, though the status alone reads clean", async () => {
    const clock = new ManualClock();
    const printer = new FakePrinter({ cleaning: "advised", warnings: ["CLEANING_ADVISED"] });
    printer.counters = { cardsInserted: 10, cleanings: 4 };
    const sup = await started(printer, clock, { supplyPollMs: 60_000 });
    await settle();
    expect(sup.supplies.cleaningRequired).toBe(false);
    await sup.afterFailure(needCleaning());
    expect(sup.status).toMatchObject({ state: "stopped", reason: "CLEANING_REQUIRED" });
    expect(sup.supplies.cleaningRequired).toBe(true);
    // Polls: no stop reason in the status, but no cleaning either: still stopped.
    clock.advance(POLL_MS);
    await settle();
    expect(sup.status).toMatchObject({ state: "stopped", reason: "CLEANING_REQUIRED" });
    // A cleaning done at the printer (its cleanings counter moves on) lets production go on.
    printer.counters = { cardsInserted: 10, cleanings: 5 };
    clock.advance(POLL_MS);
    await settle();
    expect(sup.status.state).toBe("idle");
    expect(sup.supplies.cleaningRequired).toBe(false);
  });

  it("the cleaning latch also clears when the printer's cleaning request reads OK again", async () => {
    const clock = new ManualClock();
    const printer = new FakePrinter({ cleaning: "advised" });
    const sup = await started(printer, clock);
    await sup.afterFailure(needCleaning());
    clock.advance(POLL_MS);
    await settle();
    expect(sup.status.state).toBe("stopped");
    printer.status.cleaning = "none";
    clock.advance(POLL_MS);
    await settle();
    expect(sup.status.state).toBe("idle");
  });

  it("a technician's cleaning through maintenance() clears the latch; maintenance is refused during a card", async () => {
    const clock = new ManualClock();
    const printer = new FakePrinter({ cleaning: "advised" });
    const sup = await started(printer, clock);
    await sup.afterFailure(needCleaning());
    await sup.maintenance("clean", (p) => p.runCleaning());
    expect(printer.commands).toContain("runCleaning");
    await settle();
    clock.advance(POLL_MS);
    await settle();
    expect(sup.status.state).toBe("idle");
    expect(await sup.awaitReady(HOLD_MS)).toEqual({ ready: true });
    await expect(sup.maintenance("eject", (p) => p.ejectCard())).rejects.toMatchObject({
      code: "PRINTER_BUSY",
    });
  });

  it("supplies are read after every card and every supplyPollMs while idle; a card waits for a read under way", async () => {
    const clock = new ManualClock();
    const printer = new FakePrinter({ ribbon: { remaining: 500, capacity: 1000 } });
    printer.counters = { cardsInserted: 7 };
    const seen: number[] = [];
    const sup = await started(printer, clock, {
      supplyPollMs: 60_000,
      onCounters: (c) => seen.push(c.cardsInserted ?? -1),
    });
    await settle();
    expect(seen).toEqual([7]); // the read after the first open
    expect(await sup.awaitReady(HOLD_MS)).toEqual({ ready: true });
    printer.counters = { cardsInserted: 8 };
    sup.jobEnded();
    await settle();
    expect(seen).toEqual([7, 8]);
    clock.advance(60_000);
    await settle();
    expect(seen).toEqual([7, 8, 8]);
    expect(sup.supplies).toMatchObject({
      counters: { cardsInserted: 8 },
      status: { ribbon: { remaining: 500 } },
    });
  });

  it("two feeders: an insert refused FEEDER_EMPTY marks that feeder only, the printer stays idle, a read with cards clears it", async () => {
    const clock = new ManualClock();
    const printer = new FakePrinter({}, { feeders: ["1", "2"] });
    const sup = await started(printer, clock, { supplyPollMs: 60_000 });
    let changes = 0;
    sup.on("feeders", () => changes++);
    expect(await sup.awaitReady(HOLD_MS)).toEqual({ ready: true });
    await sup.afterFailure(new DeviceError("FEEDER_EMPTY", "Si: FEEDER EMPTY", { device: "printer" }), {
      feeder: "2",
    });
    expect(sup.status.state).toBe("idle");
    expect([...sup.emptyFeeders().keys()]).toEqual(["2"]);
    expect(changes).toBe(1);
    // While a feeder is empty its sensors are read every pollMs, not every supplyPollMs.
    clock.advance(POLL_MS);
    await settle();
    expect(sup.emptyFeeders().size).toBe(0);
    expect(changes).toBe(2);
  });

  it("two feeders, both empty: the printer itself is stopped FEEDER_EMPTY", async () => {
    const clock = new ManualClock();
    const printer = new FakePrinter({}, { feeders: ["1", "2"] });
    const sup = await started(printer, clock);
    expect(await sup.awaitReady(HOLD_MS)).toEqual({ ready: true });
    const empty = (id: string) =>
      sup.afterFailure(new DeviceError("FEEDER_EMPTY", "Si: FEEDER EMPTY", { device: "printer" }), {
        feeder: id,
      });
    await empty("1");
    expect(sup.status.state).toBe("idle");
    // The sensors agree: both empty, which the adapter reports as the printer's own stop reason.
    printer.status.feeders = [
      { id: "1", empty: true, nearEmpty: false },
      { id: "2", empty: true, nearEmpty: false },
    ];
    printer.status.stopReasons = ["FEEDER_EMPTY"];
    expect(await sup.awaitReady(HOLD_MS)).toEqual({ ready: true });
    await empty("2");
    await settle();
    expect(sup.status).toMatchObject({ state: "stopped", reason: "FEEDER_EMPTY" });
    expect([...sup.emptyFeeders().keys()].sort()).toEqual(["1", "2"]);
  });
});

describe("PrinterSupervisor.maintenance never overlaps a card or a recovery pass", () => {
  it("a technician's command and a card waiting on the same supply read: one after the other, never both", async () => {
    const clock = new ManualClock();
    const printer = new FakePrinter();
    let releaseRead: () => void = () => undefined;
    let gated = false;
    printer.readCounters = async () => {
      if (gated) {
        await new Promise<void>((r) => {
          releaseRead = r;
        });
      }
      return {};
    };
    const sup = await started(printer, clock, { supplyPollMs: 60_000 });
    await settle();
    expect(await sup.awaitReady(HOLD_MS)).toEqual({ ready: true });
    gated = true;
    sup.jobEnded(); // the supply read after the card starts, and hangs in the counters read
    await settle();

    let cardReady = false;
    const card = sup.awaitReady(HOLD_MS).then(() => {
      cardReady = true;
    });
    let opRunning = false;
    let finishOp: () => void = () => undefined;
    const op = sup.maintenance("eject", async () => {
      opRunning = true;
      await new Promise<void>((r) => {
        finishOp = r;
      });
      opRunning = false;
    });
    await settle();
    expect([cardReady, opRunning]).toEqual([false, false]);
    gated = false;
    releaseRead();
    await settle(50);
    // The technician's command got the printer first; the card waits for it.
    expect([cardReady, opRunning]).toEqual([false, true]);
    expect(sup.status).toMatchObject({ state: "busy", reason: "MAINTENANCE" });
    finishOp();
    await op;
    await card;
    expect(cardReady).toBe(true);
    expect(sup.status.state).toBe("busy");
    // And now a command is refused while the card is in production.
    await expect(sup.maintenance("eject", (p) => p.ejectCard())).rejects.toMatchObject({
      code: "PRINTER_BUSY",
    });
  });

  it("a command run while the printer is stopped is not interrupted by the recovery loop's polls", async () => {
    const clock = new ManualClock();
    const printer = new FakePrinter({ stopReasons: ["COVER_OPEN"] });
    const sup = await started(printer, clock);
    expect(sup.status).toMatchObject({ state: "stopped", reason: "COVER_OPEN" });
    let finishOp: () => void = () => undefined;
    const op = sup.maintenance(
      "counters",
      () =>
        new Promise<void>((r) => {
          finishOp = r;
        }),
    );
    await settle();
    expect(sup.status).toMatchObject({ state: "busy", reason: "MAINTENANCE" });
    printer.status.stopReasons = []; // the cover is closed during the command
    clock.advance(POLL_MS);
    await settle();
    // The poll waits for the command: no card may start in the middle of it.
    expect(sup.status).toMatchObject({ state: "busy", reason: "MAINTENANCE" });
    finishOp();
    await op;
    await settle(50);
    expect(sup.status.state).toBe("idle");
  });
});
