import type { Logger } from "../../../agent/log/logger.js";
import { type Clock, delay } from "../../../agent/util/clock.js";
import { Mutex } from "../../../agent/util/mutex.js";
import { DeviceError, type DeviceFault } from "../../device-fault.js";
import { type Coercivity, type MagstripeTracks, tracksToWrite } from "../../magstripe/encoder.js";
import { isTrackCharCode, TRACK_SPECS, type TrackNumber } from "../../magstripe/iso7813.js";
import type { Transport } from "../../transport/transport.js";
import type {
  CardPosition,
  CardPrinter,
  FeederStatus,
  OpenOptions,
  PrinterCapabilities,
  PrinterCounters,
  PrinterIdentity,
  PrinterLinkStats,
  PrinterStatus,
  PrinterWarning,
  PrintSides,
} from "../card-printer.js";
import {
  classifyReply,
  type EvolisReply,
  encodeCommand,
  encodeCompressedPanel,
  parseBoxFullReply,
  parseCleaningReply,
  parseCount,
  parseInsidePosition,
  parseVolts,
  SENSOR_ACTIVE_VOLTS,
} from "./codec.js";
import type { EvolisCommandName } from "./commands.js";
import { compressKO, MAX_KO_PAYLOAD_BYTES } from "./ko-compression.js";
import { EVOLIS_PRINT_AREA, panelFromImage } from "./panel.js";
import { ReplyReader } from "./reply-reader.js";

export interface EvolisTimeouts {
  /** Settings, card moves, sensor reads. */
  defaultMs: number;
  /** Panel transfers and the `Se` that prints. */
  printMs: number;
  /** `Smw` and each `Smr`/`Rmb`. */
  magMs: number;
}

export const DEFAULT_EVOLIS_TIMEOUTS: EvolisTimeouts = { defaultMs: 5_000, printMs: 60_000, magMs: 15_000 };

export type PrinterLinkKind = "serial" | "usb" | "tcp";

export interface EvolisPrinterOptions {
  transport: Transport;
  /** How the printer is reached; behind a serial link the settings are re-applied before every card. */
  link: PrinterLinkKind;
  clock: Clock;
  logger: Logger;
  timeouts?: Partial<EvolisTimeouts>;
  /** Silence that ends a reply with no terminator (ReplyReader). Default 50 ms. */
  replyIdleGapMs?: number;
  /** How often the mouth sensor is read while a presented card waits to be taken. Default 100 ms. */
  takePollMs?: number;
  /** Ribbon panels left at or below which the status carries RIBBON_LOW (kiosk driver: 20). */
  ribbonLowPanels?: number;
  /** After the resync padding, how long replies are awaited and thrown away. Default 300 ms. */
  resyncQuietMs?: number;
  /**
   * The feeders cards are taken from (the configuration's ids). With more than one, each insert
   * picks its feeder with `Piem;<n>;0` and the feeders are read with `Sk;f` / `Sk;w` (guide p.21,
   * p.64), so the ids must be the printer's feeder numbers, 1 and 2. Default ["1"].
   */
  feeders?: readonly string[];
  /** Names the device in errors and logs. Default `printer`. */
  device?: string;
}

/**
 * The kiosk start-up settings, exactly the list of the public kiosk driver's `Open`
 * (leithergit/Z390Kylin QEvolisPrinter.cpp; docs/devices.md): the host handles errors, cards come
 * from the feeder and leave through the mouth, printing never ejects by itself, the reject box takes
 * rejected cards, and the printer does nothing on its own with a card left in the mouth (the agent
 * decides when to capture it).
 */
const START_UP_SETTINGS: ReadonlyArray<readonly [EvolisCommandName, readonly string[]]> = [
  ["Pem", ["2"]],
  ["Pcim", ["F"]],
  ["Pcem", ["I"]],
  ["Psmgr", ["2"]],
  ["Pneab", ["E"]],
  ["Pcrm", ["D"]],
  ["Pbc", ["A", "D"]],
];

/**
 * What brings a printer that was cut off in the middle of a panel transfer back to a command
 * boundary: a `Dbc;k;2;<n>;` whose sender died is still waiting for the rest of its n bytes, and
 * would take every later command for panel data. NUL bytes are what Evolis's Windows driver and the
 * dpavlin driver pad their jobs with; more of them than the longest panel (K/O worst case, so also
 * a raw `Db`) complete any half-received block, the first NUL where its closing CR was due makes it
 * invalid, the rest are noise before a command, and the CR ends whatever text command was cut.
 */
const RESYNC_PADDING = Buffer.concat([Buffer.alloc(MAX_KO_PAYLOAD_BYTES + 1, 0x00), Buffer.of(0x0d)]);

/** Spurious `OK` answers to `Rrt` are retried this often, this far apart (kiosk driver GetRibbonStatus). */
const RIBBON_RETRIES = 3;
const RIBBON_RETRY_MS = 100;

interface Command {
  name: EvolisCommandName;
  frame: Buffer;
  timeoutMs: number;
  /** For commands that answer a value: whether a reply is such a value (checked before error prefixes). */
  accepts?: (text: string) => boolean;
}

interface InFlight {
  command: Command;
  answer(reply: EvolisReply): void;
  fail(error: DeviceError): void;
}

/**
 * The Evolis family adapter: `CardPrinter` over the escape-command protocol of the Programming
 * Guide A5013, the kiosk flow of the public KC200B driver and the bitmaps of Evolis's own Windows
 * driver (docs/devices.md, "Printer: Evolis"). One command is on the wire at a time; each operation
 * holds the lock for all its commands, so a status poll never lands inside a print sequence.
 *
 * Track data, bitmaps and `Dm` parameters are never logged: logs carry command names only.
 */
export class EvolisPrinter implements CardPrinter {
  readonly capabilities: PrinterCapabilities;
  identity: PrinterIdentity | undefined;
  private readonly transport: Transport;
  private readonly link: PrinterLinkKind;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly timeouts: EvolisTimeouts;
  private readonly device: string;
  private readonly takePollMs: number;
  private readonly ribbonLowPanels: number;
  private readonly resyncQuietMs: number;
  /** A command was cut off by the link closing: the printer may be in the middle of it. */
  private cutMidCommand = false;
  private readonly mutex = new Mutex();
  private readonly reader: ReplyReader;
  private inFlight: InFlight | undefined;
  private commands = 0;
  private repliesDropped = 0;
  private unexpectedReplies = 0;
  private bytesWritten = 0;

  constructor(options: EvolisPrinterOptions) {
    this.transport = options.transport;
    this.link = options.link;
    this.clock = options.clock;
    this.device = options.device ?? "printer";
    this.log = options.logger.child({ device: this.device });
    this.timeouts = { ...DEFAULT_EVOLIS_TIMEOUTS, ...options.timeouts };
    this.takePollMs = options.takePollMs ?? 100;
    this.ribbonLowPanels = options.ribbonLowPanels ?? 20;
    this.resyncQuietMs = options.resyncQuietMs ?? 300;
    const feeders = options.feeders ?? ["1"];
    if (feeders.length > 1 && feeders.some((f) => f !== "1" && f !== "2")) {
      throw new RangeError('an Evolis with several feeders knows feeders "1" and "2" (Piem, Sk)');
    }
    this.capabilities = {
      family: "evolis",
      printArea: EVOLIS_PRINT_AREA,
      feeders: [...feeders],
      sides: ["front", "back"],
      magstripeEncoder: true,
      contactStation: true,
      capturedCardsGoTo: "reject-box",
    };
    this.reader = new ReplyReader({
      clock: options.clock,
      ...(options.replyIdleGapMs === undefined ? {} : { idleGapMs: options.replyIdleGapMs }),
      onReply: (text) => this.onReply(text),
    });
    this.transport.onData((chunk) => this.reader.push(chunk));
    this.transport.onClose(({ disconnected }) => this.onTransportClosed(disconnected));
  }

  get stats(): PrinterLinkStats {
    return {
      commands: this.commands,
      droppedFrames: this.reader.droppedFrames + this.repliesDropped,
      unexpectedReplies: this.unexpectedReplies,
      bytesWritten: this.bytesWritten,
    };
  }

  get isOpen(): boolean {
    return this.transport.isOpen;
  }

  get description(): string {
    return this.transport.description;
  }

  onDisconnect(listener: () => void): () => void {
    return this.transport.onClose(({ disconnected }) => {
      if (disconnected) listener();
    });
  }

  /**
   * Opens the link, applies the kiosk start-up settings and reads who the printer is. A setting the
   * printer refuses fails the open (`COMMAND_REJECTED`, naming the command): without them a print
   * would eject the card or a jam would block the printer, so such a printer is not fit to run.
   *
   * With `resync`, or when this process saw the link close in the middle of a command, the printer
   * is first brought back to a command boundary (RESYNC_PADDING) and whatever it answers to that is
   * thrown away: the agent killed during a `Dbc` leaves the printer reading the next agent's
   * commands as panel bytes otherwise (found by the crash harness, docs/crash-harness.md).
   */
  async open(options: OpenOptions = {}): Promise<void> {
    await this.transport.open();
    await this.mutex.run(async () => {
      if (options.resync || this.cutMidCommand) await this.resync();
      this.cutMidCommand = false;
      await this.applySettings();
      this.identity = await this.readIdentity();
    });
    this.log.info({ ...this.identity, link: this.transport.description }, "printer ready");
  }

  async close(): Promise<void> {
    await this.transport.close();
  }

  /**
   * `Si`. Behind a serial link the start-up settings go first: a printer that was switched off and
   * on keeps its serial line, so the agent would never notice that `Pem`, `Pneab` and `Pbc` were
   * lost (guide p.20: "Further a switch ON/OFF of the printer, the following parameter becomes
   * null"), and its next print would eject the card. USB and TCP links drop with the power, and
   * every reopen applies them.
   */
  insertCard(feeder?: string): Promise<void> {
    return this.exclusive(async () => {
      if (this.link === "serial") await this.applySettings();
      await this.selectFeeder(feeder);
      await this.expectOk("Si");
    });
  }

  moveToContactStation(): Promise<void> {
    return this.exclusive(() => this.expectOk("Sis"));
  }

  /**
   * `Pneab;A;0` (no ejection: the card stays in for the magstripe and the presentation), `Pr;k`,
   * `Ss`, then `Sr` + `Dbc` and/or `Sv` + `Dbc`, then `Se`, which prints. Panels are laid out and
   * K/O-compressed before the lock is taken: CPU work, not device time.
   */
  async printSides(sides: PrintSides): Promise<void> {
    const { front, back } = sides;
    if (!front && !back) throw new RangeError("printSides needs a front or a back");
    const frontFrame = front && encodeCompressedPanel(compressKO(panelFromImage(front)));
    const backFrame = back && encodeCompressedPanel(compressKO(panelFromImage(back)));
    const { printMs } = this.timeouts;
    await this.exclusive(async () => {
      await this.expectOk("Pneab", ["A", "0"]);
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
   * `Pmc`, `Dm;n;…` for each track, `Smw`, then each track read back: `Smr;n` answers the data, or
   * `OK` with the data left for `Rmb;n` (Evolis's sample code does the latter; the guide gives no
   * reply format): both are taken. A track that reads back different is `MAG_VERIFY`.
   */
  async encodeMagstripe(tracks: MagstripeTracks, coercivity: Coercivity): Promise<void> {
    const toWrite = tracksToWrite(tracks, { device: this.device, command: "Dm" });
    const { magMs } = this.timeouts;
    await this.exclusive(async () => {
      await this.expectOk("Pmc", [coercivity === "HICO" ? "h" : "l"]);
      for (const { n, data } of toWrite) await this.expectOk("Dm", [String(n), data]);
      await this.expectOk("Smw", [], magMs);
      for (const { n, data } of toWrite) {
        // `OK` is also a valid track 1 text; here it means "the data waits in Rmb".
        const isTrack = (text: string) => text !== "OK" && isTrackReadBack(n, text);
        let reply = await this.expectReply({
          name: "Smr",
          frame: encodeCommand("Smr", [String(n)]),
          timeoutMs: magMs,
          accepts: isTrack,
        });
        if (reply.kind === "ok") {
          reply = await this.expectReply({
            name: "Rmb",
            frame: encodeCommand("Rmb", [String(n)]),
            timeoutMs: magMs,
            accepts: isTrack,
          });
        }
        if (reply.kind !== "value" || reply.text !== data) {
          throw this.error("MAG_VERIFY", "Smr", `track ${n} reads back different from what was written`);
        }
      }
    });
  }

  /**
   * `Pneab;A;1` (ejection allowed) then `Se`: the card leaves through the mouth (`Pcem;I`) and stays
   * there (`Pbc;A;D`), as the kiosk driver's Eject does. `Rlr;p` then checks it is no longer inside:
   * a card that stayed in must never be taken for a card the cardholder took.
   */
  presentCard(): Promise<void> {
    return this.exclusive(async () => {
      await this.expectOk("Pneab", ["A", "1"]);
      await this.expectOk("Se");
      const inside = await this.readInside();
      if (inside !== "NONE") {
        throw this.error("CARD_IN_PATH", "Se", "the card is still inside after the eject to the mouth");
      }
    });
  }

  /**
   * Reads the mouth sensor (`Rse;b`) every `takePollMs` until it reads empty (taken: true) or
   * `timeoutMs` passes (false). The lock is held for one read at a time, so status reads and a
   * stopping agent get the line between polls.
   */
  async waitForCardTaken(timeoutMs: number): Promise<boolean> {
    const deadline = this.clock.now() + timeoutMs;
    for (;;) {
      const inMouth = await this.exclusive(() => this.readMouth());
      if (!inMouth) return true;
      const left = deadline - this.clock.now();
      if (left <= 0) return false;
      await delay(this.clock, Math.min(this.takePollMs, left));
    }
  }

  /**
   * The kiosk driver's Retract for a card in the mouth: `Sib` takes it back in, `Ser` drops it into
   * the reject box (Evolis kiosk printers have no separate capture bin). `NO_CARD` when the mouth
   * is already empty: the cardholder took it at the last moment.
   */
  captureCard(): Promise<void> {
    return this.exclusive(async () => {
      if (!(await this.readMouth())) throw this.error("NO_CARD", "Sib", "the mouth is empty");
      try {
        await this.expectOk("Sib");
      } catch (err) {
        // The kiosk driver reads the position after any error to Sib: taken meanwhile, or still there.
        if (
          err instanceof DeviceError &&
          err.code !== "DEVICE_DISCONNECTED" &&
          err.code !== "DEVICE_TIMEOUT"
        ) {
          const inside = await this.readInside();
          if (inside === "NONE" && !(await this.readMouth())) {
            throw this.error("NO_CARD", "Sib", "the card left the mouth before it was taken back");
          }
        }
        throw err;
      }
      await this.expectOk("Ser");
    });
  }

  rejectCard(): Promise<void> {
    return this.exclusive(() => this.expectOk("Ser"));
  }

  /** `Scp` (guide p.41): a cleaning cycle with the cleaning card the technician put in. */
  runCleaning(): Promise<void> {
    return this.exclusive(() => this.expectOk("Scp", [], this.timeouts.printMs));
  }

  /**
   * `Srs` (guide p.44, "resets the printer like when we restart it"); the settings are then applied
   * again, since a restart loses them (guide p.20).
   */
  resetPrinter(): Promise<void> {
    return this.exclusive(async () => {
      await this.expectOk("Srs", [], this.timeouts.printMs);
      await this.applySettings();
    });
  }

  /** `St` (guide p.45): the printer's own test card, from `feeder`, out through the mouth. */
  printTestCard(feeder?: string): Promise<void> {
    return this.exclusive(async () => {
      await this.selectFeeder(feeder);
      await this.expectOk("Pneab", ["A", "1"]);
      await this.expectOk("St", [], this.timeouts.printMs);
    });
  }

  /** The kiosk driver's Eject: `Pneab;A;1`, `Se`; the card goes out through the mouth. */
  ejectCard(): Promise<void> {
    return this.exclusive(async () => {
      await this.expectOk("Pneab", ["A", "1"]);
      await this.expectOk("Se");
    });
  }

  /**
   * Where the card is (`Rlr;p`, then the mouth `Rse;b`), the cover (`Rse;o`), the feeders (one:
   * `Rse;f`, `Rse;n`; two: `Sk;f`, `Sk;w`), the ribbon (`Rrt;count`, `Rrt;qty`), the reject box
   * (`Rlr;h`) and the cleaning counter (`Rlr;r`: `ERR NEED CLEANING` means a cleaning is due; the
   * printer refusing a print with `NEED CLEANING` is what makes it required). Reads a model may not
   * have (near-empty sensor, reject-box sensor, cleaning) are skipped when refused.
   */
  readStatus(): Promise<PrinterStatus> {
    return this.exclusive(async () => {
      const inside = await this.readInside();
      const cardPosition: CardPosition =
        inside !== "NONE" ? inside : (await this.readMouth()) ? "MOUTH" : "NONE";
      const stopReasons: DeviceFault[] = [];
      const warnings: PrinterWarning[] = [];
      const cover = await this.readVolts("o", { optional: true });
      if (cover !== undefined && cover < SENSOR_ACTIVE_VOLTS) stopReasons.push("COVER_OPEN");
      const feeders = await this.readFeeders();
      if (feeders.every((f) => f.empty)) stopReasons.push("FEEDER_EMPTY");
      if (feeders.some((f) => !f.empty && f.nearEmpty)) warnings.push("FEEDER_NEAR_EMPTY");
      const remaining = await this.readRibbon("count");
      if (remaining === undefined || remaining === 0) stopReasons.push("RIBBON_OUT");
      else if (remaining <= this.ribbonLowPanels) warnings.push("RIBBON_LOW");
      const capacity = remaining === undefined ? undefined : await this.readRibbon("qty", { optional: true });
      const boxFull = await this.readOptionalValue("Rlr", ["h"], parseBoxFullReply);
      if (boxFull) stopReasons.push("REJECT_BOX_FULL");
      const cleaning = await this.readOptionalValue("Rlr", ["r"], parseCleaningReply);
      if (cleaning) warnings.push("CLEANING_ADVISED");
      return {
        cardPosition,
        stopReasons,
        warnings,
        feeders,
        cleaning: cleaning ? "advised" : "none",
        ...(remaining === undefined
          ? {}
          : { ribbon: { remaining, ...(capacity === undefined ? {} : { capacity }) } }),
      };
    });
  }

  /** `Rco;c` (inserted cards), `Rco;p` (printed panels): the printer's own counters (guide p.31). */
  readCounters(): Promise<PrinterCounters> {
    return this.exclusive(async () => {
      const cardsInserted = await this.readOptionalValue("Rco", ["c"], parseCount);
      const panelsPrinted = await this.readOptionalValue("Rco", ["p"], parseCount);
      const cleanings = await this.readOptionalValue("Rco", ["n"], parseCount);
      return {
        ...(cardsInserted === undefined ? {} : { cardsInserted }),
        ...(panelsPrinted === undefined ? {} : { panelsPrinted }),
        ...(cleanings === undefined ? {} : { cleanings }),
      };
    });
  }

  /**
   * One operation at a time. A command that timed out may have left the printer inside a frame (a
   * `Dbc` whose bytes did not all arrive keeps it counting panel bytes: found by the crash harness,
   * docs/crash-harness.md), so the next operation first brings it back to a command boundary.
   */
  private exclusive<T>(operation: () => Promise<T>): Promise<T> {
    return this.mutex.run(async () => {
      if (this.cutMidCommand && this.transport.isOpen) {
        await this.resync();
        this.cutMidCommand = false;
      }
      return operation();
    });
  }

  private async resync(): Promise<void> {
    this.log.warn(
      { bytes: RESYNC_PADDING.length },
      "the printer may be inside a cut command (a session cut off, a timeout); resynchronising it",
    );
    await this.transport.write(RESYNC_PADDING).catch((err: unknown) => {
      throw new DeviceError("DEVICE_DISCONNECTED", `resync: cannot write to ${this.transport.description}`, {
        device: this.device,
        cause: err,
      });
    });
    this.bytesWritten += RESYNC_PADDING.length;
    // Replies to the cut command arrive now, with nothing in flight: counted, dropped.
    await delay(this.clock, this.resyncQuietMs);
    this.reader.reset();
  }

  /** `Piem;<n>;0` (guide p.21) when the printer feeds from more than one feeder. */
  private async selectFeeder(feeder: string | undefined): Promise<void> {
    const feeders = this.capabilities.feeders;
    const id = feeder ?? feeders[0]!;
    if (!feeders.includes(id))
      throw new RangeError(`feeder ${id} is not one of this printer's (${feeders.join(", ")})`);
    if (feeders.length > 1) await this.expectOk("Piem", [id, "0"]);
  }

  /**
   * One feeder: `Rse;f` (below 1 V empty) and the near-empty sensor `Rse;n` (kiosk driver). Two: the
   * feeder module's `Sk;f` and `Sk;w` (guide p.64: 0 none, 1 feeder 1, 2 feeder 2, 3 both).
   */
  private async readFeeders(): Promise<FeederStatus[]> {
    const feeders = this.capabilities.feeders;
    if (feeders.length === 1) {
      const volts = await this.readVolts("f");
      const empty = volts !== undefined && volts < SENSOR_ACTIVE_VOLTS;
      const near = empty ? undefined : await this.readVolts("n", { optional: true });
      return [{ id: feeders[0]!, empty, nearEmpty: near !== undefined && near >= SENSOR_ACTIVE_VOLTS }];
    }
    const bits = (text: string) => (/^[0-3]$/.test(text.trim()) ? Number(text.trim()) : undefined);
    const empty = bits(await this.expectValue("Sk", ["f"], (t) => bits(t) !== undefined))!;
    const warned = (await this.readOptionalValue("Sk", ["w"], bits)) ?? 0;
    return feeders.map((id) => {
      const bit = id === "1" ? 1 : 2;
      return { id, empty: (empty & bit) !== 0, nearEmpty: (warned & bit) !== 0 };
    });
  }

  private async applySettings(): Promise<void> {
    for (const [name, params] of START_UP_SETTINGS) await this.expectOk(name, params);
  }

  /** `Rtp`, `Rsn`, `Rfv` (guide p.32–38): free text, skipped when a model does not know one. */
  private async readIdentity(): Promise<PrinterIdentity> {
    const any = (text: string) => text.length > 0;
    const model = await this.readOptionalValue("Rtp", [], (t) => (any(t) ? t : undefined));
    const serial = await this.readOptionalValue("Rsn", [], (t) => (any(t) ? t : undefined));
    const firmware = await this.readOptionalValue("Rfv", [], (t) => (any(t) ? t : undefined));
    return {
      ...(model ? { model } : {}),
      ...(serial ? { serial } : {}),
      ...(firmware ? { firmware } : {}),
    };
  }

  /** `Rlr;p`: NONE when the printer holds no card (a card in the mouth is not inside). */
  private async readInside(): Promise<Exclude<CardPosition, "MOUTH">> {
    const text = await this.expectValue("Rlr", ["p"], (t) => parseInsidePosition(t) !== undefined);
    return parseInsidePosition(text)!;
  }

  /** `Rse;b`: true while a card sits in the mouth. */
  private async readMouth(): Promise<boolean> {
    const volts = await this.readVolts("b");
    return volts !== undefined && volts >= SENSOR_ACTIVE_VOLTS;
  }

  private async readVolts(
    sensor: "b" | "f" | "n" | "o",
    options: { optional?: boolean } = {},
  ): Promise<number | undefined> {
    if (options.optional) return this.readOptionalValue("Rse", [sensor], parseVolts);
    return parseVolts(await this.expectValue("Rse", [sensor], (t) => parseVolts(t) !== undefined));
  }

  /**
   * `Rrt;count` / `Rrt;qty`. Both can answer a spurious `OK` (kiosk driver: "may return an invalid
   * result OK ... send the command again"): retried 3 times, 100 ms apart. `ERR RIB DETECTION` (no
   * ribbon) reads as undefined.
   */
  private async readRibbon(
    what: "count" | "qty",
    options: { optional?: boolean } = {},
  ): Promise<number | undefined> {
    for (let attempt = 1; ; attempt++) {
      let reply: EvolisReply;
      try {
        reply = await this.expectReply({
          name: "Rrt",
          frame: encodeCommand("Rrt", [what]),
          timeoutMs: this.timeouts.defaultMs,
          accepts: (t) => parseCount(t) !== undefined,
        });
      } catch (err) {
        if (
          err instanceof DeviceError &&
          (err.code === "RIBBON_OUT" || (options.optional && isRefusal(err)))
        ) {
          return undefined;
        }
        throw err;
      }
      if (reply.kind === "value") return parseCount(reply.text);
      if (attempt >= RIBBON_RETRIES) {
        if (options.optional) return undefined;
        throw this.error("PROTOCOL_ERROR", "Rrt", `answered OK instead of a number ${attempt} times`);
      }
      await delay(this.clock, RIBBON_RETRY_MS);
    }
  }

  /** A read a model may lack: a refusal (`ERROR CDE`, …) or an unparsable answer reads as undefined. */
  private async readOptionalValue<T>(
    name: EvolisCommandName,
    params: string[],
    parse: (text: string) => T | undefined,
  ): Promise<T | undefined> {
    try {
      const reply = await this.expectReply({
        name,
        frame: encodeCommand(name, params),
        timeoutMs: this.timeouts.defaultMs,
        accepts: (t) => parse(t) !== undefined,
      });
      return reply.kind === "value" ? parse(reply.text) : parse("OK");
    } catch (err) {
      if (err instanceof DeviceError && isRefusal(err)) return undefined;
      throw err;
    }
  }

  private async expectOk(
    name: EvolisCommandName,
    params: readonly string[] = [],
    timeoutMs = this.timeouts.defaultMs,
  ): Promise<void> {
    const reply = await this.expectReply({ name, frame: encodeCommand(name, params), timeoutMs });
    if (reply.kind !== "ok")
      throw this.error("PROTOCOL_ERROR", name, "answered a value where OK was expected");
  }

  private async expectValue(
    name: EvolisCommandName,
    params: string[],
    accepts: (text: string) => boolean,
    timeoutMs = this.timeouts.defaultMs,
  ): Promise<string> {
    const reply = await this.expectReply({ name, frame: encodeCommand(name, params), timeoutMs, accepts });
    if (reply.kind === "value") return reply.text;
    // `OK` to a command whose values exclude it.
    throw this.error("PROTOCOL_ERROR", name, "answered OK where a value was expected");
  }

  /** Sends a command; an error reply becomes a DeviceError with its fault. */
  private async expectReply(command: Command): Promise<EvolisReply> {
    const reply = await this.send(command);
    if (reply.kind === "error") {
      throw this.error(reply.fault, command.name, `printer answered ${reply.text}`);
    }
    return reply;
  }

  /** Resolves with the command's reply; rejects only on timeout or disconnection. */
  private send(command: Command): Promise<EvolisReply> {
    const { name, frame, timeoutMs } = command;
    return new Promise<EvolisReply>((resolve, reject) => {
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
        this.cutMidCommand = true;
        entry.fail(
          garbled
            ? this.error("PROTOCOL_ERROR", name, `only unreadable bytes within ${timeoutMs} ms`)
            : this.error("DEVICE_TIMEOUT", name, `no reply within ${timeoutMs} ms`),
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

  /**
   * A reply the waiting command can take: a value it accepts (checked first: `Rlr;p` answers
   * `ERR CARD` and `Rlr;r` answers `ERR NEED CLEANING` as readings, not failures), `OK`, or any
   * error. Anything else is dropped and counted while the command keeps waiting.
   */
  private onReply(text: string): void {
    const entry = this.inFlight;
    if (!entry) {
      this.unexpectedReplies++;
      // Length only: a late `Smr` answer is track data.
      this.log.warn({ length: text.length }, "printer reply with no command in flight; ignored");
      return;
    }
    const { command } = entry;
    if (command.accepts?.(text)) {
      entry.answer({ kind: "value", text });
      return;
    }
    const reply = classifyReply(text);
    if (reply.kind !== "value") {
      entry.answer(reply);
      return;
    }
    this.repliesDropped++;
    this.log.warn({ command: command.name, length: text.length }, "reply does not fit the command; dropped");
  }

  private onTransportClosed(disconnected: boolean): void {
    this.reader.reset();
    const entry = this.inFlight;
    if (disconnected) this.log.warn("printer link lost");
    if (!entry) return;
    this.cutMidCommand = true;
    entry.fail(
      this.error("DEVICE_DISCONNECTED", entry.command.name, "link closed while waiting for the reply"),
    );
  }

  private error(code: DeviceFault, command: EvolisCommandName, message: string): DeviceError {
    return new DeviceError(code, `${command}: ${message}`, { device: this.device, command });
  }
}

/** The printer understood the line and said no: the read does not exist on this model. */
function isRefusal(err: DeviceError): boolean {
  return err.code === "COMMAND_REJECTED" || err.code === "PRINTER_ERROR";
}

/** What a read-back may look like: track characters (a misread may hold sentinels) within length. */
function isTrackReadBack(n: TrackNumber, text: string): boolean {
  if (text.length === 0 || text.length > TRACK_SPECS[n].maxData + 2) return false;
  for (let i = 0; i < text.length; i++) if (!isTrackCharCode(n, text.charCodeAt(i))) return false;
  return true;
}
