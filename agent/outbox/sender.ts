import type { D1Link } from "../d1/link.js";
import type { Logger } from "../log/logger.js";
import type { JobStore, OutboxEvent } from "../store/job-store.js";
import type { Clock, TimerHandle } from "../util/clock.js";

export interface OutboxSenderOptions {
  store: JobStore;
  link: D1Link;
  clock: Clock;
  logger: Logger;
  /** Events per notify message. */
  batchSize?: number;
  /** An event sent on this connection and not acknowledged after this long is sent again. */
  resendAfterMs?: number;
}

/**
 * Reads the outbox forward and sends events to D1 until each is acknowledged. At-least-once: an
 * event is re-sent after every reconnect and `resendAfterMs` after its own last send without an ack
 * (the timer is armed for the oldest event in flight); D1 drops the
 * repeats by eventId. Events go out in the order they were written, so each job's statuses arrive
 * in state-machine order.
 */
export class OutboxSender {
  /** eventId → when it was last sent on the current connection. */
  private readonly inFlight = new Map<string, number>();
  private resendTimer: TimerHandle | undefined;
  /** When the armed resend timer fires (monotonic ms). */
  private resendDueAt: number | undefined;
  private readonly batchSize: number;
  private readonly resendAfterMs: number;
  private readonly log: Logger;
  readonly stats = { sent: 0, resent: 0, acked: 0 };

  constructor(private readonly options: OutboxSenderOptions) {
    this.batchSize = options.batchSize ?? 100;
    this.resendAfterMs = options.resendAfterMs ?? 30_000;
    this.log = options.logger.child({ component: "outbox" });
    options.link.on("up", () => {
      this.inFlight.clear();
      this.sentUpTo = 0;
      this.flush(true);
    });
    options.link.on("down", () => {
      this.inFlight.clear();
      this.sentUpTo = 0;
      // Nothing is in flight on a link that is down; the next welcome sends everything again.
      this.disarmResend();
    });
  }

  /**
   * Highest seq read and sent on this connection. A flush after a state change reads forward from it,
   * so its cost does not grow with the acks D1 still owes; the resend timer and a new connection read
   * from the start (`full`).
   */
  private sentUpTo = 0;

  /**
   * Sends every unacknowledged event not already in flight. Cheap to call after each state change.
   * Never throws for a store that cannot be read or written (a full disk, a corrupt page): that is
   * the store's health to report, and the resend timer or the next flush tries again.
   */
  flush(full = false): void {
    try {
      this.flushOnce(full);
    } catch (err) {
      if (!this.options.store.health.report(err)) throw err;
      this.log.warn({ err }, "outbox not read: the job store is unavailable; trying again later");
      this.armResend(true);
    }
  }

  private flushOnce(full: boolean): void {
    const { link, store, clock } = this.options;
    if (!link.isUp) return;
    let after = full ? 0 : this.sentUpTo;
    const now = clock.now();
    for (;;) {
      const events = store.unackedEvents(after, this.batchSize);
      if (events.length === 0) break;
      after = events[events.length - 1]!.seq;
      const due = events.filter((e) => {
        const sentAt = this.inFlight.get(e.eventId);
        return sentAt === undefined || now - sentAt >= this.resendAfterMs;
      });
      if (due.length > 0 && !this.sendBatch(due, now)) return;
      this.sentUpTo = Math.max(this.sentUpTo, after);
      if (events.length < this.batchSize) break;
    }
    this.armResend();
  }

  onAck(eventIds: string[]): void {
    let n: number;
    try {
      n = this.options.store.ack(eventIds);
    } catch (err) {
      if (!this.options.store.health.report(err)) throw err;
      // Kept in flight: they are sent again after resendAfterMs, and D1's next ack writes again.
      this.log.warn({ err, events: eventIds.length }, "ack not recorded: the job store is unavailable");
      return;
    }
    for (const id of eventIds) this.inFlight.delete(id);
    this.stats.acked += n;
    if (this.inFlight.size === 0) this.disarmResend();
  }

  stop(): void {
    this.disarmResend();
  }

  private sendBatch(events: OutboxEvent[], now: number): boolean {
    const sent = this.options.link.send({
      type: "notify",
      operations: events.map((e) => e.operation),
      eventIds: events.map((e) => e.eventId),
    });
    if (!sent) return false;
    for (const e of events) {
      if (e.sendCount > 0 || this.inFlight.has(e.eventId)) this.stats.resent++;
      this.inFlight.set(e.eventId, now);
    }
    this.stats.sent += events.length;
    try {
      this.options.store.markSent(events.map((e) => e.eventId));
    } catch (err) {
      // Bookkeeping only (send_count): the events went out, and the in-flight map still knows it.
      if (!this.options.store.health.report(err)) throw err;
      this.log.warn({ err }, "sent events not marked: the job store is unavailable");
    }
    this.log.debug({ events: events.length, first: events[0]!.eventId }, "events sent to D1");
    return true;
  }

  /**
   * Arms the resend timer for the moment the oldest event in flight has waited `resendAfterMs`
   * since its own send (not one period after the timer happened to be armed: an event sent just after
   * the timer was armed would otherwise wait almost two periods). `always`: a store fault, with
   * nothing in flight, tries again one period from now.
   */
  private armResend(always = false): void {
    const { clock } = this.options;
    let oldest: number | undefined;
    for (const sentAt of this.inFlight.values()) if (oldest === undefined || sentAt < oldest) oldest = sentAt;
    if (oldest === undefined && !always) return;
    const dueAt = (oldest ?? clock.now()) + this.resendAfterMs;
    if (this.resendTimer && this.resendDueAt !== undefined && this.resendDueAt <= dueAt) return;
    this.disarmResend();
    this.resendDueAt = dueAt;
    this.resendTimer = clock.setTimeout(
      () => {
        this.resendTimer = undefined;
        this.resendDueAt = undefined;
        this.flush(true);
      },
      Math.max(0, dueAt - clock.now()),
    );
  }

  private disarmResend(): void {
    if (this.resendTimer) this.options.clock.clearTimeout(this.resendTimer);
    this.resendTimer = undefined;
    this.resendDueAt = undefined;
  }
}
