import { EventEmitter } from "node:events";
import { DeviceError, type DeviceFault } from "../../drivers/device-fault.js";
import {
  type CardPrinter,
  type PrinterCounters,
  type PrinterStatus,
  problemIn,
} from "../../drivers/printer/card-printer.js";
import { Backoff } from "../d1/backoff.js";
import type { Logger } from "../log/logger.js";
import { type Clock, delay, type TimerHandle } from "../util/clock.js";
import { CodedError } from "../util/errors.js";
import { Mutex } from "../util/mutex.js";

/**
 * What the kiosk's printer is doing, the way CUPS shows a printer: a state and, when it is not
 * working, a reason keyword (the same keywords as D1's `details.reason`, docs/reasons.md).
 */
export type PrinterState = "connecting" | "idle" | "busy" | "stopped" | "offline";

export interface PrinterSnapshot {
  state: PrinterState;
  reason?: string;
  /** When the state last changed (ISO). */
  since: string;
  lastFault?: { reason: string; at: string };
}

/** What the supervisor last read of the printer's supplies (agent/stock/supplies.ts builds on it). */
export interface SupplyReadings {
  /** The last status read, and when (ISO). */
  status?: PrinterStatus;
  readAt?: string;
  counters?: PrinterCounters;
  /**
   * Feeders known empty (by a sensor or a refused insert), since when: monotonic ms (`clock.now()`),
   * as the pipeline's hold bound counts from it; not a date.
   */
  emptyFeeders: ReadonlyMap<string, number>;
  /** A print was refused for want of a cleaning: production stays stopped until the printer is cleaned. */
  cleaningRequired: boolean;
}

/** Why a technician's operation was not run (agent/cli/printer.ts shows the message). */
export class MaintenanceError extends CodedError<"PRINTER_BUSY" | "PRINTER_OFFLINE"> {}

/** After a failure: the card path is clear now, or not, with the error that kept it from clearing. */
export type CardPathOutcome = { cleared: true } | { cleared: false; error: unknown };

/** Faults that say the printer itself needs attention, not just this card. */
const STOPPING_FAULTS: ReadonlySet<DeviceFault> = new Set([
  "FEEDER_EMPTY",
  "RIBBON_OUT",
  "COVER_OPEN",
  "CARD_JAM",
  "REJECT_BOX_FULL",
  "CLEANING_REQUIRED",
  "MECHANICAL_ERROR",
  "CARD_IN_PATH",
  "PRINTER_ERROR",
  "DEVICE_TIMEOUT",
  "PROTOCOL_ERROR",
  "DEVICE_DISCONNECTED",
]);

export interface PrinterSupervisorOptions {
  printer: CardPrinter;
  clock: Clock;
  logger: Logger;
  /** How often a stopped printer's status is read to see whether the condition cleared. */
  pollMs: number;
  /** Reopen backoff after the port went away. */
  reopen: { initialMs: number; maxMs: number };
  /**
   * Runs once, right after the printer is first opened and before anything is cleared: crash
   * recovery must see where a card was left before the supervisor tidies it away.
   */
  onFirstOpen?: () => Promise<void>;
  /**
   * The previous run ended with a card in production (the store says so): it may have died in the
   * middle of a printer command, so the first open brings the printer back to a command boundary.
   */
  resyncFirstOpen?: boolean;
  /**
   * How often an idle printer's supplies (status and counters) are read; they are also read after
   * every card, and every `pollMs` while a feeder is empty. Undefined: only when recovering.
   */
  supplyPollMs?: number;
  /** Every status the supervisor read; the supply readings are updated first. */
  onStatus?: (status: PrinterStatus) => void;
  /** Every counters read (after each card and each supply poll). */
  onCounters?: (counters: PrinterCounters) => void;
  /** After each look at the card path: whether a card was found there (and cleared). */
  onCardPathChecked?: (cardFound: boolean) => void;
}

/**
 * Owns the printer's availability: opens it (and re-opens it with backoff after an unplug), clears
 * a card left in the path after a failure, and keeps it "stopped" with a reason until a status read
 * shows the condition cleared. The pipeline asks `awaitReady()` before taking a card.
 */
export class PrinterSupervisor extends EventEmitter<{
  change: [PrinterSnapshot];
  /** A feeder was found empty, or has cards again. */
  feeders: [];
  /** A status or counters read: the supplies picture may have changed. */
  supplies: [];
}> {
  private snapshot: PrinterSnapshot;
  private running = false;
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private waiters = new Set<() => void>();
  private recovering: Promise<void> | undefined;
  private firstOpen: (() => Promise<void>) | undefined;
  private resyncOnOpen: boolean;
  private readonly readings: {
    status?: PrinterStatus;
    readAt?: string;
    counters?: PrinterCounters;
    emptyFeeders: Map<string, number>;
    /** Set by a print refused NEED CLEANING: the cleanings counter then, if readable. */
    cleaningLatch?: { cleanings: number | undefined };
  } = { emptyFeeders: new Map() };
  /**
   * The supervisor's own turns at the printer (a recovery pass, clearing the path after a failure,
   * a supply read, a technician's operation) take this lock, so none of them interleaves with
   * another: a technician's command never meets a recovery pass half-way, nor the reverse.
   */
  private readonly turn = new Mutex();
  /** A supply read under way: awaitReady() lets no card start before it ends. */
  private supplyRead: Promise<void> | undefined;
  private supplyTimer: TimerHandle | undefined;

  constructor(private readonly options: PrinterSupervisorOptions) {
    super();
    this.log = options.logger.child({ component: "printer-supervisor" });
    this.backoff = new Backoff(options.reopen);
    this.firstOpen = options.onFirstOpen;
    this.resyncOnOpen = options.resyncFirstOpen ?? false;
    this.snapshot = { state: "connecting", since: this.isoNow() };
    options.printer.onDisconnect(() => {
      if (!this.running) return;
      this.set("offline", "DEVICE_DISCONNECTED");
      this.recover();
    });
  }

  get status(): PrinterSnapshot {
    return { ...this.snapshot };
  }

  get supplies(): SupplyReadings {
    const r = this.readings;
    return {
      ...(r.status ? { status: r.status } : {}),
      ...(r.readAt ? { readAt: r.readAt } : {}),
      ...(r.counters ? { counters: r.counters } : {}),
      emptyFeeders: new Map(r.emptyFeeders),
      cleaningRequired: r.cleaningLatch !== undefined,
    };
  }

  /** Opens the printer in the background; resolves once it was opened the first time. */
  async start(): Promise<void> {
    this.running = true;
    this.recover();
    await this.untilState(["idle", "stopped"]);
  }

  stop(): void {
    this.running = false;
    if (this.supplyTimer) this.options.clock.clearTimeout(this.supplyTimer);
    this.supplyTimer = undefined;
    this.wakeWaiters();
  }

  /**
   * Resolves `ready` as soon as the printer is idle, or, if it stays stopped/offline for `holdMs`,
   * with the reason it is stopped for: the job then fails with that reason and no card is used.
   * `signal` (the pipeline stopping) ends the wait at once with `aborted: true` and never takes the
   * printer, even an idle one: the caller leaves its job as it was.
   */
  async awaitReady(
    holdMs: number,
    signal?: AbortSignal,
  ): Promise<{ ready: true } | { ready: false; reason: string; aborted?: true }> {
    const deadline = this.options.clock.now() + holdMs;
    for (;;) {
      if (signal?.aborted) return { ready: false, reason: this.notReadyReason(), aborted: true };
      if (this.supplyRead) {
        await this.supplyRead;
        continue;
      }
      if (this.snapshot.state === "idle") break;
      const left = deadline - this.options.clock.now();
      if (left <= 0 || !this.running) return { ready: false, reason: this.notReadyReason() };
      await this.nextChangeOrTimeout(left, signal);
    }
    this.set("busy");
    return { ready: true };
  }

  /** The card in hand ended well (taken, captured): the printer is free, and its supplies are read. */
  jobEnded(): void {
    if (this.snapshot.state === "busy") this.set("idle");
    this.readSupplies();
  }

  /**
   * Feeders known empty, since when. An insert refused FEEDER_EMPTY marks its feeder at once; the
   * next status read that sees cards there clears it.
   */
  emptyFeeders(): ReadonlyMap<string, number> {
    return this.readings.emptyFeeders;
  }

  /**
   * Runs a technician's operation (docs/stock.md) between cards, never during one: refused while a
   * card is in production or the printer is away. Production waits while it runs; afterwards the
   * status is read again (a cleaning clears a NEED CLEANING stop).
   */
  async maintenance<T>(name: string, operation: (printer: CardPrinter) => Promise<T>): Promise<T> {
    this.refuseMaintenanceNow();
    // Waits for a recovery pass, a path clearing or a supply read under way, then checks again: a
    // card may have started meanwhile. The check and the `busy` that follows are in one turn, as
    // in awaitReady(), so a card and a technician's command never both start.
    return this.turn.run(async () => {
      this.refuseMaintenanceNow();
      const before = this.snapshot;
      this.set("busy", "MAINTENANCE");
      this.log.info({ operation: name }, "technician operation");
      try {
        return await operation(this.options.printer);
      } finally {
        if (name === "clean") this.readings.cleaningLatch = undefined;
        this.set(
          before.state === "stopped" ? "stopped" : "idle",
          before.state === "stopped" ? before.reason : undefined,
        );
        // After the lock is released: the status is read again, by the recovery loop or a supply read.
        queueMicrotask(() => (this.snapshot.state === "stopped" ? this.recover() : this.readSupplies()));
      }
    });
  }

  private refuseMaintenanceNow(): void {
    const { state, reason } = this.snapshot;
    if (state === "busy") {
      throw new MaintenanceError(
        "PRINTER_BUSY",
        reason === "MAINTENANCE"
          ? "another technician operation is running"
          : "a card is in production; try again between cards",
      );
    }
    if (state === "offline" || state === "connecting" || !this.options.printer.isOpen) {
      throw new MaintenanceError("PRINTER_OFFLINE", `the printer is ${state}`);
    }
    if (this.recovering && state === "idle") {
      // Idle but a recovery pass is still clearing a failed card: the path is not free yet.
      throw new MaintenanceError("PRINTER_BUSY", "the printer is clearing a card; try again in a moment");
    }
  }

  /**
   * A card failed. The card path is checked and cleared (a card left inside is rejected, one in the
   * mouth retracted) and a fault about the printer itself stops it until its status clears.
   * Resolves with whether the path was cleared now: `cleared: false` with the error that stopped it
   * (the recovery loop keeps trying), e.g. for a cancel, which is CANCELED only once its card is out.
   */
  async afterFailure(err: unknown, context: { feeder?: string } = {}): Promise<CardPathOutcome> {
    // Another device's fault (a separate magstripe encoder) says nothing about the printer.
    const fault = err instanceof DeviceError && err.device === "printer" ? err.code : undefined;
    if (fault) this.snapshot.lastFault = { reason: fault, at: this.isoNow() };
    if (fault === "DEVICE_DISCONNECTED") {
      this.set("offline", fault);
      this.recover();
      return { cleared: false, error: err };
    }
    if (
      fault === "FEEDER_EMPTY" &&
      context.feeder !== undefined &&
      this.options.printer.capabilities.feeders.length > 1
    ) {
      // One feeder of several: only its stock's jobs wait (the pipeline holds them); no card was taken.
      this.readings.emptyFeeders.set(context.feeder, this.options.clock.now());
      this.emit("feeders");
      if (!this.options.printer.capabilities.feeders.every((f) => this.readings.emptyFeeders.has(f))) {
        this.set("idle");
        this.scheduleSupplyRead();
        return { cleared: true };
      }
    }
    if (fault === "CLEANING_REQUIRED") {
      this.readings.cleaningLatch = { cleanings: this.readings.counters?.cleanings };
    }
    if (fault && STOPPING_FAULTS.has(fault)) {
      this.set("stopped", fault);
      this.recover();
      return { cleared: false, error: err };
    }
    try {
      await this.turn.run(() => this.clearCardPath());
      this.set("idle");
      this.readSupplies();
      return { cleared: true };
    } catch (clearErr) {
      this.log.error({ err: clearErr }, "could not clear the card path after a failure");
      this.set("stopped", clearErr instanceof DeviceError ? clearErr.code : "DEVICE_TIMEOUT");
      this.recover();
      return { cleared: false, error: clearErr };
    }
  }

  /** One recovery loop at a time: (re)open if needed, clear the path, poll until the status is clean. */
  private recover(): void {
    if (this.recovering) return;
    this.recovering = this.recoverLoop().finally(() => {
      this.recovering = undefined;
    });
  }

  private async recoverLoop(): Promise<void> {
    const { printer, clock } = this.options;
    while (this.running) {
      try {
        const problem = await this.turn.run(async () => {
          if (!printer.isOpen) {
            await printer.open(this.resyncOnOpen ? { resync: true } : {});
            this.resyncOnOpen = false;
          }
          if (this.firstOpen) {
            await this.firstOpen();
            this.firstOpen = undefined;
          }
          await this.clearCardPath();
          return this.problemNow();
        });
        if (!problem) {
          this.backoff.reset();
          if (this.snapshot.state !== "busy") this.set("idle");
          this.readSupplies();
          return;
        }
        // A technician's operation that began from "stopped" keeps its busy state until it ends.
        if (this.snapshot.reason !== "MAINTENANCE") this.set("stopped", problem);
        await delay(clock, this.options.pollMs);
      } catch (err) {
        const code = err instanceof DeviceError ? err.code : "DEVICE_DISCONNECTED";
        const offline = code === "DEVICE_DISCONNECTED" || !printer.isOpen;
        this.set(offline ? "offline" : "stopped", code);
        const { delayMs, attempt } = this.backoff.next();
        this.log.warn({ reason: code, attempt, delayMs }, "printer not ready; retrying");
        await delay(clock, Math.max(delayMs, offline ? this.options.reopen.initialMs : this.options.pollMs));
      }
    }
  }

  private async clearCardPath(): Promise<void> {
    const { printer } = this.options;
    const position = this.observe(await printer.readStatus()).cardPosition;
    if (position === "NONE") {
      this.options.onCardPathChecked?.(false);
      return;
    }
    this.log.warn({ position }, "a card was left in the printer; clearing it");
    // Counted as found before it moves: a stop between the two must not lose the card.
    this.options.onCardPathChecked?.(true);
    if (position !== "MOUTH") {
      await printer.rejectCard();
      return;
    }
    try {
      await printer.captureCard();
    } catch (err) {
      // Taken from the mouth between the status read and the capture: the path is clear.
      if (!(err instanceof DeviceError && err.code === "NO_CARD")) throw err;
    }
  }

  /**
   * The reason the printer cannot take a card now: its status, or a NEED CLEANING refusal that no
   * cleaning has answered yet (Rlr;r back to OK, or the cleanings counter moved on).
   */
  private async problemNow(): Promise<string | undefined> {
    const { printer } = this.options;
    const status = this.observe(await printer.readStatus());
    const problem = problemIn(status);
    if (problem) return problem;
    const latch = this.readings.cleaningLatch;
    if (!latch) return undefined;
    const counters = await printer.readCounters();
    this.observeCounters(counters);
    const cleanedSince =
      latch.cleanings !== undefined &&
      counters.cleanings !== undefined &&
      counters.cleanings > latch.cleanings;
    if (status.cleaning === "none" || cleanedSince) {
      this.readings.cleaningLatch = undefined;
      return undefined;
    }
    return "CLEANING_REQUIRED";
  }

  /** Keeps what a status read says about supplies and feeders, and passes it on. */
  private observe(status: PrinterStatus): PrinterStatus {
    const now = this.options.clock.now();
    const empty = this.readings.emptyFeeders;
    let changed = false;
    for (const feeder of status.feeders) {
      if (!feeder.empty) changed = empty.delete(feeder.id) || changed;
      else if (!empty.has(feeder.id)) {
        empty.set(feeder.id, now);
        changed = true;
      }
    }
    this.readings.status = status;
    this.readings.readAt = new Date(this.options.clock.wallNow()).toISOString();
    this.options.onStatus?.(status);
    if (changed) this.emit("feeders");
    this.emit("supplies");
    return status;
  }

  private observeCounters(counters: PrinterCounters): void {
    this.readings.counters = counters;
    this.options.onCounters?.(counters);
    this.emit("supplies");
  }

  /**
   * Reads the supplies of an idle printer (status, then counters) and re-arms the poll. A card
   * waits for it (awaitReady); a condition that now stops the printer stops it.
   */
  private readSupplies(): void {
    if (this.options.supplyPollMs === undefined || this.supplyRead || !this.running) return;
    if (this.snapshot.state !== "idle") return;
    this.supplyRead = (async () => {
      try {
        const problem = await this.turn.run(async () => {
          const found = await this.problemNow();
          this.observeCounters(await this.options.printer.readCounters());
          return found;
        });
        if (problem && this.running && this.snapshot.state === "idle") {
          this.set("stopped", problem);
          this.recover();
        }
      } catch (err) {
        // Stopping closes the printer under a read: nothing to report then.
        if (!this.running) return;
        this.log.warn({ err }, "supply read failed");
        // Only for an idle printer: a card or a technician's operation that started meanwhile has
        // its own failure path.
        if (err instanceof DeviceError && err.device === "printer" && this.snapshot.state === "idle") {
          this.set(err.code === "DEVICE_DISCONNECTED" ? "offline" : "stopped", err.code);
          this.recover();
        }
      } finally {
        this.supplyRead = undefined;
        this.wakeWaiters();
        this.scheduleSupplyRead();
      }
    })();
  }

  private scheduleSupplyRead(): void {
    const every = this.options.supplyPollMs;
    if (every === undefined || !this.running) return;
    if (this.supplyTimer) this.options.clock.clearTimeout(this.supplyTimer);
    const ms = this.readings.emptyFeeders.size > 0 ? Math.min(every, this.options.pollMs) : every;
    this.supplyTimer = this.options.clock.setTimeout(() => {
      this.supplyTimer = undefined;
      if (this.snapshot.state === "idle") this.readSupplies();
      else this.scheduleSupplyRead();
    }, ms);
  }

  private set(state: PrinterState, reason?: string): void {
    const same = this.snapshot.state === state && this.snapshot.reason === reason;
    if (same) return;
    if (state !== this.snapshot.state) this.log.info({ state, reason }, "printer state");
    this.snapshot = {
      state,
      ...(reason ? { reason } : {}),
      since: this.isoNow(),
      ...(this.snapshot.lastFault ? { lastFault: this.snapshot.lastFault } : {}),
    };
    this.emit("change", this.status);
    this.wakeWaiters();
  }

  private untilState(states: PrinterState[]): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (states.includes(this.snapshot.state) || !this.running) {
          this.off("change", check);
          resolve();
        }
      };
      this.on("change", check);
      check();
    });
  }

  private notReadyReason(): string {
    return this.snapshot.reason ?? "DEVICE_DISCONNECTED";
  }

  /** Resolves on the next state change, after `ms`, or when `signal` aborts, whichever is first. */
  private nextChangeOrTimeout(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        this.waiters.delete(wake);
        this.options.clock.clearTimeout(timer);
        signal?.removeEventListener("abort", wake);
        resolve();
      };
      const timer = this.options.clock.setTimeout(wake, ms);
      this.waiters.add(wake);
      signal?.addEventListener("abort", wake, { once: true });
    });
  }

  private wakeWaiters(): void {
    const waiting = [...this.waiters];
    this.waiters.clear();
    for (const w of waiting) w();
  }

  /** `since`, `at`, `readAt`: timestamps people read, so wall time (docs/architecture.md#time). */
  private isoNow(): string {
    return new Date(this.options.clock.wallNow()).toISOString();
  }
}
