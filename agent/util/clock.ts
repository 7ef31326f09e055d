/**
 * Time as a dependency. Production code asks a Clock for "now" and for timers so tests can drive
 * timeouts (collect timeout, backoff, reply timeouts) with a ManualClock instead of sleeping.
 *
 * Two kinds of "now" (docs/architecture.md#time). The wall clock is stepped by NTP (or by hand) in
 * either direction; a deadline or a duration measured on it fires hours early or late and comes out
 * negative. So:
 * - `now()` is MONOTONIC: every deadline, duration and timer (collect timeout, hold bound, outbox
 *   re-send, backoff, metrics). It never goes back and ignores steps. It is not a date.
 * - `wallNow()` is the wall clock (`Date.now()`), for timestamps only: the ISO times written to the
 *   store, D1's `startTime` / `endTime`, audit and ledger `at`, what the console shows.
 */
export interface Clock {
  /** Monotonic milliseconds: for deadlines, durations and timers only; never formatted as a date. */
  now(): number;
  /** Wall-clock milliseconds since the epoch: for timestamps only; may jump either way. */
  wallNow(): number;
  /** Fires after `ms` of monotonic time, whatever the wall clock does meanwhile. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** Opaque: whatever the clock's setTimeout returned. */
export type TimerHandle = object;

export const systemClock: Clock = {
  // performance.now() runs on CLOCK_MONOTONIC, as Node's timers do. Anchored at the wall time the
  // process started (timeOrigin), so a value wrongly shown as a date is at worst off by the steps
  // since then, never 1970; it still never follows a step.
  now: () => performance.timeOrigin + performance.now(),
  wallNow: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** Resolves after ms on the given clock. */
export function delay(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, ms));
}

/**
 * A clock that moves only when told to. Timers fire in due order during advance(). advance() moves
 * both clocks together; stepWall() steps the wall clock alone, as NTP does, so a test can show that
 * no deadline or duration follows it.
 */
export class ManualClock implements Clock {
  private current: number;
  /** wallNow() - now(): changed only by stepWall(). */
  private wallOffset = 0;
  private nextId = 1;
  private timers = new Map<number, { due: number; fn: () => void }>();

  constructor(start = Date.parse("2026-01-01T00:00:00.000Z")) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  wallNow(): number {
    return this.current + this.wallOffset;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = this.nextId++;
    this.timers.set(id, { due: this.current + Math.max(0, ms), fn });
    return { id };
  }

  clearTimeout(handle: TimerHandle): void {
    this.timers.delete((handle as { id: number }).id);
  }

  pendingTimers(): number {
    return this.timers.size;
  }

  /** Steps the wall clock by `ms` (either sign) and nothing else: no timer fires, now() stays. */
  stepWall(ms: number): void {
    this.wallOffset += ms;
  }

  /** Moves time forward, firing every timer that falls due, earliest first. */
  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      let nextId: number | undefined;
      let nextDue = Number.POSITIVE_INFINITY;
      for (const [id, t] of this.timers) {
        if (t.due <= target && t.due < nextDue) {
          nextDue = t.due;
          nextId = id;
        }
      }
      if (nextId === undefined) break;
      const timer = this.timers.get(nextId)!;
      this.timers.delete(nextId);
      this.current = Math.max(this.current, timer.due);
      timer.fn();
    }
    this.current = target;
  }
}
