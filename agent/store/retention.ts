import type { Logger } from "../log/logger.js";
import type { Clock, TimerHandle } from "../util/clock.js";
import { storeFaultOf } from "./store-health.js";

/** How often retention runs after the run at start: once a day, on the monotonic clock. */
export const RETENTION_PERIOD_MS = 24 * 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface RetentionOptions {
  store: { purgeFinishedBefore(beforeIso: string): number };
  clock: Clock;
  /** `store.retentionDays`. */
  retentionDays: number;
  logger: Logger;
  periodMs?: number;
}

/**
 * `store.retentionDays` (docs/operations.md, "Retention"): finished jobs (DONE, FAILED, CANCELED,
 * DATA_EXCEPTION) that ended more than that many days ago, and their events once every one was
 * acknowledged by D1, are deleted: at start, then every 24 hours. The age is measured against the
 * wall clock, as the jobs' `ended_at` is a wall-clock time; the period runs on the monotonic clock,
 * so an NTP step neither skips nor repeats a run. The audit trail is never touched. A run the store
 * refuses (a full disk) is logged and the next one tries again.
 */
export class RetentionSweeper {
  private timer: TimerHandle | undefined;
  private stopped = false;
  /** The last run: wall time (ISO), the cut-off, how many jobs went. */
  last: { at: string; before: string; deleted: number } | undefined;

  constructor(private readonly options: RetentionOptions) {}

  /** Runs now, then every period until stop(). */
  start(): void {
    this.stopped = false;
    this.runOnce();
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) this.options.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** One run; returns how many jobs were deleted (undefined: it failed, and was logged). Never throws. */
  runOnce(): number | undefined {
    const { clock, retentionDays, logger } = this.options;
    const before = new Date(clock.wallNow() - retentionDays * DAY_MS).toISOString();
    try {
      const deleted = this.options.store.purgeFinishedBefore(before);
      this.last = { at: new Date(clock.wallNow()).toISOString(), before, deleted };
      logger[deleted > 0 ? "info" : "debug"](
        { deleted, endedBefore: before, retentionDays },
        "retention: finished jobs deleted",
      );
      return deleted;
    } catch (err) {
      // Never a reason to stop the agent: the next run tries again.
      if (storeFaultOf(err)) {
        logger.warn(
          { err, endedBefore: before },
          "retention not applied: the job store cannot take writes now",
        );
      } else {
        logger.error({ err, endedBefore: before }, "retention run failed");
      }
      return undefined;
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.options.clock.setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) return;
      this.runOnce();
      this.schedule();
    }, this.options.periodMs ?? RETENTION_PERIOD_MS);
  }
}
