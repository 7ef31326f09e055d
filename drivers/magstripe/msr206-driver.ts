import type { Logger } from "../../agent/log/logger.js";
import { type Clock, delay } from "../../agent/util/clock.js";
import { Mutex } from "../../agent/util/mutex.js";
import { DeviceError, type DeviceFault } from "../device-fault.js";
import type { Transport } from "../transport/transport.js";
import { type Coercivity, type MagstripeEncoder, type MagstripeTracks, tracksToWrite } from "./encoder.js";
import type { TrackNumber } from "./iso7813.js";
import {
  encodeCommand,
  encodeErase,
  encodeSetCoercivity,
  encodeWriteIso,
  faultOfStatus,
  type Msr206Operation,
  type Msr206Reply,
  Msr206ReplyParser,
  type Msr206Status,
  type ReadTracks,
  type TrackRead,
  trackDataOf,
} from "./msr206-codec.js";

export interface Msr206Timeouts {
  /** Commands the unit answers by itself: reset handshake, coercivity, model, firmware. */
  defaultMs: number;
}

export const DEFAULT_MSR206_TIMEOUTS: Msr206Timeouts = { defaultMs: 3_000 };

/**
 * How long write, read and erase wait for their answer by default. MSR206 / MSR605X are hand-swipe
 * units: after those commands the unit answers only once a person has swiped the card through its head.
 */
export const DEFAULT_SWIPE_TIMEOUT_MS = 30_000;

/** The commands the unit answers only after a swipe. */
export type SwipeOperation = "write" | "read" | "erase";

/** What `onSwipeRequest` gets: which command waits for the swipe, and for how long. */
export interface SwipeRequest {
  operation: SwipeOperation;
  waitMs: number;
}

export interface Msr206EncoderOptions {
  transport: Transport;
  clock: Clock;
  logger: Logger;
  timeouts?: Partial<Msr206Timeouts>;
  /**
   * How long write, read and erase wait for a person to swipe the card (the unit answers only after
   * the swipe). Default `DEFAULT_SWIPE_TIMEOUT_MS` (30 s). No answer in time is `DEVICE_TIMEOUT`.
   */
  swipeTimeoutMs?: number;
  /**
   * Called right after a write, read or erase command went to the unit, so the agent can tell the
   * teller to swipe the card now (console, log). Carries no card data. A throw is logged, not raised.
   */
  onSwipeRequest?: (request: SwipeRequest) => void;
  /** Pause after `ESC a` before the communication test. Default 0. */
  resetSettleMs?: number;
  /** Names the device in errors and logs. Default `msr206`. */
  device?: string;
  /**
   * After `open()`, an operation that finds the link closed (unplugged, then plugged back) opens it
   * again first, failing with `DEVICE_DISCONNECTED` while the device is still away. Default true.
   * `close()` turns it off until the next `open()`.
   */
  reopenOnUse?: boolean;
}

export interface Msr206EncoderStats {
  commands: number;
  bytesWritten: number;
  /** Bytes the reply parser threw away (noise, broken and truncated frames). */
  droppedBytes: number;
  /** Broken or truncated frames, plus whole replies the waiting command cannot take. */
  droppedFrames: number;
  /** Replies that arrived with no command waiting. */
  unexpectedReplies: number;
}

interface Command {
  /** For logs and errors: `reset`, `test`, `hico`, `write`, `read`, … never parameters. */
  name: string;
  frame: Buffer;
  timeoutMs: number;
  /** Whether a reply answers this command. Anything else is dropped while it waits. */
  accepts(reply: Msr206Reply): boolean;
  expectModel?: boolean;
  /** Set for commands the unit answers only after a swipe: the teller is asked for one. */
  swipe?: SwipeOperation;
}

interface InFlight {
  command: Command;
  answer(reply: Msr206Reply): void;
  fail(error: DeviceError): void;
}

const isStatus = (r: Msr206Reply): boolean => r.kind === "status";

/**
 * `MagstripeEncoder` for MSR206-family encoders over any `Transport`: a serial MSR206 through
 * `SerialTransport`, an MSR605X through `HidTransport`. One command on the wire at a time, each
 * public operation under one lock, timeouts on the injected clock.
 *
 * After a timeout or a lost link the device's state is unknown (it may still wait for a card in
 * write mode, a late answer may still come): the next operation starts with `ESC a` + `ESC e`,
 * whose answer `ESC y` cannot be mistaken for a late status.
 *
 * Track data is never logged nor put into errors: logs carry command names, reply kinds and lengths.
 */
export class Msr206Encoder implements MagstripeEncoder {
  private readonly transport: Transport;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly timeouts: Msr206Timeouts;
  private readonly swipeTimeoutMs: number;
  private readonly onSwipeRequest: ((request: SwipeRequest) => void) | undefined;
  private readonly resetSettleMs: number;
  private readonly device: string;
  private readonly mutex = new Mutex();
  private readonly parser = new Msr206ReplyParser();
  private inFlight: InFlight | undefined;
  private needsSync = true;
  private readonly reopenOnUse: boolean;
  /** Between `open()` and `close()`: the caller wants the device. */
  private wanted = false;
  private commands = 0;
  private bytesWritten = 0;
  private repliesDropped = 0;
  private unexpectedReplies = 0;

  constructor(options: Msr206EncoderOptions) {
    this.transport = options.transport;
    this.clock = options.clock;
    this.device = options.device ?? "msr206";
    this.log = options.logger.child({ device: this.device });
    this.timeouts = { ...DEFAULT_MSR206_TIMEOUTS, ...options.timeouts };
    this.swipeTimeoutMs = options.swipeTimeoutMs ?? DEFAULT_SWIPE_TIMEOUT_MS;
    this.onSwipeRequest = options.onSwipeRequest;
    this.resetSettleMs = options.resetSettleMs ?? 0;
    this.reopenOnUse = options.reopenOnUse ?? true;
    this.transport.onData((chunk) => {
      for (const reply of this.parser.push(chunk)) this.onReply(reply);
    });
    this.transport.onClose(({ disconnected }) => this.onTransportClosed(disconnected));
  }

  get stats(): Msr206EncoderStats {
    const parser = this.parser.stats;
    return {
      commands: this.commands,
      bytesWritten: this.bytesWritten,
      droppedBytes: parser.droppedBytes,
      droppedFrames: parser.droppedFrames + this.repliesDropped,
      unexpectedReplies: this.unexpectedReplies,
    };
  }

  /** Opens the transport, resets the encoder (`ESC a`) and runs the communication test (`ESC e` → `ESC y`). */
  async open(): Promise<void> {
    this.wanted = true;
    await this.transport.open();
    await this.mutex.run(() => this.sync());
  }

  /** Closes the transport; a command still waiting fails with `DEVICE_DISCONNECTED`. */
  async close(): Promise<void> {
    this.wanted = false;
    await this.transport.close();
  }

  /** `ESC x` (HiCo) / `ESC y` (LoCo) → `ESC 0`. */
  setCoercivity(coercivity: Coercivity): Promise<void> {
    return this.operation(() => this.setCoercivityLocked(coercivity));
  }

  /** `ESC d` → `ESC h` / `ESC l`. */
  readCoercivity(): Promise<Coercivity> {
    return this.operation(async () => {
      const reply = await this.request({
        name: "coercivity",
        frame: encodeCommand("coercivity"),
        timeoutMs: this.timeouts.defaultMs,
        accepts: (r) => r.kind === "coercivity" || isStatus(r),
      });
      if (reply.kind === "coercivity") return reply.coercivity;
      throw this.statusError("coercivity", reply, "command");
    });
  }

  /** `ESC t` → `ESC <model> S`, e.g. `3` for a three-track unit. */
  readModel(): Promise<string> {
    return this.operation(async () => {
      const reply = await this.request({
        name: "model",
        frame: encodeCommand("model"),
        timeoutMs: this.timeouts.defaultMs,
        accepts: (r) => r.kind === "model" || isStatus(r),
        expectModel: true,
      });
      if (reply.kind === "model") return reply.model;
      throw this.statusError("model", reply, "command");
    });
  }

  /** `ESC v` → `ESC REV?X.XX`. */
  readFirmware(): Promise<string> {
    return this.operation(async () => {
      const reply = await this.request({
        name: "firmware",
        frame: encodeCommand("firmware"),
        timeoutMs: this.timeouts.defaultMs,
        accepts: (r) => r.kind === "firmware" || isStatus(r),
      });
      if (reply.kind === "firmware") return reply.version;
      throw this.statusError("firmware", reply, "command");
    });
  }

  /** `ESC c <selector>` → `ESC 0`, once a person has swiped the card (like a write). */
  erase(tracks: readonly TrackNumber[]): Promise<void> {
    const frame = encodeErase(tracks);
    return this.operation(() => this.expectOkAfterSwipe("erase", frame));
  }

  /**
   * Sets the coercivity, writes the given tracks in ISO mode (`ESC w` + data block → `ESC 0`), reads
   * them back (`ESC r` → data block + status) and compares each written track. Track data that is
   * not ISO-mode encodable fails with `COMMAND_REJECTED` before anything is sent.
   *
   * The unit is hand-swipe: write and read are each answered only after a person swiped the card.
   * Right after sending each of them the driver asks for the swipe (`onSwipeRequest`, a warn log) and
   * waits `swipeTimeoutMs` for the answer.
   *
   * - write answered `1` / `9` / `A` → `MAG_WRITE`; `2` / `4` → `COMMAND_REJECTED`
   * - a written track that reads back different, empty (`ESC +`), bad (`ESC *`) or not at all →
   *   `MAG_VERIFY`; a track we did not write may read back anything (a blank track is `ESC +`)
   * - no swipe (no answer) in time → `DEVICE_TIMEOUT`; link lost → `DEVICE_DISCONNECTED`
   */
  async encode(tracks: MagstripeTracks, coercivity: Coercivity): Promise<void> {
    const written = tracksToWrite(tracks, { device: this.device, command: "write" });
    const writeFrame = encodeWriteIso(tracks);
    await this.operation(async () => {
      await this.setCoercivityLocked(coercivity);
      await this.expectOkAfterSwipe("write", writeFrame);
      const answer = await this.request({
        name: "read",
        frame: encodeCommand("readIso"),
        timeoutMs: this.swipeTimeoutMs,
        accepts: (r) => r.kind === "read" || isStatus(r),
        swipe: "read",
      });
      const status = answer.kind === "read" || answer.kind === "status" ? answer.status : "OK";
      const fault = faultOfStatus(status, "read");
      if (fault === "COMMAND_REJECTED") throw this.statusError("read", answer, "read");
      const readBack = answer.kind === "read" ? answer.tracks : undefined;
      for (const { n, data } of written) {
        const problem = verifyProblem(n, data, readBack?.[`track${n}`]);
        if (problem === undefined) continue;
        throw new DeviceError("MAG_VERIFY", `track ${n} ${problem} (read status ${status})`, {
          device: this.device,
          command: "read",
        });
      }
      this.log.debug(
        { tracks: written.map((t) => t.n), coercivity, readBack: readBack && readStatuses(readBack) },
        "magstripe written and verified",
      );
    });
  }

  /**
   * Runs `section` under the lock, after re-opening a link that went away (`reopenOnUse`) and a
   * resynchronisation if the last operation ended badly.
   */
  private operation<T>(section: () => Promise<T>): Promise<T> {
    return this.mutex.run(async () => {
      if (this.wanted && this.reopenOnUse && !this.transport.isOpen) {
        this.log.info("re-opening the encoder link");
        await this.transport.open();
      }
      if (this.needsSync) await this.sync();
      return section();
    });
  }

  /** `ESC a` (no answer), then `ESC e` → `ESC y`. */
  private async sync(): Promise<void> {
    this.parser.discardPartial();
    await this.sendOnly("reset", encodeCommand("reset"));
    if (this.resetSettleMs > 0) await delay(this.clock, this.resetSettleMs);
    const reply = await this.request({
      name: "test",
      frame: encodeCommand("test"),
      timeoutMs: this.timeouts.defaultMs,
      // Only `ESC y`: a late status from before the reset is dropped here, not taken as the answer.
      accepts: (r) => r.kind === "test-ok",
    });
    if (reply.kind === "test-ok") this.needsSync = false;
  }

  /** A write or erase: answered `ESC <status>` once the card was swiped. */
  private async expectOkAfterSwipe(name: "write" | "erase", frame: Buffer): Promise<void> {
    const reply = await this.request({
      name,
      frame,
      timeoutMs: this.swipeTimeoutMs,
      accepts: isStatus,
      swipe: name,
    });
    if (reply.kind === "status" && reply.status === "OK") return;
    throw this.statusError(name, reply, name);
  }

  /** Tells the teller (log, and the agent through `onSwipeRequest`) to swipe the card now. */
  private requestSwipe(operation: SwipeOperation, waitMs: number): void {
    this.log.warn({ operation, waitMs }, "swipe the card through the magstripe encoder");
    if (!this.onSwipeRequest) return;
    try {
      this.onSwipeRequest({ operation, waitMs });
    } catch (err) {
      // The prompt is a courtesy: a failing listener must not fail the card.
      this.log.warn({ err, operation }, "swipe request listener failed");
    }
  }

  private async setCoercivityLocked(coercivity: Coercivity): Promise<void> {
    await this.expectOk(coercivity === "HICO" ? "hico" : "loco", encodeSetCoercivity(coercivity));
  }

  private async expectOk(name: string, frame: Buffer): Promise<void> {
    const reply = await this.request({ name, frame, timeoutMs: this.timeouts.defaultMs, accepts: isStatus });
    if (reply.kind === "status" && reply.status === "OK") return;
    throw this.statusError(name, reply, "command");
  }

  private statusError(name: string, reply: Msr206Reply, operation: Msr206Operation): DeviceError {
    const status: Msr206Status | undefined =
      reply.kind === "status" || reply.kind === "read" ? reply.status : undefined;
    const fault: DeviceFault = (status && faultOfStatus(status, operation)) ?? "PROTOCOL_ERROR";
    return new DeviceError(fault, `${name}: encoder answered status ${status ?? reply.kind}`, {
      device: this.device,
      command: name,
    });
  }

  /** Writes a command that has no answer (`ESC a`). */
  private async sendOnly(name: string, frame: Buffer): Promise<void> {
    this.commands++;
    this.log.debug({ command: name }, "encoder command");
    try {
      await this.transport.write(frame);
    } catch (err) {
      this.needsSync = true;
      throw this.writeFailed(name, err);
    }
    this.bytesWritten += frame.length;
  }

  /** Resolves with the command's reply; rejects on timeout or disconnection only. */
  private request(command: Command): Promise<Msr206Reply> {
    const { name, frame, timeoutMs } = command;
    return new Promise<Msr206Reply>((resolve, reject) => {
      const settle = (done: () => void): void => {
        if (this.inFlight !== entry) return;
        this.inFlight = undefined;
        this.parser.expectModel = false;
        this.clock.clearTimeout(timer);
        done();
      };
      const entry: InFlight = {
        command,
        answer: (reply) => settle(() => resolve(reply)),
        fail: (error) =>
          settle(() => {
            this.needsSync = true;
            reject(error);
          }),
      };
      const timer = this.clock.setTimeout(() => {
        const dropped = this.parser.discardPartial();
        // For a swipe command the likely reason is a person who did not swipe: say so, it is what
        // the teller can act on.
        const message = command.swipe
          ? `${name}: no card was swiped within ${timeoutMs} ms (no reply)`
          : `${name}: no reply within ${timeoutMs} ms`;
        this.log.warn(
          { command: name, timeoutMs, partialBytes: dropped },
          command.swipe ? "no card was swiped through the encoder in time" : "encoder did not answer in time",
        );
        entry.fail(new DeviceError("DEVICE_TIMEOUT", message, { device: this.device, command: name }));
      }, timeoutMs);
      this.inFlight = entry;
      this.parser.expectModel = command.expectModel === true;
      this.commands++;
      this.log.debug({ command: name }, "encoder command");
      this.transport.write(frame).then(
        () => {
          this.bytesWritten += frame.length;
        },
        (err: unknown) => entry.fail(this.writeFailed(name, err)),
      );
      // Right after sending, before any answer can arrive (answers come in later data events): one
      // prompt per swipe command. Not on a link known to be closed: that write fails at once.
      if (command.swipe && this.transport.isOpen) this.requestSwipe(command.swipe, timeoutMs);
    });
  }

  private writeFailed(name: string, err: unknown): DeviceError {
    return new DeviceError("DEVICE_DISCONNECTED", `${name}: cannot write to ${this.transport.description}`, {
      device: this.device,
      command: name,
      cause: err,
    });
  }

  private onReply(reply: Msr206Reply): void {
    const entry = this.inFlight;
    if (!entry) {
      this.unexpectedReplies++;
      this.log.warn({ reply: reply.kind }, "encoder reply with no command in flight; ignored");
      return;
    }
    if (entry.command.accepts(reply)) {
      entry.answer(reply);
      return;
    }
    this.repliesDropped++;
    this.log.warn(
      { command: entry.command.name, reply: reply.kind },
      "reply does not fit the command; dropped",
    );
  }

  private onTransportClosed(disconnected: boolean): void {
    this.parser.reset();
    this.needsSync = true;
    if (disconnected) this.log.warn("encoder link lost");
    const entry = this.inFlight;
    if (!entry) return;
    const name = entry.command.name;
    entry.fail(
      new DeviceError("DEVICE_DISCONNECTED", `${name}: link closed while waiting for the reply`, {
        device: this.device,
        command: name,
      }),
    );
  }
}

/**
 * Why a written track does not verify, or undefined when it reads back as written. Only the tracks
 * we wrote are checked: a track we left alone may be blank (`ESC +`) or unreadable (`ESC *`).
 */
function verifyProblem(n: TrackNumber, data: string, read: TrackRead | undefined): string | undefined {
  if (read === undefined) return "did not read back";
  switch (read.status) {
    case "empty":
      return "read back empty";
    case "bad":
      return "read back unreadable (bad track)";
    case "data":
      return trackDataOf(n, read.text) === data ? undefined : "reads back different from what was written";
  }
}

/** What each track read back as (`data` / `empty` / `bad`), for logs: never the text. */
function readStatuses(tracks: ReadTracks): Record<TrackNumber, TrackRead["status"]> {
  return { 1: tracks.track1.status, 2: tracks.track2.status, 3: tracks.track3.status };
}
