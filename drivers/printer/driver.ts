import type { Logger } from "../../agent/log/logger.js";
import type { Clock } from "../../agent/util/clock.js";
import { Mutex } from "../../agent/util/mutex.js";
import { DeviceError } from "../device-fault.js";
import { tracksToWrite } from "../magstripe/encoder.js";
import { isTrackCharCode, TRACK_SPECS, type TrackNumber } from "../magstripe/iso7813.js";
import type { Transport } from "../transport/transport.js";
import {
  type CardPosition,
  encodeCommand,
  encodeCompressedBitmap,
  FEEDER_PRESENT_VOLTS,
  type PrinterReply,
  parseBezelSensor,
  parseCardPosition,
  parseCoverState,
  parseFeederVoltage,
  parseReply,
  parseRibbonRemaining,
  ReplySplitter,
} from "./codec.js";
import { compressPanel } from "./raster/compress.js";
import { assertPanelSize } from "./raster/geometry.js";

export interface PrinterTimeouts {
  /** Card moves, settings, sensor reads. */
  defaultMs: number;
  /** Bitmap transfers and the `Se` that prints. */
  printMs: number;
  /** `Smw` and each `Smr`. */
  magMs: number;
}

/**
 * The longest single `Wbz` wait; longer collect timeouts are several chunks. Short, because the
 * line is busy while a chunk runs: a SIGTERM or a status read waits for the chunk to end. A take
 * is still seen at once (the printer answers the moment the mouth empties).
 */
const MAX_TAKE_WAIT_CHUNK_MS = 2_000;

export const DEFAULT_PRINTER_TIMEOUTS: PrinterTimeouts = { defaultMs: 5_000, printMs: 60_000, magMs: 15_000 };

export interface PrinterDriverOptions {
  transport: Transport;
  clock: Clock;
  logger: Logger;
  timeouts?: Partial<PrinterTimeouts>;
  /** Names the device in errors and logs. Default `printer`. */
  device?: string;
}

export interface PrinterStatus {
  feederEmpty: boolean;
  ribbonOut: boolean;
  /** Prints left, when the printer could tell. */
  ribbonRemaining?: number;
  coverOpen: boolean;
  cardPosition: CardPosition;
}

export interface PrinterDriverStats {
  /** Commands sent. */
  commands: number;
  /** Reply lines thrown away: line noise, overlong lines, or text the waiting command cannot answer. */
  droppedFrames: number;
  /** Reply lines that arrived while no command was waiting. */
  unexpectedReplies: number;
  bytesWritten: number;
}

export interface MagstripeTracks {
  track1?: string;
  track2?: string;
  track3?: string;
}

export type Coercivity = "HICO" | "LOCO";

export interface PrintPanels {
  /** Raw 1bpp panels, 82296 bytes each (raster/geometry.ts). */
  front?: Buffer;
  back?: Buffer;
}

interface Command {
  name: string;
  frame: Buffer;
  timeoutMs: number;
  /** For commands that answer a value: whether a line is such an answer. Absent: the answer is `OK`. */
  accepts?: (text: string) => boolean;
}

interface InFlight {
  command: Command;
  answer(reply: PrinterReply): void;
  fail(error: DeviceError): void;
}

/**
 * Request/reply driver for the Evolis-style card printer (docs/devices.md, "Printer"). One command
 * is on the wire at a time and every command waits for exactly one reply line. Each high-level
 * operation holds the lock for all its commands, so a status poll can never land inside a print
 * sequence, where `Se` means "print" rather than "eject".
 *
 * Track data, bitmaps and `Dm` parameters are never logged: logs carry command names only.
 */
export class PrinterDriver {
  private readonly transport: Transport;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly timeouts: PrinterTimeouts;
  private readonly device: string;
  private readonly mutex = new Mutex();
  private readonly splitter = new ReplySplitter();
  private inFlight: InFlight | undefined;
  private commands = 0;
  private repliesDropped = 0;
  private unexpectedReplies = 0;
  private bytesWritten = 0;

  constructor(options: PrinterDriverOptions) {
    this.transport = options.transport;
    this.clock = options.clock;
    this.device = options.device ?? "printer";
    this.log = options.logger.child({ device: this.device });
    this.timeouts = { ...DEFAULT_PRINTER_TIMEOUTS, ...options.timeouts };
    this.transport.onData((chunk) => {
      for (const line of this.splitter.push(chunk)) this.onLine(line);
    });
    this.transport.onClose(({ disconnected }) => this.onTransportClosed(disconnected));
  }

  get stats(): PrinterDriverStats {
    return {
      commands: this.commands,
      droppedFrames: this.splitter.droppedFrames + this.repliesDropped,
      unexpectedReplies: this.unexpectedReplies,
      bytesWritten: this.bytesWritten,
    };
  }

  get isOpen(): boolean {
    return this.transport.isOpen;
  }

  /** Called when the link to the printer goes away without being asked to (unplugged cable). */
  onDisconnect(listener: () => void): () => void {
    return this.transport.onClose(({ disconnected }) => {
      if (disconnected) listener();
    });
  }

  /** Opens the transport and hands error handling to the host (`Pem;2`). Call again after a disconnect. */
  async open(): Promise<void> {
    await this.transport.open();
    await this.mutex.run(() => this.expectOk("Pem", ["2"]));
  }

  /** Closes the transport; a command still waiting fails with `DEVICE_DISCONNECTED`. */
  async close(): Promise<void> {
    await this.transport.close();
  }

  insertCard(): Promise<void> {
    return this.mutex.run(() => this.expectOk("Si"));
  }

  moveToContactStation(): Promise<void> {
    return this.mutex.run(() => this.expectOk("Sis"));
  }

  /** `Pr;k`, `Ss`, then `Sr`+`Dbc` and/or `Sv`+`Dbc`, then `Se`, which prints and keeps the card inside. */
  async printPanels(panels: PrintPanels): Promise<void> {
    const { front, back } = panels;
    if (!front && !back) throw new RangeError("printPanels needs a front or a back panel");
    if (front) assertPanelSize(front);
    if (back) assertPanelSize(back);
    // Compressed before taking the lock: it is CPU work, not device time.
    const frontFrame = front && encodeCompressedBitmap(compressPanel(front));
    const backFrame = back && encodeCompressedBitmap(compressPanel(back));
    const { printMs } = this.timeouts;
    await this.mutex.run(async () => {
      await this.expectOk("Pr", ["k"]);
      await this.expectOk("Ss");
      if (frontFrame) {
        await this.expectOk("Sr");
        await this.expectReply({ name: "Dbc", frame: frontFrame, timeoutMs: printMs });
      }
      if (backFrame) {
        await this.expectOk("Sv");
        await this.expectReply({ name: "Dbc", frame: backFrame, timeoutMs: printMs });
      }
      await this.expectOk("Se", [], printMs);
    });
  }

  /**
   * Loads and writes the given tracks, then reads each one back: a track that reads back different
   * fails with `MAG_VERIFY`. Data is ISO 7813 without sentinels and LRC; data the encoder cannot
   * take fails with `COMMAND_REJECTED` before anything is sent.
   */
  async encodeMagstripe(tracks: MagstripeTracks, coercivity: Coercivity): Promise<void> {
    const toWrite = tracksToWrite(tracks, { device: this.device, command: "Dm" });
    const { magMs } = this.timeouts;
    await this.mutex.run(async () => {
      await this.expectOk("Pmc", [coercivity === "HICO" ? "h" : "l"]);
      for (const { n, data } of toWrite) await this.expectOk("Dm", [String(n), data]);
      await this.expectOk("Smw", [], magMs);
      for (const { n, data } of toWrite) {
        const readBack = await this.expectValue(
          "Smr",
          [String(n)],
          (text) => isTrackReadBack(n, text),
          magMs,
        );
        if (readBack !== data) {
          throw new DeviceError("MAG_VERIFY", `track ${n} reads back different from what was written`, {
            device: this.device,
            command: "Smr",
          });
        }
      }
    });
  }

  /** Ejects the card into the kiosk mouth (`Seb`). */
  presentCard(): Promise<void> {
    return this.mutex.run(() => this.expectOk("Seb"));
  }

  /** Bezel sensor (`Rbz`): true while a card sits in the mouth. */
  isCardInMouth(): Promise<boolean> {
    return this.mutex.run(async () => {
      const text = await this.expectValue("Rbz", [], (t) => parseBezelSensor(t) !== undefined);
      return parseBezelSensor(text)!;
    });
  }

  /**
   * Waits until the cardholder takes the card (true) or `timeoutMs` passes with the card still in
   * the mouth (false). Uses the long-poll `Wbz;<ms>`: the printer answers the moment the mouth
   * empties, so D1 hears CARD_PROD_DONE without a polling delay and the line stays quiet meanwhile.
   * Long waits are cut into 2 s chunks, so a lost reply costs at most one chunk and a stopping agent
   * regains the line within 2 s.
   */
  async waitForCardTaken(timeoutMs: number): Promise<boolean> {
    const deadline = this.clock.now() + timeoutMs;
    for (;;) {
      const chunk = Math.max(0, Math.min(deadline - this.clock.now(), MAX_TAKE_WAIT_CHUNK_MS));
      const inMouth = await this.mutex.run(async () => {
        const text = await this.expectValue(
          "Wbz",
          [String(chunk)],
          (t) => parseBezelSensor(t) !== undefined,
          chunk + this.timeouts.defaultMs,
        );
        return parseBezelSensor(text)!;
      });
      if (!inMouth) return true;
      if (deadline - this.clock.now() <= 0) return false;
    }
  }

  /** Pulls the card back from the mouth (or from inside) into the capture bin (`Scb`). */
  retractToCaptureBin(): Promise<void> {
    return this.mutex.run(() => this.expectOk("Scb"));
  }

  /** Drops the card into the reject box (`Ser`). */
  rejectCard(): Promise<void> {
    return this.mutex.run(() => this.expectOk("Ser"));
  }

  /** Ejects to the output tray: `Se` outside a print sequence. */
  ejectCard(): Promise<void> {
    return this.mutex.run(() => this.expectOk("Se"));
  }

  /** `Rse;f`, `Rrt;count`, `Rcv`, `Rpos`. A missing ribbon is a status here, not an error. */
  readStatus(): Promise<PrinterStatus> {
    return this.mutex.run(async () => {
      const volts = await this.expectValue("Rse", ["f"], (t) => parseFeederVoltage(t) !== undefined);
      const ribbon = await this.expectReply({
        name: "Rrt",
        frame: encodeCommand("Rrt", ["count"]),
        timeoutMs: this.timeouts.defaultMs,
        accepts: (t) => parseRibbonRemaining(t) !== undefined,
        tolerate: "RIBBON_OUT",
      });
      const cover = await this.expectValue("Rcv", [], (t) => parseCoverState(t) !== undefined);
      const position = await this.expectValue("Rpos", [], (t) => parseCardPosition(t) !== undefined);
      const ribbonRemaining = ribbon.kind === "value" ? parseRibbonRemaining(ribbon.text) : undefined;
      return {
        feederEmpty: parseFeederVoltage(volts)! < FEEDER_PRESENT_VOLTS,
        ribbonOut: ribbonRemaining === undefined || ribbonRemaining === 0,
        ...(ribbonRemaining === undefined ? {} : { ribbonRemaining }),
        coverOpen: parseCoverState(cover) === "OPEN",
        cardPosition: parseCardPosition(position)!,
      };
    });
  }

  private async expectOk(
    name: string,
    params: string[] = [],
    timeoutMs = this.timeouts.defaultMs,
  ): Promise<void> {
    await this.expectReply({ name, frame: encodeCommand(name, params), timeoutMs });
  }

  private async expectValue(
    name: string,
    params: string[],
    accepts: (text: string) => boolean,
    timeoutMs = this.timeouts.defaultMs,
  ): Promise<string> {
    const reply = await this.expectReply({ name, frame: encodeCommand(name, params), timeoutMs, accepts });
    return reply.kind === "value" ? reply.text : "";
  }

  /** Sends a command; an error reply becomes a DeviceError unless it is the one `tolerate` names. */
  private async expectReply(command: Command & { tolerate?: DeviceError["code"] }): Promise<PrinterReply> {
    const reply = await this.send(command);
    if (reply.kind === "error" && reply.fault !== command.tolerate) {
      throw new DeviceError(reply.fault, `${command.name}: printer answered ${reply.text}`, {
        device: this.device,
        command: command.name,
      });
    }
    return reply;
  }

  /** Resolves with the command's reply; rejects only on timeout or disconnection. */
  private send(command: Command): Promise<PrinterReply> {
    const { name, frame, timeoutMs } = command;
    return new Promise<PrinterReply>((resolve, reject) => {
      const settle = (done: () => void): void => {
        if (this.inFlight !== entry) return;
        this.inFlight = undefined;
        this.clock.clearTimeout(timer);
        done();
      };
      const entry: InFlight = {
        command,
        answer: (reply) => settle(() => resolve(reply)),
        fail: (error) => settle(() => reject(error)),
      };
      const droppedBefore = this.stats.droppedFrames;
      const timer = this.clock.setTimeout(() => {
        // Garbage instead of an answer is a line problem, not a silent printer: say which.
        const garbled = this.stats.droppedFrames > droppedBefore;
        this.log.warn({ command: name, timeoutMs, garbled }, "printer did not answer in time");
        entry.fail(
          garbled
            ? new DeviceError("PROTOCOL_ERROR", `${name}: only unreadable bytes within ${timeoutMs} ms`, {
                device: this.device,
                command: name,
              })
            : new DeviceError("DEVICE_TIMEOUT", `${name}: no reply within ${timeoutMs} ms`, {
                device: this.device,
                command: name,
              }),
        );
      }, timeoutMs);
      this.inFlight = entry;
      this.commands++;
      this.log.debug({ command: name }, "printer command");
      this.transport.write(frame).then(
        () => {
          this.bytesWritten += frame.length;
        },
        (err: unknown) =>
          entry.fail(
            new DeviceError("DEVICE_DISCONNECTED", `${name}: cannot write to ${this.transport.description}`, {
              device: this.device,
              command: name,
              cause: err,
            }),
          ),
      );
    });
  }

  private onLine(text: string): void {
    const entry = this.inFlight;
    if (!entry) {
      this.unexpectedReplies++;
      // Length only: a late `Smr` answer is track data.
      this.log.warn({ length: text.length }, "printer reply with no command in flight; ignored");
      return;
    }
    const { command } = entry;
    const reply = parseReply(text, command.name);
    const fits =
      reply.kind === "error" ||
      (reply.kind === "ok" && command.accepts === undefined) ||
      (reply.kind === "value" && command.accepts?.(reply.text) === true);
    if (fits) {
      entry.answer(reply);
      return;
    }
    this.repliesDropped++;
    this.log.warn({ command: command.name, length: text.length }, "reply does not fit the command; dropped");
  }

  private onTransportClosed(disconnected: boolean): void {
    this.splitter.reset();
    const entry = this.inFlight;
    if (disconnected) this.log.warn("printer link lost");
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

/** What a read-back may look like: track characters (a misread may hold sentinels) within length. */
function isTrackReadBack(n: TrackNumber, text: string): boolean {
  if (text.length === 0 || text.length > TRACK_SPECS[n].maxData + 2) return false;
  for (let i = 0; i < text.length; i++) if (!isTrackCharCode(n, text.charCodeAt(i))) return false;
  return true;
}
