import { existsSync } from "node:fs";
import { createConnection } from "node:net";
import type { Logger } from "../../agent/log/logger.js";
import { ChipError } from "./apdu-runner.js";
import type { ApduTransport } from "./apdu-transport.js";

/** Where pcsc-lite's clients talk to pcscd (libpcsclite honours the same variable). */
export const DEFAULT_PCSCD_SOCKET = process.env.PCSCLITE_CSOCK_NAME ?? "/run/pcscd/pcscd.comm";

// winscard.h values: the same on every pcsc-lite build (the addon exposes them per reader too).
/**
 * The card is held exclusively while it is personalised: no other PC/SC client on the machine (another
 * process with a context on this pcscd) can connect to it, send it APDUs or read its answers meanwhile.
 */
const SCARD_SHARE_EXCLUSIVE = 1;
const SCARD_PROTOCOL_T0 = 1;
const SCARD_PROTOCOL_T1 = 2;
const SCARD_STATE_EMPTY = 0x10;
const SCARD_STATE_PRESENT = 0x20;
const SCARD_STATE_MUTE = 0x200;
const DISPOSITION = { leave: 0, reset: 1, unpower: 2 } as const;
/** Room for any response, extended APDUs included (64 KiB of data ‖ SW1 SW2). */
const MAX_RESPONSE = 65_538;

/** The part of `@pokusew/pcsclite` this transport uses (a seam for tests). */
export interface PcscReader {
  name: string;
  on(event: "status", listener: (status: { state: number; atr?: Buffer }) => void): unknown;
  on(event: "end", listener: () => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
  connect(
    options: { share_mode: number; protocol: number },
    cb: (err: Error | null | undefined, protocol: number) => void,
  ): void;
  transmit(
    data: Buffer,
    resLen: number,
    protocol: number,
    cb: (err: Error | null | undefined, response: Buffer) => void,
  ): void;
  disconnect(disposition: number, cb: (err: Error | null | undefined) => void): void;
  close(): void;
}

export interface PcscContext {
  on(event: "reader", listener: (reader: PcscReader) => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
  close(): void;
}

export interface PcscTransportOptions {
  /**
   * The reader, by its exact PC/SC name (`pcsc_scan` lists it): a reader plugged in later whose name
   * merely starts the same is never sent a card's APDUs.
   */
  reader: string;
  /**
   * Also take the first reader whose name starts with `reader` (sorted). For the simulator's own
   * discovery of the vpcd reader only; never from the configuration.
   */
  matchPrefix?: boolean;
  /** How long connect() waits for a card in the reader. Default 5000. */
  cardTimeoutMs?: number;
  /** How long connect() waits for the reader to be listed by pcscd. Default 3000. */
  readerTimeoutMs?: number;
  /** Bound on every reader operation (connect, one transmit, disconnect). Default 10000. */
  commandTimeoutMs?: number;
  /** What SCardDisconnect does to the card. Default "reset": the next session starts clean. */
  disposition?: keyof typeof DISPOSITION;
  /**
   * connect() takes only a card that arrived after the previous disconnect (pcsc-lite's per-reader
   * card event counter moved, or the reader was seen empty). A card still shown as present because
   * pcscd has not polled the reader since it left is then never taken for the next one, and a card
   * that did not leave is never personalised twice. Default true.
   */
  requireNewCard?: boolean;
  /** pcscd's client socket; checked before the pcsc-lite context is made. */
  socketPath?: string;
  logger?: Logger;
  /** Makes the pcsc-lite context. Default: the `@pokusew/pcsclite` addon, loaded on first use. */
  createContext?: () => PcscContext | Promise<PcscContext>;
}

interface ReaderEntry {
  reader: PcscReader;
  state: number;
  atr: Buffer | undefined;
  /** The reader was seen without a card since our last disconnect from it. */
  sawEmpty: boolean;
  /**
   * When its monitor last reported (undefined: not yet, its thread may not be waiting yet), on
   * performance.now(): the waits counted from it are durations, which no wall-clock step may move.
   */
  lastStatusAt: number | undefined;
}

interface ContextState {
  context: PcscContext;
  /** Every reader this context announced, closed with it. */
  entries: Set<ReaderEntry>;
  retired: boolean;
}

/** A reader monitor is closed this long after its last report at the earliest (see retire()). */
const MONITOR_SETTLE_MS = 50;

/**
 * The chip step's reader through pcsc-lite (`@pokusew/pcsclite` → pcscd). One context for the
 * transport's life; per card: wait for the reader (by its exact name), wait for a (new) card,
 * SCardConnect exclusive with T=0|T=1, SCardTransmit per APDU, SCardDisconnect. Every failure is a ChipError with a reason, never
 * with command or response bytes, and nothing here logs them.
 *
 * pcsc-lite's SCardEstablishContext loops for as long as pcscd is not there, blocking the event loop,
 * so the service socket is probed first and a missing pcscd is a CHIP_IO_ERROR instead of a hang.
 */
export class PcscApduTransport implements ApduTransport {
  private readonly name: string;
  private readonly matchPrefix: boolean;
  private readonly cardTimeoutMs: number;
  private readonly readerTimeoutMs: number;
  private readonly commandTimeoutMs: number;
  private readonly disposition: number;
  private readonly requireNewCard: boolean;
  private readonly socketPath: string;
  private readonly log: Logger | undefined;
  private readonly createContext: () => PcscContext | Promise<PcscContext>;

  private current: ContextState | undefined;
  private contextPromise: Promise<PcscContext> | undefined;
  private readonly readers = new Map<string, ReaderEntry>();
  private readonly waiters = new Set<() => void>();
  /** Card event counter of each reader when we last disconnected from it. */
  private readonly lastCardEvent = new Map<string, number>();
  private session: { entry: ReaderEntry; protocol: number } | undefined;
  private closed = false;
  private notifyScheduled = false;

  constructor(options: PcscTransportOptions) {
    this.name = options.reader;
    this.matchPrefix = options.matchPrefix ?? false;
    this.cardTimeoutMs = options.cardTimeoutMs ?? 5000;
    this.readerTimeoutMs = options.readerTimeoutMs ?? 3000;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 10_000;
    this.disposition = DISPOSITION[options.disposition ?? "reset"];
    this.requireNewCard = options.requireNewCard ?? true;
    this.socketPath = options.socketPath ?? DEFAULT_PCSCD_SOCKET;
    this.log = options.logger?.child({ component: "pcsc" });
    this.createContext = options.createContext ?? loadPcscLite;
  }

  /** Waits for the configured reader to be listed and returns its full PC/SC name. */
  async resolveReader(): Promise<string> {
    await this.ensureContext();
    const entry = await this.waitFor(() => this.findReader(), this.readerTimeoutMs);
    if (!entry) {
      const known = [...this.readers.keys()];
      throw new ChipError(
        "CHIP_IO_ERROR",
        undefined,
        `no PC/SC reader named "${this.name}" (readers: ${known.length ? known.join(", ") : "none"})`,
      );
    }
    return entry.reader.name;
  }

  async connect(): Promise<{ atr: Buffer }> {
    if (this.closed) throw new ChipError("CHIP_IO_ERROR", undefined, "the PC/SC transport is closed");
    if (this.session) await this.disconnect();
    const readerName = await this.resolveReader();
    const started = performance.now();
    let mute = false;
    const ready = await this.waitFor(() => {
      const current = this.readers.get(readerName);
      if (!current) return undefined;
      if (!(current.state & SCARD_STATE_PRESENT) || !this.isNewCard(readerName, current)) return undefined;
      mute = (current.state & SCARD_STATE_MUTE) !== 0;
      return current;
    }, this.cardTimeoutMs);
    if (!ready) {
      throw new ChipError("CHIP_NO_ATR", undefined, `no card in reader within ${this.cardTimeoutMs} ms`);
    }
    if (mute) throw new ChipError("CHIP_NO_ATR", undefined, "the card in the reader is mute (no ATR)");

    let protocol: number;
    try {
      protocol = await this.withTimeout("connect", (cb) =>
        ready.reader.connect(
          { share_mode: SCARD_SHARE_EXCLUSIVE, protocol: SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1 },
          cb,
        ),
      );
    } catch (cause) {
      throw new ChipError("CHIP_NO_ATR", undefined, `the card did not answer: ${describe(cause)}`, { cause });
    }
    this.session = { entry: ready, protocol };
    const atr = ready.atr ?? Buffer.alloc(0);
    this.log?.debug(
      {
        reader: readerName,
        protocol: protocol === SCARD_PROTOCOL_T0 ? "T=0" : "T=1",
        waitedMs: performance.now() - started,
      },
      "card connected",
    );
    return { atr };
  }

  async transmit(command: Buffer): Promise<Buffer> {
    const session = this.session;
    if (!session) throw new ChipError("CHIP_IO_ERROR", undefined, "no card connected");
    try {
      return await this.withTimeout<Buffer>("transmit", (cb) =>
        session.entry.reader.transmit(command, MAX_RESPONSE, session.protocol, cb),
      );
    } catch (cause) {
      throw new ChipError("CHIP_IO_ERROR", undefined, `the reader failed: ${describe(cause)}`, { cause });
    }
  }

  async disconnect(): Promise<void> {
    const session = this.session;
    if (!session) return;
    this.session = undefined;
    const name = session.entry.reader.name;
    try {
      await this.withTimeout<void>("disconnect", (cb) =>
        session.entry.reader.disconnect(this.disposition, cb),
      );
    } catch (err) {
      // The card may be gone already (removed mid-script); the session is over either way.
      this.log?.debug({ reader: name, reason: describe(err) }, "disconnect failed");
    } finally {
      const current = this.readers.get(name);
      this.lastCardEvent.set(name, cardEvents(current?.state ?? session.entry.state));
      if (current) current.sawEmpty = false;
    }
  }

  /** Disconnects, stops the reader monitors and releases the pcsc-lite context. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.disconnect().catch(() => undefined);
    this.closed = true;
    await this.contextPromise?.catch(() => undefined);
    await this.dropContext();
  }

  private isNewCard(name: string, entry: ReaderEntry): boolean {
    if (!this.requireNewCard) return true;
    const last = this.lastCardEvent.get(name);
    return last === undefined || entry.sawEmpty || cardEvents(entry.state) !== last;
  }

  private findReader(): ReaderEntry | undefined {
    const exact = this.readers.get(this.name);
    if (exact || !this.matchPrefix) return exact;
    const names = [...this.readers.keys()].filter((n) => n.startsWith(this.name)).sort();
    return names[0] === undefined ? undefined : this.readers.get(names[0]);
  }

  private ensureContext(): Promise<PcscContext> {
    if (this.closed) {
      return Promise.reject(new ChipError("CHIP_IO_ERROR", undefined, "the PC/SC transport is closed"));
    }
    this.contextPromise ??= this.openContext().catch((err: unknown) => {
      this.contextPromise = undefined;
      throw err;
    });
    return this.contextPromise;
  }

  private async openContext(): Promise<PcscContext> {
    await probePcscd(this.socketPath);
    let context: PcscContext;
    try {
      context = await this.createContext();
    } catch (cause) {
      throw new ChipError("CHIP_IO_ERROR", undefined, `PC/SC context failed: ${describe(cause)}`, { cause });
    }
    const state: ContextState = { context, entries: new Set(), retired: false };
    context.on("error", (err) => {
      if (state.retired) return;
      // pcscd went away or the reader list failed: drop the context, the next connect makes a new one.
      this.log?.warn({ reason: describe(err) }, "PC/SC context failed; it will be re-created");
      if (this.current === state) void this.dropContext();
      this.notify();
    });
    context.on("reader", (reader) => {
      const entry = this.trackReader(reader);
      state.entries.add(entry);
      if (state.retired) return;
      this.readers.set(reader.name, entry);
      this.log?.debug({ reader: reader.name }, "reader listed");
      this.notify();
    });
    this.current = state;
    return context;
  }

  private trackReader(reader: PcscReader): ReaderEntry {
    const entry: ReaderEntry = { reader, state: 0, atr: undefined, sawEmpty: false, lastStatusAt: undefined };
    reader.on("status", (status) => {
      entry.lastStatusAt = performance.now();
      entry.state = status.state;
      entry.atr = status.state & SCARD_STATE_PRESENT ? status.atr : undefined;
      if (status.state & SCARD_STATE_EMPTY) entry.sawEmpty = true;
      this.notify();
    });
    reader.on("end", () => {
      if (this.readers.get(reader.name) === entry) this.readers.delete(reader.name);
      if (this.session?.entry === entry) this.session = undefined;
      this.log?.debug({ reader: reader.name }, "reader removed");
      this.notify();
    });
    reader.on("error", (err) => {
      this.log?.warn({ reader: reader.name, reason: describe(err) }, "reader monitor failed");
    });
    return entry;
  }

  private async dropContext(): Promise<void> {
    const state = this.current;
    this.current = undefined;
    this.contextPromise = undefined;
    this.session = undefined;
    this.readers.clear();
    if (state) await this.retire(state);
  }

  /**
   * Closes a context and its reader monitors. The addon's reader monitor only releases its libuv
   * handle (which otherwise keeps the process alive forever) when close() finds its thread waiting
   * in SCardGetStatusChange; closed before its thread got there (right after the reader was listed),
   * the handle leaks. So each monitor is closed only after its first report, once it is back waiting.
   */
  private async retire(state: ContextState): Promise<void> {
    state.retired = true;
    const deadline = performance.now() + 1000;
    for (;;) {
      const waitMs = Math.max(
        0,
        ...[...state.entries].map((e) =>
          e.lastStatusAt === undefined
            ? performance.now() < deadline
              ? 10
              : 0
            : e.lastStatusAt + MONITOR_SETTLE_MS - performance.now(),
        ),
      );
      if (waitMs <= 0) break;
      await new Promise((r) => setTimeout(r, waitMs));
    }
    // Synchronous from here: no reader can be announced between these closes.
    for (const entry of state.entries) {
      try {
        entry.reader.close();
      } catch {
        // already stopped
      }
    }
    try {
      state.context.close();
    } catch {
      // already closed
    }
  }

  /**
   * Re-runs the waiters on the next turn: pcsclite announces a reader list one reader at a time in
   * one go, and a prefix must be matched against the whole list, not its first entry.
   */
  private notify(): void {
    if (this.notifyScheduled) return;
    this.notifyScheduled = true;
    setImmediate(() => {
      this.notifyScheduled = false;
      for (const w of [...this.waiters]) w();
    });
  }

  /** Resolves with `check()`'s first defined value, or undefined after `timeoutMs`. */
  private waitFor<T>(check: () => T | undefined, timeoutMs: number): Promise<T | undefined> {
    const now = check();
    if (now !== undefined) return Promise.resolve(now);
    return new Promise((resolve) => {
      const done = (value: T | undefined): void => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve(value);
      };
      const waiter = (): void => {
        const v = check();
        if (v !== undefined) done(v);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      this.waiters.add(waiter);
    });
  }

  private withTimeout<T>(
    what: string,
    start: (cb: (err: Error | null | undefined, value: T) => void) => void,
  ) {
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        reject(new Error(`${what} got no answer within ${this.commandTimeoutMs} ms`));
      }, this.commandTimeoutMs);
      start((err, value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(value);
      });
    });
  }
}

/** pcsc-lite's card event counter for a reader: the high 16 bits of its event state. */
function cardEvents(state: number): number {
  return (state >>> 16) & 0xffff;
}

async function loadPcscLite(): Promise<PcscContext> {
  const mod = (await import("@pokusew/pcsclite")) as unknown as { default: () => PcscContext };
  return mod.default();
}

/** Fails fast (CHIP_IO_ERROR) unless pcscd accepts connections on its socket. */
export async function probePcscd(socketPath = DEFAULT_PCSCD_SOCKET, timeoutMs = 1000): Promise<void> {
  if (!existsSync(socketPath)) {
    throw new ChipError("CHIP_IO_ERROR", undefined, `PC/SC service not running (no ${socketPath})`);
  }
  await new Promise<void>((resolve, reject) => {
    const socket = createConnection(socketPath);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ChipError("CHIP_IO_ERROR", undefined, `PC/SC service not answering on ${socketPath}`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new ChipError(
          "CHIP_IO_ERROR",
          undefined,
          `PC/SC service not running (${err.code ?? "error"} on ${socketPath})`,
        ),
      );
    });
  });
}

const PCSC_ERRORS: Record<string, string> = {
  "80100069": "card removed",
  "80100068": "card reset by another application",
  "80100066": "card unresponsive",
  "80100067": "card unpowered",
  "80100016": "transaction failed",
  "8010000C": "no card",
  "80100017": "reader unavailable",
  "80100009": "unknown reader",
  "8010001D": "PC/SC service not running",
  "8010001E": "PC/SC service stopped",
  "8010000A": "timeout",
  "80100002": "cancelled",
  "8010000F": "protocol mismatch",
};

/**
 * A short, byte-free reason for a pcsc-lite failure. The addon's messages look like
 * `SCardTransmit error: Card was removed.(0x80100069)`; only the code is kept and named.
 */
function describe(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const code = /0x([0-9a-f]{8})/i.exec(message)?.[1]?.toUpperCase();
  if (code) return `${PCSC_ERRORS[code] ?? "PC/SC error"} (0x${code})`;
  if (/got no answer within \d+ ms$/.test(message)) return message;
  return "PC/SC error";
}
