import { EventEmitter } from "node:events";
import type { SwipeRequest } from "../../drivers/magstripe/msr206-driver.js";
import type { Clock } from "../util/clock.js";

/** What the teller is asked to do right now, for the console and `kiosk-agent status`. */
export interface AwaitingSwipe {
  operation: SwipeRequest["operation"];
  /** When the encoder started waiting, and when it gives up (ISO). */
  since: string;
  until: string;
}

/**
 * The teller-assisted magstripe mode: an MSR206 / MSR605X is a hand-swipe unit, so each write and
 * read-back waits for a person to swipe the card (docs/devices.md). The encoder reports each wait
 * here; the console shows it until the production step moves on.
 */
export class SwipePrompt extends EventEmitter<{ change: [] }> {
  private awaiting: AwaitingSwipe | undefined;

  constructor(private readonly clock: Clock) {
    super();
  }

  get current(): AwaitingSwipe | undefined {
    return this.awaiting ? { ...this.awaiting } : undefined;
  }

  request(request: SwipeRequest): void {
    // Times shown to the teller: wall time (the encoder's own wait runs on the monotonic clock).
    const now = this.clock.wallNow();
    this.awaiting = {
      operation: request.operation,
      since: new Date(now).toISOString(),
      until: new Date(now + request.waitMs).toISOString(),
    };
    this.emit("change");
  }

  clear(): void {
    if (!this.awaiting) return;
    this.awaiting = undefined;
    this.emit("change");
  }
}
