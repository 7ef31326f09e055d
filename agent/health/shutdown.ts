import type { MagstripeEncoder } from "../../drivers/magstripe/encoder.js";
import type { PrinterDriver } from "../../drivers/printer/driver.js";
import type { Clock } from "../util/clock.js";
import { CodedError } from "../util/errors.js";

/** The D1 `details.reason` of a card given up because the agent was stopping. */
export const SHUTDOWN_REASON = "SHUTDOWN";

/** Thrown into the pipeline at the next step boundary once the agent is stopping. */
export class ShutdownError extends CodedError<typeof SHUTDOWN_REASON> {
  constructor(message: string) {
    super(SHUTDOWN_REASON, message);
  }
}

/** Printer calls that start a new production step: refused once the agent is stopping. */
const STEP_STARTS = new Set<string>([
  "insertCard",
  "moveToContactStation",
  "printPanels",
  "encodeMagstripe",
  "presentCard",
]);

/**
 * The SIGTERM policy for the card in hand (docs/operations.md#stopping), applied through the
 * printer the pipeline drives, so the pipeline's own failure path does the parking:
 *
 * - in production, not presented: the step under way finishes; the next step is refused with
 *   ShutdownError, so the job ends FAILED (CARD_PROD_EXCEPTION, reason SHUTDOWN) and the printer
 *   supervisor rejects the card into the reject box;
 * - presented: the cardholder may still take it until the grace deadline (DONE); after that the wait
 *   ends with ShutdownError: FAILED / SHUTDOWN and the card is retracted into the capture bin.
 *
 * A bezel wait already running on the device when the stop begins is not interrupted: it ends when
 * the card is taken or its chunk (at most 30 s, the driver's MAX_TAKE_WAIT_CHUNK_MS) runs out.
 */
export class ShutdownGate {
  private deadline: number | undefined;

  constructor(private readonly clock: Clock) {}

  get stopping(): boolean {
    return this.deadline !== undefined;
  }

  /** Starts the stop: from now on no new step starts; a presented card may wait `graceMs`. */
  begin(graceMs: number): void {
    if (this.deadline === undefined) this.deadline = this.clock.now() + graceMs;
  }

  /** The printer as the pipeline should see it: same driver, with the stop policy applied. */
  guard(printer: PrinterDriver): PrinterDriver {
    const waitForCardTaken = (timeoutMs: number) => this.waitForCardTaken(printer, timeoutMs);
    return new Proxy(printer, {
      get: (target, prop, receiver) => {
        if (prop === "waitForCardTaken") return waitForCardTaken;
        const value = Reflect.get(target, prop, receiver);
        if (typeof value !== "function") return value;
        if (typeof prop === "string" && STEP_STARTS.has(prop)) {
          return (...args: unknown[]) => {
            if (this.stopping) {
              return Promise.reject(new ShutdownError(`agent stopping: ${prop} not started`));
            }
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        return (value as (...a: unknown[]) => unknown).bind(target);
      },
    });
  }

  /** The magstripe encoder as the pipeline should see it: `encode` is a step start too. */
  guardEncoder(encoder: MagstripeEncoder): MagstripeEncoder {
    return {
      encode: (tracks, coercivity) =>
        this.stopping
          ? Promise.reject(new ShutdownError("agent stopping: encode not started"))
          : encoder.encode(tracks, coercivity),
    };
  }

  /**
   * Same contract as PrinterDriver.waitForCardTaken, but once the agent is stopping the wait is cut
   * to the grace deadline, and running past it throws ShutdownError. Without a stop it is exactly one
   * call to the driver.
   */
  private async waitForCardTaken(printer: PrinterDriver, timeoutMs: number): Promise<boolean> {
    const { clock } = this;
    const deadline = clock.now() + timeoutMs;
    for (;;) {
      let slice = deadline - clock.now();
      if (this.deadline !== undefined) {
        const left = this.deadline - clock.now();
        if (left <= 0) throw new ShutdownError("agent stopping: card not taken within the grace period");
        slice = Math.min(slice, left);
      }
      const taken = await printer.waitForCardTaken(Math.max(0, slice));
      if (taken) return true;
      if (clock.now() >= deadline) return false;
    }
  }
}
