import { EventEmitter } from "node:events";
import { ChipError, runApduScript } from "../../drivers/chip/apdu-runner.js";
import type { ApduTransport } from "../../drivers/chip/apdu-transport.js";
import { DeviceError } from "../../drivers/device-fault.js";
import type { MagstripeEncoder } from "../../drivers/magstripe/encoder.js";
import type { CardImage, PrintArea } from "../../drivers/printer/card-image.js";
import type { CardPrinter, PrintSides } from "../../drivers/printer/card-printer.js";
import type { PrinterSupervisor } from "../devices/printer-supervisor.js";
import type { ProductionJob } from "../jobs/production-job.js";
import type { JobState } from "../jobs/state-machine.js";
import type { Logger } from "../log/logger.js";
import { feedAfterInsertFailure } from "../stock/card-movement.js";
import { type Route, StockRouter } from "../stock/stock-router.js";
import type { JobRow, JobStore, OutboxEvent, StopDetails } from "../store/job-store.js";
import { storeFaultOf } from "../store/store-health.js";
import type { Clock, TimerHandle } from "../util/clock.js";
import { CodedError } from "../util/errors.js";
import { REASONS, reasonForDeviceFault } from "./reasons.js";

/**
 * Renders one side's print lines for the printer's print area (its capabilities say which). Throws
 * (or rejects) for print lines it cannot render; may render off the event loop.
 */
export type SideRenderer = (
  lines: Array<{ text: string; xMm: number; yMm: number; sizePt: number }>,
  area: PrintArea,
) => CardImage | Promise<CardImage>;

type SideLines = Parameters<SideRenderer>[0];

export type ProductionStep = "render" | "insert" | "chip" | "print" | "encode" | "present" | "collect";

export interface PipelineOptions {
  store: JobStore;
  /** The printer, through the family-neutral interface: the pipeline never sees a command. */
  printer: CardPrinter;
  supervisor: PrinterSupervisor;
  /** The printer's built-in encoder or a separate one (drivers/magstripe/create-encoder.ts). */
  magstripe: MagstripeEncoder;
  /**
   * How long a job waits for a stopped or offline printer, or for its empty feeder, before it fails
   * with the reason.
   */
  holdWhileStoppedMs: number;
  /**
   * Picks each job's feeder by its card stock (docs/stock.md). Default: the printer's first feeder
   * takes every job.
   */
  router?: StockRouter;
  /** The chip reader; absent on kiosks without one (a job with a chip part then fails). */
  chip?: ApduTransport;
  render: SideRenderer;
  clock: Clock;
  logger: Logger;
  defaultCollectTimeoutSec: number;
  /** Called with every outbox event a state change wrote, so it can be sent at once. */
  onEvent: (event: OutboxEvent) => void;
}

/** How a cancel of the job in production ended (agent.ts#onCancel answers D1 from it). */
export interface CancelOutcome {
  canceled: boolean;
  state: JobState;
  /** Canceled at a step boundary, but the reject failed: the job is FAILED, the card in the printer. */
  notRejected?: true;
}

export interface PipelineEvents {
  step: [operationId: string, step: ProductionStep];
  finished: [operationId: string, state: JobState];
}

/**
 * Produces READY jobs one at a time, in the order D1 pushed them. The pipeline owns the physical
 * card: PRODUCING is committed before the first command to the printer, and from then on every way
 * out ends the job with exactly one terminal state (DONE, FAILED with a reason, or CANCELED).
 */
export class ProductionPipeline extends EventEmitter<PipelineEvents> {
  private running = false;
  /** Aborted by stop() and beginShutdown(): ends a wait for a stopped printer at once. */
  private stopping = new AbortController();
  private wakeUp: (() => void) | undefined;
  private loopDone: Promise<void> = Promise.resolve();
  private readonly log: Logger;
  /** The job on the printer right now, if any (status, cancel and shutdown read it). */
  current: { operationId: string; step: ProductionStep } | undefined;
  private shutdownDeadline: number | undefined;
  /** Held READY jobs → when the pipeline first found them held (monotonic ms). */
  private heldFrom = new Map<string, number>();
  private readonly cancelRequests = new Map<string, (outcome: CancelOutcome) => void>();
  /** Jobs canceled in production whose card could not be rejected: their cancel is refused. */
  private readonly cancelNotRejected = new Set<string>();

  private readonly router: StockRouter;

  constructor(private readonly options: PipelineOptions) {
    super();
    this.log = options.logger.child({ component: "pipeline" });
    this.router =
      options.router ??
      new StockRouter([{ id: options.printer.capabilities.feeders[0] ?? "1", nearEmptyAt: 0 }], (f) =>
        options.store.stock.lastLoadedStock(f),
      );
    // A feeder refilled (or found empty) changes which jobs may go next.
    options.supervisor.on("feeders", () => this.wake());
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    if (this.stopping.signal.aborted) this.stopping = new AbortController();
    this.loopDone = this.loop();
  }

  /** Signals that a job may be waiting. */
  wake(): void {
    const w = this.wakeUp;
    this.wakeUp = undefined;
    w?.();
  }

  /**
   * Stops taking new jobs; resolves when the job in hand (if any) has ended. A job still waiting for
   * a stopped printer stops waiting at once and stays READY for the next run.
   */
  async stop(): Promise<void> {
    this.running = false;
    this.stopping.abort();
    this.wake();
    await this.loopDone;
  }

  /** False once stop() or beginShutdown() was called: no job moves to PRODUCING from then on. */
  private get accepting(): boolean {
    return this.running && this.shutdownDeadline === undefined;
  }

  private async loop(): Promise<void> {
    while (this.accepting) {
      const next = await this.nextJob();
      if (!next) continue;
      const { row, nextDeadline } = next;
      if (!row) {
        await this.idle(nextDeadline);
        continue;
      }
      try {
        await this.produce(row);
      } catch (err) {
        if (storeFaultOf(err)) {
          // Only when stopping with the store unwritable: the job keeps its last committed state.
          this.log.warn(
            { operationId: row.operationId },
            "stopping while the store is unwritable; recovery finishes the job at the next start",
          );
          this.current = undefined;
          continue;
        }
        // produce() ends every job itself; reaching here is a bug, and the service must go on.
        this.log.error({ err, operationId: row.operationId }, "pipeline failure outside a job step");
      }
    }
  }

  /**
   * One pass of the loop's reads and hold bookkeeping. A store that cannot be read or written (a
   * corrupt page, a full disk) is reported, and the loop waits until the store takes writes again.
   */
  private async nextJob(): Promise<{ row?: JobRow; nextDeadline?: number } | undefined> {
    try {
      const held = this.holds();
      const nextDeadline = this.failExpiredHolds(held);
      const row = this.options.store.nextReady(held.map((h) => h.stock));
      return { ...(row ? { row } : {}), ...(nextDeadline !== undefined ? { nextDeadline } : {}) };
    } catch (err) {
      const reason = storeFaultOf(err);
      if (!reason) throw err;
      this.options.store.health.report(err); // a read (a corrupt page) is not reported by the store itself
      this.log.error({ reason }, "the job store cannot be read or written; production waits for it");
      await this.options.store.health.writable(this.stopping.signal).catch(() => undefined);
      return undefined;
    }
  }

  /**
   * Stocks whose feeder is empty while another feeder still has cards: their jobs wait, the others
   * go on (docs/stock.md). When every feeder is empty the printer itself is stopped (FEEDER_EMPTY)
   * and jobs wait for it in awaitReady() as for any stop.
   */
  private holds(): Array<{ stock: string | null; since: number }> {
    const empty = this.options.supervisor.emptyFeeders();
    if (empty.size === 0) return [];
    const feeders = this.options.printer.capabilities.feeders;
    if (feeders.every((f) => empty.has(f))) return [];
    const held: Array<{ stock: string | null; since: number }> = [];
    for (const stock of this.options.store.readyStocks()) {
      const route = this.router.route(stock);
      const since = route && empty.get(route.feeder);
      if (since !== undefined) held.push({ stock, since });
    }
    return held;
  }

  /**
   * A held job fails FEEDER_EMPTY once it has waited `holdWhileStoppedMs` (counted from when the
   * pipeline first found it held, i.e. from its acceptance or its feeder emptying, whichever is
   * later), as a job waiting for a stopped printer does. Returns the next such deadline.
   */
  private failExpiredHolds(held: Array<{ stock: string | null; since: number }>): number | undefined {
    const now = this.options.clock.now();
    let next: number | undefined;
    const heldFrom = new Map<string, number>();
    for (const { stock, since } of held) {
      for (const job of this.options.store.readyJobsOfStock(stock)) {
        // Not its acceptedAt: that is wall time, and a clock step would fail the job at once or hold
        // it for hours. First seen is at most one card's production after it was accepted.
        const seen = this.heldFrom.get(job.operationId) ?? now;
        heldFrom.set(job.operationId, seen);
        const deadline = Math.max(since, seen) + this.options.holdWhileStoppedMs;
        if (deadline > now) {
          next = Math.min(next ?? deadline, deadline);
          continue;
        }
        const feeder = this.router.route(stock)?.feeder;
        this.log.warn(
          { operationId: job.operationId, feeder },
          "its feeder stayed empty past the hold bound; job fails",
        );
        this.moveNow(job.operationId, "READY", "FAILED", {
          reason: "FEEDER_EMPTY",
          errorCode: "FEEDER_EMPTY",
          error: `feeder ${feeder} empty`,
        });
      }
    }
    this.heldFrom = heldFrom;
    return next;
  }

  /** Waits for a wake-up (a push, a feeder change) or until `deadline`. */
  private async idle(deadline: number | undefined): Promise<void> {
    let timer: TimerHandle | undefined;
    await new Promise<void>((resolve) => {
      this.wakeUp = resolve;
      if (deadline !== undefined) {
        timer = this.options.clock.setTimeout(
          () => this.wake(),
          Math.max(0, deadline - this.options.clock.now()),
        );
      }
    });
    if (timer) this.options.clock.clearTimeout(timer);
  }

  private async produce(row: JobRow): Promise<void> {
    const { store, printer } = this.options;
    const id = row.operationId;
    const log = this.log.child({ operationId: id, maskedPan: row.maskedPan ?? undefined });
    const route = this.router.route(row.cardStock);
    if (!route) {
      log.warn({ cardStock: row.cardStock }, "no feeder holds the job's card stock; no card was used");
      await this.move(id, "READY", "FAILED", {
        reason: REASONS.STOCK_NOT_LOADED,
        errorCode: REASONS.STOCK_NOT_LOADED,
        error: "no feeder holds the card stock",
      });
      return;
    }

    let job: ProductionJob;
    let rendering: Promise<PrintSides>;
    try {
      this.setStep(id, "render");
      job = JSON.parse(store.loadJobJson(id)) as ProductionJob;
      // Rendered while the printer is awaited and PRODUCING is committed; awaited before the insert.
      rendering = this.renderSides(job);
    } catch (err) {
      await this.failRender(id, "READY", err, log);
      return;
    }
    rendering.catch(() => undefined); // awaited below; a stop before then must not leave it unhandled

    const availability = await this.options.supervisor.awaitReady(
      this.options.holdWhileStoppedMs,
      this.stopping.signal,
    );
    const stillReady = this.options.store.get(id)?.state === "READY";
    if (!stillReady || !this.accepting) {
      // Canceled by D1 while it waited for the printer, or the agent is stopping: then no card was
      // taken, the job stays READY with no status sent, and the next run produces it.
      if (availability.ready) this.options.supervisor.jobEnded();
      if (stillReady) log.info("agent stopping: the job stays READY for the next run");
      this.current = undefined;
      return;
    }
    if (!availability.ready) {
      log.warn({ reason: availability.reason }, "printer stopped for longer than the hold bound; job fails");
      await this.move(id, "READY", "FAILED", {
        reason: availability.reason,
        errorCode: availability.reason,
        error: "printer stopped",
      });
      return;
    }

    // Committed before the printer moves, with the feeder the card will come from: from here on a
    // restart must never re-run this job, and knows whose card a card found inside is.
    await this.move(id, "READY", "PRODUCING", undefined, route);
    let sides: PrintSides;
    try {
      sides = await rendering;
    } catch (err) {
      // No card was taken yet: the printer is free for the next job at once.
      await this.failRender(id, "PRODUCING", err, log);
      this.options.supervisor.jobEnded();
      return;
    }
    let state: JobState = "PRODUCING";
    let step: ProductionStep = "insert";
    const enter = (next: ProductionStep): void => {
      step = next;
      // A cancel is honoured between steps, never inside one: a half-printed panel is still a card
      // that must be rejected, which the failure path below does.
      if (this.cancelRequests.has(id)) throw new CancelRequested();
      // Stopping (SIGTERM): no new step starts; a presented card keeps its grace period (collect).
      if (this.shutdownDeadline !== undefined && next !== "collect") {
        throw new ShutdownRequested(`agent stopping: step ${next} not started`);
      }
      this.setStep(id, next);
    };
    const data = job.productionData;
    try {
      enter("insert");
      await this.insert(id, route);
      if (data.chip && data.chip.apdus.length > 0) {
        enter("chip");
        await printer.moveToContactStation();
        if (!this.options.chip)
          throw new CodedError("NO_CHIP_READER", "this kiosk has no chip reader configured");
        await runApduScript(this.options.chip, data.chip.apdus);
      }
      if (sides.front || sides.back) {
        enter("print");
        await printer.printSides(sides);
      }
      if (data.magstripe) {
        enter("encode");
        const { track1, track2, track3, coercivity } = data.magstripe;
        await this.options.magstripe.encode({ track1, track2, track3 }, coercivity ?? "HICO");
      }
      enter("present");
      // Committed before the card moves: a restart that finds the mouth empty then knows the card
      // was offered (and taken), never that a finished card vanished from a PRODUCING job.
      await this.move(id, "PRODUCING", "PRESENTED");
      state = "PRESENTED";
      await printer.presentCard();
      // In the mouth: from here an untaken card is captured, not rejected (the ledger's reason).
      await this.durably(() => store.markCardFed(id, "presented"));

      enter("collect");
      const timeoutSec =
        data.delivery?.collectTimeoutSec ?? row.collectTimeoutSec ?? this.options.defaultCollectTimeoutSec;
      const taken = await this.waitForTake(timeoutSec * 1000);
      if (taken) {
        await this.move(id, "PRESENTED", "DONE");
        this.options.supervisor.jobEnded();
        log.info("card taken by the cardholder");
        return;
      }
      log.warn({ collectTimeoutSec: timeoutSec }, "card not taken in time; capturing it");
      await this.retractFromMouth(id, REASONS.CB_TIME, log);
    } catch (err) {
      if (err instanceof ShutdownRequested && state === "PRESENTED") {
        log.warn("agent stopping and the card was not taken within the grace period; retracting it");
        await this.retractFromMouth(id, REASONS.SHUTDOWN, log);
        return;
      }
      if (err instanceof CancelRequested && state === "PRODUCING") {
        await this.cancelInProduction(id, step, log);
        return;
      }
      const stop = stopDetailsFor(err, step);
      log.warn({ reason: stop.reason, step, err }, "card production stopped");
      // The status goes out first; clearing the card path may wait for an unplugged printer.
      await this.move(id, state, "FAILED", stop);
      await this.options.supervisor.afterFailure(err, { feeder: route.feeder });
    }
  }

  /**
   * D1 canceled the job at a step boundary (docs/protocol.md, cancel). The card goes to the reject box
   * first, and only then is the job CANCELED: D1 is never told CANCELED while the card is still in the
   * printer. A reject that fails ends the job FAILED with the printer's reason (the card stays in the
   * printer; the supervisor keeps trying to clear it) and the cancel is answered `refused` /
   * `CARD_NOT_REJECTED`. A restart between the reject and the commit finds the job PRODUCING with an
   * empty path: FAILED / INTERRUPTED (docs/recovery.md), never CANCELED.
   */
  private async cancelInProduction(id: string, step: ProductionStep, log: Logger): Promise<void> {
    const canceled = {
      reason: REASONS.ISSUER_CANCEL,
      errorCode: REASONS.ISSUER_CANCEL,
      error: `canceled before step ${step}`,
    };
    if (step === "insert") {
      // Before the insert: no card was taken, nothing to reject.
      log.info({ step }, "canceled by the issuer before the card was taken");
      await this.move(id, "PRODUCING", "CANCELED", canceled);
      this.options.supervisor.jobEnded();
      return;
    }
    log.info({ step }, "canceled by the issuer; rejecting the card");
    const path = await this.options.supervisor.afterFailure(new CancelRequested());
    if (path.cleared) {
      await this.move(id, "PRODUCING", "CANCELED", canceled);
      return;
    }
    const { reason, errorCode } = stopDetailsFor(path.error, step);
    log.error({ reason, step }, "canceled by the issuer, but the card could not be rejected; job fails");
    this.cancelNotRejected.add(id);
    await this.move(id, "PRODUCING", "FAILED", {
      reason,
      errorCode,
      error: `canceled before step ${step}; card not rejected`,
    });
  }

  /**
   * Takes the card from the job's feeder and commits how far it got: the ledger counts it from
   * that (agent/stock/card-movement.ts).
   */
  private async insert(id: string, route: Route): Promise<void> {
    try {
      await this.options.printer.insertCard(route.feeder);
    } catch (err) {
      const feed = feedAfterInsertFailure(err instanceof DeviceError ? err.code : undefined);
      if (feed) await this.durably(() => this.options.store.markCardFed(id, feed));
      throw err;
    }
    await this.durably(() => this.options.store.markCardFed(id, "fed"));
  }

  /**
   * Pulls a presented card back (into the capture bin, or on an Evolis the reject box) and ends the job with `reason`. The intent is
   * committed first, so a restart that finds the mouth empty knows we retracted it (docs/recovery.md).
   * A retract answered NO CARD means the cardholder took it at the last moment: the job is DONE.
   */
  private async retractFromMouth(id: string, reason: string, log: Logger): Promise<void> {
    const { store, printer, supervisor } = this.options;
    await this.durably(() => store.setRetractIntent(id, reason));
    try {
      await printer.captureCard();
    } catch (err) {
      if (err instanceof DeviceError && err.code === "NO_CARD") {
        log.info("the card was taken just before the retract");
        await this.move(id, "PRESENTED", "DONE");
        supervisor.jobEnded();
        return;
      }
      log.error({ err }, "capturing the untaken card failed; it may still be in the mouth");
      await this.move(id, "PRESENTED", "FAILED", { reason, errorCode: reason, error: "step collect" });
      await supervisor.afterFailure(err);
      return;
    }
    await this.move(id, "PRESENTED", "FAILED", { reason, errorCode: reason, error: "step collect" });
    supervisor.jobEnded();
  }

  /**
   * Both sides at once (in parallel when the renderer works off the event loop). Print lines the
   * renderer refuses throw here, synchronously: such a job fails before it waits for the printer.
   */
  private renderSides(job: ProductionJob): Promise<PrintSides> {
    const print = job.productionData.print;
    const area = this.options.printer.capabilities.printArea;
    const side = (lines: SideLines | undefined) =>
      lines && lines.length > 0 ? this.options.render(lines, area) : undefined;
    const sides = [side(print?.front), side(print?.back)];
    return Promise.all(sides).then(([front, back]) => ({
      ...(front ? { front } : {}),
      ...(back ? { back } : {}),
    }));
  }

  private async failRender(
    id: string,
    from: "READY" | "PRODUCING",
    err: unknown,
    log: Logger,
  ): Promise<void> {
    log.error({ err }, "job could not be rendered; no card was used");
    await this.move(id, from, "FAILED", {
      reason: REASONS.RENDER_ERROR,
      errorCode: REASONS.RENDER_ERROR,
      error: "render",
    });
  }

  private setStep(operationId: string, step: ProductionStep): void {
    this.current = { operationId, step };
    this.emit("step", operationId, step);
  }

  /**
   * The agent is stopping (docs/operations.md#stopping): the step under way finishes, no new step
   * starts (the job ends FAILED / SHUTDOWN and the supervisor rejects the card); a presented card
   * may still be taken until `graceMs` from now, then it is retracted (FAILED / SHUTDOWN). READY
   * jobs stay for the next run. Call stop() next to wait for the card in hand.
   */
  beginShutdown(graceMs: number): void {
    this.shutdownDeadline ??= this.options.clock.now() + graceMs;
    // A job still waiting for a stopped printer has no card yet: it stops waiting and stays READY.
    this.stopping.abort();
  }

  /** The collect wait, cut to the shutdown grace deadline once the agent is stopping. */
  private async waitForTake(timeoutMs: number): Promise<boolean> {
    const { clock, printer } = this.options;
    const deadline = clock.now() + timeoutMs;
    for (;;) {
      let slice = deadline - clock.now();
      if (this.shutdownDeadline !== undefined) {
        const left = this.shutdownDeadline - clock.now();
        if (left <= 0) throw new ShutdownRequested("agent stopping: card not taken within the grace period");
        slice = Math.min(slice, left);
      }
      // One bounded wait at a time, so a stop or a cancel begun meanwhile is seen within 2 s.
      if (await printer.waitForCardTaken(Math.max(0, Math.min(slice, TAKE_WAIT_SLICE_MS)))) return true;
      if (clock.now() >= deadline) return false;
    }
  }

  /**
   * Asks the pipeline to cancel the job it is producing. Resolves `canceled` once the card is in the
   * reject box and the job is CANCELED; or with the state it reached first if the cancel came too
   * late (the card was presented, or production had already failed); or FAILED with `notRejected`
   * when the reject itself failed.
   */
  requestCancel(operationId: string): Promise<CancelOutcome> {
    if (this.current?.operationId !== operationId) {
      return Promise.resolve({
        canceled: false,
        state: this.options.store.get(operationId)?.state ?? "READY",
      });
    }
    return new Promise((resolve) => {
      const previous = this.cancelRequests.get(operationId);
      this.cancelRequests.set(operationId, (outcome) => {
        previous?.(outcome);
        resolve(outcome);
      });
    });
  }

  /**
   * A state change the card depends on: written before the card moves on, never skipped. While the
   * store cannot take it (a full disk, an I/O error) the card stays where it is and the write is tried
   * again as soon as the store is writable (agent/store/store-health.ts), without a restart.
   */
  private async move(
    operationId: string,
    from: JobState,
    to: JobState,
    stop?: StopDetails,
    route?: Route,
  ): Promise<void> {
    let retried = false;
    await this.durably(() => {
      try {
        this.moveNow(operationId, from, to, stop, route);
      } catch (err) {
        // A commit reported failed can still have reached the WAL; the retry then finds it done.
        if (retried && err instanceof CodedError && err.code === "STALE_STATE") {
          if (this.options.store.get(operationId)?.state === to) return;
        }
        retried = true;
        throw err;
      }
    });
  }

  /**
   * Runs a store write the card depends on, again and again until it succeeds. Gives up only when the
   * agent stops meanwhile (StoreUnavailableError): the job keeps its last committed state, which the
   * next start's recovery reads with the card's position (docs/recovery.md).
   */
  private async durably<T>(write: () => T): Promise<T> {
    for (let told = false; ; ) {
      try {
        return write();
      } catch (err) {
        const reason = storeFaultOf(err);
        if (!reason) throw err;
        if (!told) {
          this.log.error(
            { reason, operationId: this.current?.operationId },
            "the job store cannot take the card's state change; the card waits until it can",
          );
          told = true;
        }
        await this.options.store.health.writable(this.stopping.signal);
      }
    }
  }

  private moveNow(
    operationId: string,
    from: JobState,
    to: JobState,
    stop?: StopDetails,
    route?: Route,
  ): void {
    const event = this.options.store.transition(operationId, from, to, stop, route);
    if (event) this.options.onEvent(event);
    const cancel = this.cancelRequests.get(operationId);
    if (cancel && to !== "PRODUCING") {
      this.cancelRequests.delete(operationId);
      const notRejected = this.cancelNotRejected.has(operationId);
      cancel({ canceled: to === "CANCELED", state: to, ...(notRejected ? { notRejected } : {}) });
    }
    if (to !== "PRODUCING") this.cancelNotRejected.delete(operationId);
    if (to === "DONE" || to === "FAILED" || to === "CANCELED") {
      this.current = undefined;
      this.emit("finished", operationId, to);
    }
  }
}

/** The longest single wait for the take before the pipeline looks at a stop again. */
const TAKE_WAIT_SLICE_MS = 2_000;

/** Thrown at a step boundary, or at the end of the grace period, while the agent is stopping. */
class ShutdownRequested extends CodedError<"SHUTDOWN"> {
  constructor(message: string) {
    super(REASONS.SHUTDOWN, message);
  }
}

/** Thrown at a step boundary when D1 canceled the job in production. */
class CancelRequested extends CodedError<"ISSUER_CANCEL"> {
  constructor() {
    super("ISSUER_CANCEL", "canceled by the issuer");
  }
}

/** Maps whatever stopped a card to D1's reason / errorCode / error. Never includes card data. */
export function stopDetailsFor(err: unknown, step: ProductionStep): Required<StopDetails> {
  if (err instanceof DeviceError) {
    const reason = reasonForDeviceFault(err.code);
    return {
      reason,
      errorCode: reason,
      error: `${reason.toLowerCase().replaceAll("_", " ")} at step ${step}`,
    };
  }
  if (err instanceof ChipError) {
    const where = err.index === undefined ? "" : ` at APDU #${err.index}`;
    return { reason: REASONS.CHIP_ERROR, errorCode: err.code, error: `chip step failed${where}` };
  }
  if (err instanceof CodedError) {
    return { reason: err.code, errorCode: err.code, error: `step ${step}` };
  }
  return { reason: REASONS.INTERNAL_ERROR, errorCode: REASONS.INTERNAL_ERROR, error: `step ${step}` };
}
