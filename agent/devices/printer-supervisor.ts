import { EventEmitter } from "node:events";
import { DeviceError, type DeviceFault } from "../../drivers/device-fault.js";
import { type CardPrinter, problemIn } from "../../drivers/printer/card-printer.js";
import { Backoff } from "../d1/backoff.js";
import type { Logger } from "../log/logger.js";
import { type Clock, delay } from "../util/clock.js";

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
}

/**
 * Owns the printer's availability: opens it (and re-opens it with backoff after an unplug), clears
 * a card left in the path after a failure, and keeps it "stopped" with a reason until a status read
 * shows the condition cleared. The pipeline asks `awaitReady()` before taking a card.
 */
export class PrinterSupervisor extends EventEmitter<{ change: [PrinterSnapshot] }> {
  private snapshot: PrinterSnapshot;
  private running = false;
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private waiters = new Set<() => void>();
  private recovering: Promise<void> | undefined;
  private firstOpen: (() => Promise<void>) | undefined;
  private resyncOnOpen: boolean;

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

  /** Opens the printer in the background; resolves once it was opened the first time. */
  async start(): Promise<void> {
    this.running = true;
    this.recover();
    await this.untilState(["idle", "stopped"]);
  }

  stop(): void {
    this.running = false;
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
      if (this.snapshot.state === "idle") break;
      const left = deadline - this.options.clock.now();
      if (left <= 0 || !this.running) return { ready: false, reason: this.notReadyReason() };
      await this.nextChangeOrTimeout(left, signal);
    }
    this.set("busy");
    return { ready: true };
  }

  /** The card in hand ended well (taken, captured): the printer is free. */
  jobEnded(): void {
    if (this.snapshot.state === "busy") this.set("idle");
  }

  /**
   * A card failed. The card path is checked and cleared (a card left inside is rejected, one in the
   * mouth retracted) and a fault about the printer itself stops it until its status clears.
   */
  async afterFailure(err: unknown): Promise<void> {
    // Another device's fault (a separate magstripe encoder) says nothing about the printer.
    const fault = err instanceof DeviceError && err.device === "printer" ? err.code : undefined;
    if (fault) this.snapshot.lastFault = { reason: fault, at: this.isoNow() };
    if (fault === "DEVICE_DISCONNECTED") {
      this.set("offline", fault);
      this.recover();
      return;
    }
    if (fault && STOPPING_FAULTS.has(fault)) {
      this.set("stopped", fault);
      this.recover();
      return;
    }
    try {
      await this.clearCardPath();
      this.set("idle");
    } catch (clearErr) {
      this.log.error({ err: clearErr }, "could not clear the card path after a failure");
      this.set("stopped", clearErr instanceof DeviceError ? clearErr.code : "DEVICE_TIMEOUT");
      this.recover();
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
        if (!printer.isOpen) {
          await printer.open(this.resyncOnOpen ? { resync: true } : {});
          this.resyncOnOpen = false;
        }
        if (this.firstOpen) {
          await this.firstOpen();
          this.firstOpen = undefined;
        }
        await this.clearCardPath();
        const problem = problemIn(await printer.readStatus());
        if (!problem) {
          this.backoff.reset();
          if (this.snapshot.state !== "busy") this.set("idle");
          return;
        }
        this.set("stopped", problem);
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
    const position = (await printer.readStatus()).cardPosition;
    if (position === "NONE") return;
    this.log.warn({ position }, "a card was left in the printer; clearing it");
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

  private isoNow(): string {
    return new Date(this.options.clock.now()).toISOString();
  }
}
