import type { Clock, TimerHandle } from "../../../agent/util/clock.js";
import { CR, LF, NUL } from "./codec.js";

/**
 * Cuts the printer's byte stream into replies. The guide names no reply terminator, and public
 * readers differ: dpavlin/Printer-EVOLIS reads `/dev/usb/lp0` until a NUL or until no more data
 * comes, Evolis's .NET samples take whatever one USB read returned, the serial form ends lines
 * with CR. So a reply ends at CR, LF or NUL, or when `idleGapMs` pass with no new byte after
 * some text: whichever comes first. Empty replies (CR LF, NUL padding) are nothing.
 *
 * A reply holding anything but printable ASCII, or growing past `maxLength`, is line noise: it is
 * dropped and counted, and the next terminator starts a clean reply, which is how the driver
 * regains sync.
 */
export interface ReplyReaderOptions {
  clock: Clock;
  /** Silence after text that ends a reply without a terminator. Default 50 ms. */
  idleGapMs?: number;
  /** Default 256 (the longest reply is a track 3 read-back). */
  maxLength?: number;
  onReply: (text: string) => void;
}

export class ReplyReader {
  droppedFrames = 0;
  private readonly clock: Clock;
  private readonly idleGapMs: number;
  private readonly maxLength: number;
  private readonly onReply: (text: string) => void;
  private pending: number[] = [];
  private overflowed = false;
  private noisy = false;
  private idleTimer: TimerHandle | undefined;

  constructor(options: ReplyReaderOptions) {
    this.clock = options.clock;
    this.idleGapMs = options.idleGapMs ?? 50;
    this.maxLength = options.maxLength ?? 256;
    this.onReply = options.onReply;
  }

  push(chunk: Buffer): void {
    for (const byte of chunk) {
      if (byte === CR || byte === LF || byte === NUL) {
        this.end();
        continue;
      }
      if (this.overflowed) continue;
      if (byte < 0x20 || byte > 0x7e) this.noisy = true;
      if (this.pending.length >= this.maxLength) {
        // Stop buffering: whatever ends at the next terminator is dropped anyway.
        this.overflowed = true;
        this.pending = [];
        continue;
      }
      this.pending.push(byte);
    }
    this.armIdle();
  }

  /** Forgets a partial reply, e.g. after the link closed mid-reply. */
  reset(): void {
    this.clearIdle();
    this.pending = [];
    this.overflowed = false;
    this.noisy = false;
  }

  private end(): void {
    const overflowed = this.overflowed;
    const noisy = this.noisy;
    const bytes = this.pending;
    this.reset();
    if (overflowed || (noisy && bytes.length > 0)) {
      this.droppedFrames++;
      return;
    }
    if (bytes.length === 0) return;
    this.onReply(Buffer.from(bytes).toString("latin1"));
  }

  private armIdle(): void {
    this.clearIdle();
    if (this.pending.length === 0 && !this.overflowed) return;
    this.idleTimer = this.clock.setTimeout(() => {
      this.idleTimer = undefined;
      this.end();
    }, this.idleGapMs);
  }

  private clearIdle(): void {
    if (this.idleTimer === undefined) return;
    this.clock.clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }
}
