/**
 * Capped exponential backoff with full jitter (delay drawn uniformly in [0, min(cap, base·2^n)]),
 * so a branch full of kiosks does not reconnect in lock-step after a D1 outage.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  random?: () => number;
}

export class Backoff {
  private attempt = 0;
  private readonly random: () => number;

  constructor(private readonly options: BackoffOptions) {
    this.random = options.random ?? Math.random;
  }

  /** The ceiling of the next delay, before jitter. */
  ceiling(): number {
    return Math.min(this.options.maxMs, this.options.initialMs * 2 ** Math.min(this.attempt, 30));
  }

  next(): { attempt: number; delayMs: number; ceilingMs: number } {
    const ceilingMs = this.ceiling();
    this.attempt++;
    return { attempt: this.attempt, delayMs: Math.round(this.random() * ceilingMs), ceilingMs };
  }

  reset(): void {
    this.attempt = 0;
  }
}
