import { EventEmitter } from "node:events";
import { connect, type Socket } from "node:net";
import type { Logger } from "../../agent/log/logger.js";
import type { VirtualEvolisPrinter } from "../printer/virtual-evolis-printer.js";
import { CardRemovedError, type ChipCardRecord, type VirtualCard } from "./virtual-card.js";
import {
  encodeVpcdFrame,
  VPCD_DEFAULT_PORT,
  VpcdControl,
  VpcdFrameParser,
  type VpcdMessage,
} from "./vpcd-protocol.js";

export interface VpcdCardOptions {
  /** The card model played on the wire; one `insert()` here is one `card.insert()` there. */
  card: VirtualCard;
  /** Where vpcd (inside pcscd) listens. Default 127.0.0.1:35963 (reader "Virtual PCD 00 00"). */
  host?: string;
  port?: number;
  /**
   * TCP_NODELAY on the card's socket. Default true. The answers are written as one frame either way;
   * docs/chip.md has the measurement.
   */
  noDelay?: boolean;
  /**
   * Measurement only: write each answer as two segments (length, then payload), as a naive card
   * would. With Nagle on (noDelay false) the second segment then waits for vpcd's delayed ACK.
   */
  splitWrites?: boolean;
  /** remove() waits this long for pcscd to see the card gone before dropping the link. Default 2000. */
  removeTimeoutMs?: number;
  /**
   * After the link was dropped without pcscd seeing the card go (the `removed` fault, a timeout),
   * the next card waits this long, so that pcscd polls an empty reader at least once. Default 1000.
   */
  abruptGapMs?: number;
  logger?: Logger;
}

export interface VpcdCardEvents {
  inserted: [record: ChipCardRecord];
  /** The card left the reader: removed by the simulator, dropped by vpcd, or gone mid-script. */
  removed: [record: ChipCardRecord | undefined];
  /** Inserting failed (vpcd not listening); the simulator keeps running. */
  "insert-failed": [error: Error];
}

interface Link {
  socket: Socket;
  record: ChipCardRecord;
  /** remove() was called: the next GET ATR is answered with "no card". */
  leaving: boolean;
  closed: Promise<void>;
}

/**
 * The simulator's chip card on the real PC/SC stack: a TCP client of vsmartcard's vpcd, which pcscd
 * shows as a reader. Connecting is inserting a card; pcscd sees it at its next presence poll (a GET
 * ATR every ~400 ms). Plays a `VirtualCard`: control codes (power on/off, reset, get ATR) and APDUs,
 * one message at a time in arrival order, with the model's faults (`slow` delays answers, `removed`
 * drops the link mid-script, `no-atr` answers GET ATR with nothing, which makes vpcd drop the card).
 *
 * Removing is a handshake, not a hang-up at a random moment: the card answers pcscd's next presence
 * poll with "no card" and ends the link, so that poll reports the reader empty and pcscd records the
 * removal. A link dropped between polls is noticed by vpcd at its next I/O (a power-down, a
 * transmit), after which its next poll may accept the next card's connection without ever reporting
 * the reader empty: pcscd then takes the new card for the old one (no removal/insertion event, and
 * a transport waiting for a new card waits forever). After such an abrupt drop (the `removed`
 * fault, a remove timeout) the next card waits `abruptGapMs`.
 *
 * It logs and keeps no command or response bytes: the model records counts and status words.
 */
export class VpcdCard extends EventEmitter<VpcdCardEvents> {
  readonly card: VirtualCard;
  private readonly host: string;
  private readonly port: number;
  private readonly noDelay: boolean;
  private readonly splitWrites: boolean;
  private readonly removeTimeoutMs: number;
  private readonly abruptGapMs: number;
  private readonly log: Logger | undefined;
  private link: Link | undefined;
  /** When a link last went down without pcscd seeing the card leave (performance.now(): a gap is a duration). */
  private abruptAt = Number.NEGATIVE_INFINITY;
  /** insert/remove run one after the other, in call order. */
  private ops: Promise<unknown> = Promise.resolve();

  constructor(options: VpcdCardOptions) {
    super();
    this.card = options.card;
    this.host = options.host ?? "127.0.0.1";
    this.port = options.port ?? VPCD_DEFAULT_PORT;
    this.noDelay = options.noDelay ?? true;
    this.splitWrites = options.splitWrites ?? false;
    this.removeTimeoutMs = options.removeTimeoutMs ?? 2000;
    this.abruptGapMs = options.abruptGapMs ?? 1000;
    this.log = options.logger?.child({ component: "vpcd-card" });
  }

  /** A card is in the reader (the link to vpcd is open). */
  get present(): boolean {
    return this.link !== undefined;
  }

  /** Puts a new card in the reader: connects to vpcd. Resolves once the TCP connection is up. */
  insert(): Promise<ChipCardRecord> {
    return this.enqueue(async () => {
      await this.leave();
      const wait = this.abruptAt + this.abruptGapMs - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      return this.open();
    });
  }

  /**
   * Takes the card out of the reader: resolves once vpcd dropped it at its next presence poll
   * (≤ ~400 ms), or after removeTimeoutMs. A no-op when there is none.
   */
  remove(): Promise<void> {
    return this.enqueue(() => this.leave());
  }

  /**
   * Couples the card to the simulated printer: every card the printer feeds is a new chip card in
   * the reader, removed when it leaves the printer (presented, rejected, captured, ejected). Returns
   * a function that detaches it.
   */
  followPrinter(printer: VirtualEvolisPrinter): () => void {
    const onInserted = (): void => {
      this.insert().catch((err: Error) => this.emit("insert-failed", err));
    };
    const onLeft = (): void => {
      this.remove().catch(() => undefined);
    };
    const leaving = ["card-presented", "card-rejected", "card-captured", "card-ejected"] as const;
    printer.on("card-inserted", onInserted);
    for (const e of leaving) printer.on(e, onLeft);
    return () => {
      printer.off("card-inserted", onInserted);
      for (const e of leaving) printer.off(e, onLeft);
    };
  }

  /** Shutdown: drops the link at once (no handshake) after pending inserts/removals. */
  close(): Promise<void> {
    return this.enqueue(() => this.hangUp());
  }

  private enqueue<T>(op: () => Promise<T>): Promise<T> {
    const next = this.ops.then(op, op);
    this.ops = next.catch(() => undefined);
    return next;
  }

  private async leave(): Promise<void> {
    const link = this.link;
    if (!link) return;
    link.leaving = true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((r) => {
      timer = setTimeout(() => r(true), this.removeTimeoutMs);
    });
    const late = await Promise.race([link.closed.then(() => false), timedOut]);
    clearTimeout(timer);
    if (late) {
      this.log?.debug(
        { serial: link.record.serial },
        "vpcd did not poll the leaving card; dropping the link",
      );
      await this.hangUp();
    }
  }

  private async hangUp(): Promise<void> {
    const link = this.link;
    if (!link) return;
    this.abruptAt = performance.now();
    link.socket.destroy();
    await link.closed;
  }

  private open(): Promise<ChipCardRecord> {
    return new Promise<ChipCardRecord>((resolve, reject) => {
      const socket = connect({ host: this.host, port: this.port });
      const parser = new VpcdFrameParser();
      // Answers go out in the order the messages came; a slow card holds the ones behind it.
      let queue: Promise<void> = Promise.resolve();
      let link: Link | undefined;
      let markClosed: () => void = () => undefined;
      const closed = new Promise<void>((r) => {
        markClosed = r;
      });
      socket.setNoDelay(this.noDelay);
      socket.once("connect", () => {
        link = { socket, record: this.card.insert(), leaving: false, closed };
        this.link = link;
        this.log?.debug({ serial: link.record.serial, fault: link.record.fault }, "card inserted");
        this.emit("inserted", link.record);
        resolve(link.record);
      });
      socket.on("data", (chunk: Buffer) => {
        for (const message of parser.push(chunk)) {
          queue = queue
            .then(() => (link ? this.handle(link, message) : undefined))
            .catch((err: unknown) => {
              // A broken card model must not take the simulator down: the card "dies" instead.
              this.log?.error({ err }, "virtual card failed; dropping it from the reader");
              this.abruptAt = performance.now();
              socket.destroy();
            });
        }
      });
      socket.on("error", (err) => {
        if (!link) reject(new Error(`vpcd is not reachable on ${this.host}:${this.port}: ${err.message}`));
      });
      socket.on("close", () => {
        markClosed();
        if (!link || this.link !== link) return;
        this.link = undefined;
        this.log?.debug({ serial: link.record.serial }, "card left the reader");
        this.emit("removed", link.record);
      });
    });
  }

  private async handle(link: Link, message: VpcdMessage): Promise<void> {
    const { socket } = link;
    if (socket.destroyed) return;
    switch (message.kind) {
      case "control":
        if (message.code === VpcdControl.GET_ATR) {
          const atr = link.leaving ? undefined : this.card.currentAtr;
          if (atr) {
            this.send(socket, atr);
          } else {
            // "No card" (leaving, or mute): an empty answer, then the end of the link. vpcd reads
            // the empty length, then waits for the (zero-byte) payload until the link ends, drops
            // the card and reports this very poll as "absent": pcscd records the removal before
            // the next card can connect.
            this.send(socket, Buffer.alloc(0));
            socket.end();
          }
        } else if (!link.leaving) {
          // Power on, power off and reset are not answered.
          this.card.powerCycle();
        }
        return;
      case "apdu": {
        if (link.leaving) {
          // A card on its way out does not answer.
          this.abruptAt = performance.now();
          socket.destroy();
          return;
        }
        const delayMs = this.card.answerDelayMs;
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
        if (socket.destroyed) return;
        let response: Buffer;
        try {
          response = this.card.process(message.apdu);
        } catch (err) {
          if (!(err instanceof CardRemovedError)) throw err;
          this.log?.debug({ serial: link.record.serial }, "card pulled out mid-script (fault)");
          this.abruptAt = performance.now();
          socket.destroy();
          return;
        }
        this.send(socket, response);
        return;
      }
      default:
        // Unknown control bytes and empty messages are not answered.
        return;
    }
  }

  private send(socket: Socket, payload: Buffer): void {
    const frame = encodeVpcdFrame(payload);
    if (this.splitWrites) {
      socket.write(frame.subarray(0, 2));
      socket.write(frame.subarray(2));
    } else {
      socket.write(frame);
    }
  }
}
