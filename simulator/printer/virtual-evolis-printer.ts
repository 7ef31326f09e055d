import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import { maskPan } from "../../agent/log/mask.js";
import { type Clock, systemClock, type TimerHandle } from "../../agent/util/clock.js";
import { isEncodableTrack } from "../../drivers/magstripe/iso7813.js";
import { type CardImage, inkCount } from "../../drivers/printer/card-image.js";
import { CR, formatVolts, LF, NUL } from "../../drivers/printer/evolis/codec.js";
import { CommandParser, type ParsedCommand } from "../../drivers/printer/evolis/command-parser.js";
import { decompressKO } from "../../drivers/printer/evolis/ko-compression.js";
import { imageFromPanel, PANEL_BYTES } from "../../drivers/printer/evolis/panel.js";
import { mulberry32 } from "../common/random.js";
import type { VirtualSerialDevice, VirtualSerialLink } from "../serial/virtual-binding.js";
import {
  type ArmedFault,
  armFault,
  type FaultEffect,
  type FaultOptions,
  fireFaults,
  type PrinterFaultName,
} from "./faults.js";

export type CardOutcome = "taken" | "captured" | "rejected" | "ejected" | "in-printer";

/** One card the simulated printer took from its feeder. Tracks are kept as hashes, never in clear. */
export interface CardRecord {
  serial: number;
  /** Wall time (ms, the clock's wallNow()) of the command that fed it: a timestamp of the record. */
  insertedAt: number;
  frontInkDots: number;
  backInkDots: number;
  /** Each printed side as the cardholder sees it, decoded from the panel the printer received. */
  front?: CardImage;
  back?: CardImage;
  tracks: Array<{ n: number; sha256: string; maskedPan?: string }>;
  /** The feeder it came from. */
  feeder: string;
  /** The printer's own test card (`St`), not a job's. */
  testCard?: boolean;
  outcome: CardOutcome;
  /** Wall time (ms) it ended. */
  endedAt?: number;
}

export interface VirtualPrinterEvents {
  "card-inserted": [card: CardRecord];
  "card-presented": [card: CardRecord];
  "card-taken": [card: CardRecord];
  "card-captured": [card: CardRecord];
  "card-rejected": [card: CardRecord];
  "card-ejected": [card: CardRecord];
}

export interface PrinterLatency {
  /** Every command not listed below. */
  commandMs: number;
  /** The `Se` that prints. */
  printMs: number;
  /** `Smw`, `Smr` and `Rmb`. */
  magMs: number;
}

/** How replies end on the wire (docs/devices.md, "Replies"). */
export type ReplyTerminator = "NUL" | "CR" | "CRLF" | "none";

export interface VirtualPrinterOptions {
  /** Timers for latency, card taking, the bezel delay and replug. Default systemClock. */
  clock?: Clock;
  /** Cards in the (single) feeder "1". Default 100. Ignored when `feeders` is given. */
  feederCards?: number;
  /**
   * Several feeders (an Evolis with a feeder module: `Piem` picks one, `Sk` reads them), id → cards.
   * Ids "1" and "2".
   */
  feeders?: Record<string, number>;
  /** `Rse;n` reads "near empty" at or below this many cards. Default 10. */
  feederNearEmptyAt?: number;
  /** Panels the ribbon can still print. Default 1000. */
  ribbonPanels?: number;
  /** `Rrt;qty`. Default: `ribbonPanels`. */
  ribbonCapacity?: number;
  /** Cards the reject box holds before `Rlr;h` reads CARD and `Ser` answers HOPPER FULL. Default 50. */
  rejectBoxCapacity?: number;
  /** After this many cards since the last cleaning `Rlr;r` reads `ERR NEED CLEANING`. Default: never. */
  cleaningAdvisedAfterCards?: number;
  /** After this many cards since the last cleaning prints are refused with `ERR NEED CLEANING`. Default: never. */
  cleaningRequiredAfterCards?: number;
  /** The simulated cardholder takes a presented card after this long; null: nobody ever does. Default 200. */
  takeAfterMs?: number | null;
  /** Default 0 everywhere: answer on the next turn of the event loop. */
  latency?: Partial<PrinterLatency>;
  /** Default NUL (dpavlin/Printer-EVOLIS reads a reply up to a NUL). */
  replyTerminator?: ReplyTerminator;
  /**
   * How `Smr;n` gives the track back: `rmb` answers OK and keeps the data for `Rmb;n` (Evolis's
   * sample code), `direct` answers the data itself. Default `rmb`.
   */
  magReadBack?: "rmb" | "direct";
  /** Seeds the line-noise generator so runs repeat. Default 1. */
  seed?: number;
  /**
   * Finished cards kept in `record` (with both sides), and ten times as many entries in
   * `commandLog`; older ones are dropped as cards end, so a simulator left running for days stays
   * small. Default 1000.
   */
  keepRecords?: number;
}

/** Where the card is. `MOUTH`: ejected through the card exit, half out of the kiosk (`Rse;b` high). */
export type SimulatedPosition = "NONE" | "INSIDE" | "CONTACT" | "MOUTH";

/**
 * The settings the kiosk start-up commands change, with the values they have after power-on. The
 * guide (p.20) says `Pem` falls back to "printer manages its errors" at power-off; for the others
 * the record gives no power-on value, and these are the behaviours of a printer nobody configured:
 * print jobs eject the card (guide p.42, `Se`: "The card is ejected"), through the exit, and an
 * untaken card goes to the reject box after 30 s (the kiosk driver's commented `Pbc;D;30`, `Pbc;A;R`).
 */
export interface EvolisSettings {
  /** `Pem;p1`: 0 the printer manages its errors, 2 the host does. */
  errorMode: number;
  /** `Pcim`: where cards come from. */
  insertFrom: string;
  /** `Pcem`: I / M the card exit (mouth), N the reject box. */
  ejectThrough: string;
  /** `Psmgr`. */
  smgr: string;
  /** `Pneab;D` true / `Pneab;E` false: whether the `Se` that prints also ejects. */
  ejectAfterPrint: boolean;
  /** `Pneab;A;1` true / `Pneab;A;0` false: whether any ejection may happen. */
  ejectAllowed: boolean;
  /** `Pcrm`. */
  rejectOutput: string;
  /** `Pbc;A;x`: what the printer does with an untaken card after the delay: D nothing, R reject, N re-insert. */
  bezelAction: "D" | "R" | "N";
  /** `Pbc;D;s`. */
  bezelDelaySec: number;
}

export const POWER_ON_SETTINGS: Readonly<EvolisSettings> = {
  errorMode: 0,
  insertFrom: "F",
  ejectThrough: "M",
  smgr: "0",
  ejectAfterPrint: true,
  ejectAllowed: true,
  rejectOutput: "D",
  bezelAction: "R",
  bezelDelaySec: 30,
};

export interface VirtualPrinterState {
  position: SimulatedPosition;
  /** Cards in feeder "1" (the only one of a single-feeder printer). */
  feederCards: number;
  feeders: Record<string, number>;
  ribbonPanels: number;
  rejectBox: { count: number; capacity: number };
  coverOpen: boolean;
  settings: EvolisSettings;
  counters: { cardsInserted: number; panelsPrinted: number };
  cardsSinceCleaning: number;
  /** Serial of the card inside or in the mouth. */
  currentSerial?: number;
}

type LatencyKind = keyof PrinterLatency;

interface Outcome {
  /** Absent: nothing goes back. */
  reply?: string;
  latency: LatencyKind;
}

/** Sensor readings, in the form the printer answers `Rse` (kiosk driver comments). */
const VOLTS = { high: 5, mouthCard: 4.95, mouthEmpty: 0.21, nearEmpty: 3.92, notNearEmpty: 0.17, low: 0 };

/**
 * A software Evolis kiosk printer (KC200B-like: feeder, print head, magnetic encoder, contact
 * station, mouth with a cardholder, reject box) speaking the escape commands of
 * drivers/printer/evolis/commands.ts over a virtual link: a serialport binding, a pseudo-terminal
 * standing in for /dev/usb/lp0, or TCP. It accepts only those commands (anything else is
 * `ERROR CDE`), keeps the settings the kiosk driver sends and behaves by them, answers sensors in
 * volts, and decodes the panels it receives (K/O `Dbc` or raw `Db`). Commands are handled one at a
 * time in arrival order; state changes when a command arrives, the reply leaves after the
 * configured latency.
 */
export class VirtualEvolisPrinter extends EventEmitter<VirtualPrinterEvents> implements VirtualSerialDevice {
  private readonly clock: Clock;
  private latency: PrinterLatency;
  private readonly takeAfterMs: number | null;
  private readonly terminator: Buffer;
  private readonly magReadBack: "rmb" | "direct";
  private readonly parser = new CommandParser();
  private readonly random: () => number;
  private link: VirtualSerialLink | undefined;

  private settings: EvolisSettings = { ...POWER_ON_SETTINGS };
  private position: SimulatedPosition = "NONE";
  private readonly feeders = new Map<string, number>();
  /** `Piem` p1: 0 automatic, 1 / 2 that feeder, 3 alternately. */
  private insertFrom = "0";
  private lastFed = "1";
  private readonly feederNearEmptyAt: number;
  private ribbonPanels: number;
  private readonly ribbonCapacity: number;
  private readonly rejectBox: { count: number; capacity: number };
  private readonly cleaningAdvisedAfterCards: number | undefined;
  private readonly cleaningRequiredAfterCards: number | undefined;
  private cleanings = 0;
  private cardsSinceCleaning = 0;
  private readonly counters = { cardsInserted: 0, panelsPrinted: 0 };
  private current: CardRecord | undefined;
  /** The current card was in the mouth at some point: a later trip to the reject box is a capture. */
  private presented = false;
  private readonly records: CardRecord[] = [];
  private readonly keepRecords: number;
  private nextSerial = 1;
  private takeTimer: TimerHandle | undefined;
  private bezelTimer: TimerHandle | undefined;
  private sequence: { side: "front" | "back"; front?: Buffer; back?: Buffer } | undefined;
  private readonly loadedTracks = new Map<number, string>();
  private readonly writtenTracks = new Map<number, string>();
  private readonly readBuffer = new Map<number, string>();
  private faults: ArmedFault[] = [];

  private readonly queue: ParsedCommand[] = [];
  private busy = false;
  /**
   * The commands received, in order, as `name;params` (`Pneab;A;1`, `Rse;b`), except that commands
   * carrying card data or bitmaps (`Dm`, `Db`, `Dbc`) are logged by name only, and the `Se` that
   * sends the card to the mouth is logged `Se>mouth` (the one that prints stays `Se`).
   */
  readonly commandLog: string[] = [];

  constructor(options: VirtualPrinterOptions = {}) {
    super();
    this.clock = options.clock ?? systemClock;
    this.latency = { commandMs: 0, printMs: 0, magMs: 0, ...options.latency };
    this.takeAfterMs = options.takeAfterMs === undefined ? 200 : options.takeAfterMs;
    this.terminator = TERMINATORS[options.replyTerminator ?? "NUL"];
    this.magReadBack = options.magReadBack ?? "rmb";
    for (const [id, cards] of Object.entries(options.feeders ?? { "1": options.feederCards ?? 100 })) {
      this.feeders.set(id, cards);
    }
    this.feederNearEmptyAt = options.feederNearEmptyAt ?? 10;
    this.ribbonPanels = options.ribbonPanels ?? 1000;
    this.ribbonCapacity = options.ribbonCapacity ?? this.ribbonPanels;
    this.rejectBox = { count: 0, capacity: options.rejectBoxCapacity ?? 50 };
    this.cleaningAdvisedAfterCards = options.cleaningAdvisedAfterCards;
    this.cleaningRequiredAfterCards = options.cleaningRequiredAfterCards;
    this.random = mulberry32(options.seed ?? 1);
    this.keepRecords = Math.max(0, options.keepRecords ?? 1000);
  }

  attach(link: VirtualSerialLink): void {
    this.link = link;
  }

  receive(bytes: Buffer): void {
    this.queue.push(...this.parser.push(bytes));
    this.pump();
  }

  injectFault(name: PrinterFaultName, options: FaultOptions = {}): void {
    this.faults.push(armFault(name, options));
  }

  clearFaults(): void {
    this.faults = [];
  }

  /** Changes reply latency from the next command on. */
  setLatency(latency: Partial<PrinterLatency>): void {
    this.latency = { ...this.latency, ...latency };
  }

  /** The cardholder takes the card in the mouth now. False if there is none. */
  takeCardNow(): boolean {
    if (this.position !== "MOUTH") return false;
    this.endCard("taken", "card-taken");
    return true;
  }

  /** Switched off and on: every setting back to its power-on value (the card stays where it is). */
  powerCycle(): void {
    this.settings = { ...POWER_ON_SETTINGS };
    this.sequence = undefined;
    this.loadedTracks.clear();
  }

  loadFeeder(cards: number, feeder = "1"): void {
    this.feeders.set(feeder, (this.feeders.get(feeder) ?? 0) + cards);
  }

  emptyRejectBox(): number {
    const n = this.rejectBox.count;
    this.rejectBox.count = 0;
    return n;
  }

  /** A technician ran a cleaning card through. */
  clean(): void {
    this.cardsSinceCleaning = 0;
    this.cleanings++;
  }

  get state(): VirtualPrinterState {
    return {
      position: this.position,
      feederCards: this.feeders.get("1") ?? 0,
      feeders: Object.fromEntries(this.feeders),
      ribbonPanels: this.ribbonPanels,
      rejectBox: { ...this.rejectBox },
      coverOpen: this.persistent("cover-open"),
      settings: { ...this.settings },
      counters: { ...this.counters },
      cardsSinceCleaning: this.cardsSinceCleaning,
      ...(this.current ? { currentSerial: this.current.serial } : {}),
    };
  }

  /** Every card fed so far (within `keepRecords`), oldest first: the printer's production record. */
  get record(): readonly CardRecord[] {
    return [...this.records];
  }

  /** The records without the card images, for a JSON file. */
  cardsForRecord(): Array<Omit<CardRecord, "front" | "back">> {
    return this.records.map(({ front: _front, back: _back, ...rest }) => ({
      ...rest,
      tracks: [...rest.tracks],
    }));
  }

  /** Bytes and frames the device-side parser threw away (noise or padding on the line from the host). */
  get parserStats(): { droppedBytes: number; droppedFrames: number } {
    return { droppedBytes: this.parser.droppedBytes, droppedFrames: this.parser.droppedFrames };
  }

  private pump(): void {
    if (this.busy) return;
    const command = this.queue.shift();
    if (!command) return;
    this.busy = true;
    const { reply, latencyMs, noise } = this.handle(command);
    const finish = (): void => {
      if (reply !== undefined) {
        if (noise) this.send(noise.bytes);
        if (!noise || noise.thenReply)
          this.send(Buffer.concat([Buffer.from(reply, "latin1"), this.terminator]));
      }
      this.busy = false;
      this.pump();
    };
    if (latencyMs > 0) this.clock.setTimeout(finish, latencyMs);
    else setImmediate(finish);
  }

  /** Applies the faults that fire at this step, then the command itself. */
  private handle(command: ParsedCommand): {
    reply?: string;
    latencyMs: number;
    noise?: { bytes: Buffer; thenReply: boolean };
  } {
    const step = this.stepOf(command);
    this.commandLog.push(logEntry(command, step));
    const fired = fireFaults(this.faults, step);
    const firedOf = (kind: FaultEffect["kind"]) => fired.find((f) => f.effect.kind === kind);

    const unplug = firedOf("unplug");
    if (unplug) {
      this.pullCable(unplug.options.replugAfterMs ?? 1000);
      return { latencyMs: 0 };
    }
    if (firedOf("swallow")) return { latencyMs: 0 };
    if (firedOf("power-cycle")) this.powerCycle();
    const outcome =
      this.refusal(fired, step) ??
      this.execute(command, step, {
        corruptReadBack: firedOf("corrupt-read-back") !== undefined,
        cardNotTaken: firedOf("card-not-taken") !== undefined,
      });
    const slow = firedOf("slow");
    const factor = slow ? (slow.options.factor ?? 10) : 1;
    const noise = firedOf("noise");
    return {
      ...(outcome.reply === undefined ? {} : { reply: outcome.reply }),
      latencyMs: this.latency[outcome.latency] * factor,
      ...(noise ? { noise: { bytes: this.lineNoise(), thenReply: noise.options.thenReply === true } } : {}),
    };
  }

  /** `print` and `present` name the two things `Se` can do; every other step is the command name. */
  private stepOf(command: ParsedCommand): string {
    if (command.kind !== "command" || command.name !== "Se") return command.name;
    if (this.sequence && (this.sequence.front || this.sequence.back)) return "print";
    const inside = this.position === "INSIDE" || this.position === "CONTACT";
    return this.settings.ejectAllowed && inside ? "present" : "Se";
  }

  private refusal(fired: ArmedFault[], step: string): Outcome | undefined {
    for (const { name, effect, options } of fired) {
      // One feeder empty: the feeder sensors say so, and only an insert from that feeder is refused.
      if (name === "feeder-empty" && options.feeder !== undefined) continue;
      if (effect.kind === "jam") return this.jam(effect.reply);
      if (effect.kind === "refuse") {
        // An error ends a print sequence: the loaded panels are dropped.
        if (step === "print") this.sequence = undefined;
        return { reply: effect.reply, latency: latencyKindOf(step) };
      }
    }
    return undefined;
  }

  private execute(
    command: ParsedCommand,
    step: string,
    flags: { corruptReadBack: boolean; cardNotTaken: boolean },
  ): Outcome {
    const ok = (latency: LatencyKind = "commandMs"): Outcome => ({ reply: "OK", latency });
    const answer = (reply: string, latency: LatencyKind = "commandMs"): Outcome => ({ reply, latency });
    if (command.kind === "unknown") return answer("ERROR CDE");
    if (command.kind === "malformed") return answer("ERROR PARAMETRES");
    const { params } = command;
    const p = (i: number) => params[i] ?? "";
    const bad = answer("ERROR PARAMETRES");
    const hasCardInside = this.position === "INSIDE" || this.position === "CONTACT";

    switch (command.name) {
      // Settings (the kiosk start-up list and the per-card Pneab).
      case "Pem": {
        const mode = Number(p(0));
        if (!Number.isInteger(mode) || mode < 0 || mode > 255 || params.length > 2) return bad;
        this.settings.errorMode = mode;
        return ok();
      }
      case "Pcim":
        if (!["F", "M", "B", "I"].includes(p(0))) return bad;
        this.settings.insertFrom = p(0);
        return ok();
      case "Pcem":
        if (!["I", "M", "N", "k"].includes(p(0))) return bad;
        this.settings.ejectThrough = p(0);
        return ok();
      case "Psmgr":
        if (!/^\d$/.test(p(0))) return bad;
        this.settings.smgr = p(0);
        return ok();
      case "Pneab":
        if (p(0) === "E" || p(0) === "D") {
          this.settings.ejectAfterPrint = p(0) === "D";
          return ok();
        }
        if (p(0) === "A" && (p(1) === "0" || p(1) === "1")) {
          this.settings.ejectAllowed = p(1) === "1";
          return ok();
        }
        return bad;
      case "Pcrm":
        if (p(0) !== "D") return bad;
        this.settings.rejectOutput = p(0);
        return ok();
      case "Pbc":
        if (p(0) === "A" && (p(1) === "D" || p(1) === "R" || p(1) === "N")) {
          this.settings.bezelAction = p(1) as EvolisSettings["bezelAction"];
          return ok();
        }
        if (p(0) === "D" && /^\d{1,4}$/.test(p(1))) {
          this.settings.bezelDelaySec = Number(p(1));
          return ok();
        }
        return bad;
      // Settings seen in the Windows driver's captures: accepted, no effect on a black-only kiosk.
      case "Pr":
      case "Pmi":
      case "Pc":
      case "Pdt":
      case "Mr":
      case "Ppws":
        return params.length > 0 ? ok() : bad;
      case "Piem":
        // Guide p.21: p1 0 automatic, 1 / 2 that feeder, 3 alternately; p2 the output (not modelled).
        if (!/^[0-3]$/.test(p(0)) || (p(0) === "2" && !this.feeders.has("2"))) return bad;
        this.insertFrom = p(0);
        return ok();
      case "Sk":
        // The feeder module of printers that have one (guide p.64).
        if (this.feeders.size < 2) return answer("OPT NOT AVAILABLE");
        if (p(0) === "f") return answer(this.feederBits((id) => this.feederEmpty(id)));
        if (p(0) === "w") {
          return answer(
            this.feederBits(
              (id) => !this.feederEmpty(id) && (this.feeders.get(id) ?? 0) <= this.feederNearEmptyAt,
            ),
          );
        }
        if (p(0) === "s") return ok();
        return bad;
      case "Scp":
        // A cleaning card goes through; a card in the path is in the way.
        if (this.position !== "NONE") return answer("ERR CARD");
        this.cardsSinceCleaning = 0;
        this.cleanings++;
        return ok("printMs");
      case "Srs":
        this.powerCycle();
        return ok("printMs");
      case "St":
        return this.testCard();
      case "Rtp":
        return answer("Evolis KC200B (simulated)");
      case "Rsn":
        return answer("SIM0000001");
      case "Rfv":
        return answer("SIM-1.0");
      // Card moves.
      case "Si":
        if (this.position !== "NONE") return answer("ERR CARD");
        return this.feed("INSIDE");
      case "Sis":
        if (this.position === "MOUTH") return answer("ERR CARD");
        if (this.position === "NONE") {
          // Guide p.59: Sis inserts a card and moves it to the contact station.
          const fed = this.feed("CONTACT");
          if (fed.reply !== "OK") return fed;
        }
        this.position = "CONTACT";
        return ok();
      case "Sib":
        // The kiosk driver's InDraftCard: takes a card in the mouth back in. With nothing at the
        // mouth the printer waits for a card that never comes (guide p.42: "Inserts a card from
        // the back"): its own mechanical timeout.
        if (this.position !== "MOUTH") return answer("ERROR TIME OUT");
        this.cancelMouthTimers();
        this.position = "INSIDE";
        return ok();
      case "Ser":
        if (this.position === "NONE") return answer("NO CARD");
        if (this.rejectBox.count >= this.rejectBox.capacity) return answer("HOPPER FULL");
        this.toRejectBox();
        return ok();
      case "Ss":
        this.sequence = { side: "front" };
        return ok();
      case "Sr":
      case "Sv":
        if (!this.sequence) return answer("ERROR CDE");
        this.sequence.side = command.name === "Sr" ? "front" : "back";
        return ok();
      case "Db":
      case "Dbc":
        return this.loadPanel(command.name, params, command.binary);
      case "Se":
        return step === "print" ? this.print(flags.cardNotTaken) : this.endSequence(flags.cardNotTaken);
      // Magnetic encoding.
      case "Pmc":
        return p(0) === "h" || p(0) === "l" ? ok() : bad;
      case "Dm": {
        const n = Number(p(0));
        const data = params[1];
        if (!(n === 1 || n === 2 || n === 3) || data === undefined) return bad;
        if (!isEncodableTrack(n, data)) return answer("ERROR MAGN DATA");
        this.loadedTracks.set(n, data);
        return ok();
      }
      case "Smw":
        return this.writeTracks();
      case "Smr": {
        if (!hasCardInside) return answer("NO CARD", "magMs");
        const n = Number(p(0));
        const data = this.writtenTracks.get(n);
        if (data === undefined) return answer("ERROR MAGN CHECKSUM", "magMs");
        const read = flags.corruptReadBack ? corrupt(data) : data;
        if (this.magReadBack === "direct") return answer(read, "magMs");
        this.readBuffer.set(n, read);
        return ok("magMs");
      }
      case "Rmb": {
        const data = this.readBuffer.get(Number(p(0)));
        return data === undefined ? answer("ERROR MAGN CHECKSUM", "magMs") : answer(data, "magMs");
      }
      // Status.
      case "Rlr":
        switch (p(0)) {
          case "p":
            return answer(
              this.position === "INSIDE" ? "CARD" : this.position === "CONTACT" ? "SMART CARD" : "OK",
            );
          case "r":
            return answer(this.cleaningAdvised() ? "ERR NEED CLEANING" : "OK");
          case "h":
            return answer(this.rejectBox.count >= this.rejectBox.capacity ? "CARD" : "NO CARD");
          default:
            return bad;
        }
      case "Rse":
        return this.sensor(p(0));
      case "Rrt":
        if (this.persistent("ribbon-out")) return answer("ERR RIB DETECTION");
        if (p(0) === "count") return answer(String(this.ribbonPanels));
        if (p(0) === "qty") return answer(String(this.ribbonCapacity));
        return bad;
      case "Rco":
        if (p(0) === "c") return answer(String(this.counters.cardsInserted));
        if (p(0) === "p") return answer(String(this.counters.panelsPrinted));
        if (p(0) === "n") return answer(String(this.cleanings));
        if (["a", "m"].includes(p(0))) return answer("0");
        return bad;
    }
  }

  /** `Rse;x` in volts (kiosk driver: `5,00 Volts` feeder full, `0,2x`/`4,9x Volts` mouth). */
  private sensor(which: string): Outcome {
    const volts = (v: number): Outcome => ({ reply: formatVolts(v), latency: "commandMs" });
    switch (which) {
      case "b":
        return volts(this.position === "MOUTH" ? VOLTS.mouthCard : VOLTS.mouthEmpty);
      case "f":
        return volts(this.feederEmpty("1") ? VOLTS.low : VOLTS.high);
      case "n":
        return volts(
          (this.feeders.get("1") ?? 0) <= this.feederNearEmptyAt ? VOLTS.nearEmpty : VOLTS.notNearEmpty,
        );
      case "o":
        return volts(this.persistent("cover-open") ? VOLTS.low : VOLTS.high);
      case "p":
        return volts(
          this.position === "INSIDE" || this.position === "CONTACT" ? VOLTS.mouthCard : VOLTS.mouthEmpty,
        );
      case "c":
      case "m":
      case "r":
        return volts(2.5);
      default:
        return { reply: "ERROR PARAMETRES", latency: "commandMs" };
    }
  }

  private loadPanel(name: "Db" | "Dbc", params: string[], binary: Buffer | undefined): Outcome {
    if (!this.sequence) return { reply: "ERROR CDE", latency: "commandMs" };
    const refuse: Outcome = { reply: "ERROR PARAMETRES", latency: "commandMs" };
    if (params[0] !== "k" || params[1] !== "2" || binary === undefined) return refuse;
    let panel: Buffer;
    if (name === "Db") {
      panel = binary;
    } else {
      try {
        panel = decompressKO(binary);
      } catch {
        return refuse;
      }
    }
    if (panel.length !== PANEL_BYTES) return refuse;
    this.sequence[this.sequence.side] = panel;
    return { reply: "OK", latency: "commandMs" };
  }

  /**
   * `Se` ending a sequence with panels: prints them. With no card inside it feeds one first (the
   * Windows driver's jobs carry no `Si`). The card is then ejected only if `Pneab` lets the printing
   * `Se` eject (`Pneab;D` and `Pneab;A;1`).
   */
  private print(cardNotTaken: boolean): Outcome {
    const sequence = this.sequence!;
    this.sequence = undefined;
    if (this.position === "MOUTH") return { reply: "ERR CARD", latency: "commandMs" };
    if (this.persistent("cover-open")) return { reply: "COVER OPEN", latency: "printMs" };
    if (this.cleaningRequired()) return { reply: "ERR NEED CLEANING", latency: "printMs" };
    const panels = [sequence.front, sequence.back].filter((p) => p !== undefined).length;
    if (this.persistent("ribbon-out") || this.ribbonPanels < panels) {
      return { reply: "ERROR RIBBON", latency: "printMs" };
    }
    if (this.position === "NONE") {
      const fed = this.feed("INSIDE");
      if (fed.reply !== "OK") return fed;
    }
    this.position = "INSIDE";
    this.ribbonPanels -= panels;
    this.counters.panelsPrinted += panels;
    const card = this.current!;
    if (sequence.front) {
      card.front = imageFromPanel(sequence.front);
      card.frontInkDots = inkCount(card.front);
    }
    if (sequence.back) {
      card.back = imageFromPanel(sequence.back);
      card.backInkDots = inkCount(card.back);
    }
    if (this.settings.ejectAfterPrint && this.settings.ejectAllowed) this.eject(cardNotTaken);
    return { reply: "OK", latency: "printMs" };
  }

  /** `St` (guide p.45): a card from the feeder, the printer's own test pattern, out through the exit. */
  private testCard(): Outcome {
    if (this.position !== "NONE") return { reply: "ERR CARD", latency: "commandMs" };
    if (this.persistent("ribbon-out") || this.ribbonPanels < 1)
      return { reply: "ERROR RIBBON", latency: "printMs" };
    const fed = this.feed("INSIDE");
    if (fed.reply !== "OK") return fed;
    this.ribbonPanels--;
    this.counters.panelsPrinted++;
    this.current!.testCard = true;
    this.eject(false);
    return { reply: "OK", latency: "printMs" };
  }

  /** `Se` with nothing to print: "the card is ejected" (guide p.42), if `Pneab;A` allows it. */
  private endSequence(cardNotTaken: boolean): Outcome {
    this.sequence = undefined;
    if (this.position === "NONE") return { reply: "NO CARD", latency: "commandMs" };
    if (this.settings.ejectAllowed && this.position !== "MOUTH") this.eject(cardNotTaken);
    return { reply: "OK", latency: "commandMs" };
  }

  /** Out through the exit (`Pcem;I`/`M`: the mouth) or into the reject box (`Pcem;N`). */
  private eject(cardNotTaken: boolean): void {
    if (this.settings.ejectThrough === "N" || this.settings.ejectThrough === "k") {
      this.toRejectBox();
      return;
    }
    this.position = "MOUTH";
    this.presented = true;
    const card = this.current!;
    this.emit("card-presented", card);
    this.armBezelTimer();
    if (cardNotTaken || this.takeAfterMs === null) return;
    const take = (): void => {
      this.takeTimer = undefined;
      this.takeCardNow();
    };
    if (this.takeAfterMs > 0) this.takeTimer = this.clock.setTimeout(take, this.takeAfterMs);
    else setImmediate(take);
  }

  /** `Pbc`: after the bezel delay the printer itself rejects (R) or re-inserts (N) an untaken card. */
  private armBezelTimer(): void {
    const { bezelAction, bezelDelaySec } = this.settings;
    if (bezelAction === "D") return;
    this.bezelTimer = this.clock.setTimeout(() => {
      this.bezelTimer = undefined;
      if (this.position !== "MOUTH") return;
      this.cancelMouthTimers();
      if (bezelAction === "N") this.position = "INSIDE";
      else if (this.rejectBox.count < this.rejectBox.capacity) this.toRejectBox();
    }, bezelDelaySec * 1000);
  }

  private cancelMouthTimers(): void {
    if (this.takeTimer) this.clock.clearTimeout(this.takeTimer);
    if (this.bezelTimer) this.clock.clearTimeout(this.bezelTimer);
    this.takeTimer = undefined;
    this.bezelTimer = undefined;
  }

  private toRejectBox(): void {
    this.rejectBox.count++;
    if (this.presented) this.endCard("captured", "card-captured");
    else this.endCard("rejected", "card-rejected");
  }

  private writeTracks(): Outcome {
    if (this.position !== "INSIDE" && this.position !== "CONTACT")
      return { reply: "NO CARD", latency: "magMs" };
    // The encoder's buffers are consumed by every write, so one card's tracks can never end up on
    // the next card.
    const loaded = new Map(this.loadedTracks);
    this.loadedTracks.clear();
    if (loaded.size === 0) return { reply: "ERROR MAGN DATA", latency: "magMs" };
    const card = this.current!;
    for (const [n, data] of loaded) {
      this.writtenTracks.set(n, data);
      const pan = panOf(n, data);
      card.tracks = card.tracks.filter((t) => t.n !== n);
      card.tracks.push({
        n,
        sha256: createHash("sha256").update(data, "latin1").digest("hex"),
        ...(pan ? { maskedPan: maskPan(pan) } : {}),
      });
    }
    card.tracks.sort((a, b) => a.n - b.n);
    return { reply: "OK", latency: "magMs" };
  }

  /** Takes a card from the feeder to `position`; `FEEDER EMPTY` when there is none. */
  private feed(position: "INSIDE" | "CONTACT"): Outcome {
    const feeder = this.feederToUse();
    if (feeder === undefined) return { reply: "FEEDER EMPTY", latency: "commandMs" };
    this.feeders.set(feeder, this.feeders.get(feeder)! - 1);
    this.lastFed = feeder;
    this.counters.cardsInserted++;
    this.cardsSinceCleaning++;
    this.position = position;
    this.presented = false;
    this.loadedTracks.clear();
    this.writtenTracks.clear();
    this.readBuffer.clear();
    const card: CardRecord = {
      serial: this.nextSerial++,
      insertedAt: this.clock.wallNow(),
      frontInkDots: 0,
      backInkDots: 0,
      tracks: [],
      feeder: this.lastFed,
      outcome: "in-printer",
    };
    this.current = card;
    this.records.push(card);
    this.emit("card-inserted", card);
    return { reply: "OK", latency: "commandMs" };
  }

  /** A jam takes a card from the feeder and leaves it inside, where `Ser` can clear it. */
  private jam(reply: string): Outcome {
    if (this.position === "NONE" && this.feederToUse() !== undefined) this.feed("INSIDE");
    return { reply, latency: "commandMs" };
  }

  private cleaningAdvised(): boolean {
    if (this.persistent("needs-cleaning")) return true;
    const after = this.cleaningAdvisedAfterCards ?? this.cleaningRequiredAfterCards;
    return after !== undefined && this.cardsSinceCleaning >= after;
  }

  private cleaningRequired(): boolean {
    if (this.persistent("needs-cleaning")) return true;
    const after = this.cleaningRequiredAfterCards;
    return after !== undefined && this.cardsSinceCleaning >= after;
  }

  /** The feeder the next insert takes from (`Piem`), or undefined when it (or every one) is empty. */
  private feederToUse(): string | undefined {
    const ids = [...this.feeders.keys()].sort();
    const usable = (id: string) => !this.feederEmpty(id);
    if (this.insertFrom === "1" || this.insertFrom === "2")
      return usable(this.insertFrom) ? this.insertFrom : undefined;
    if (this.insertFrom === "3") {
      const next = ids.find((id) => id !== this.lastFed && usable(id));
      return next ?? (usable(this.lastFed) ? this.lastFed : undefined);
    }
    return ids.find(usable);
  }

  private feederEmpty(id: string): boolean {
    const faulted = this.faults.some(
      (f) => f.name === "feeder-empty" && f.persistent && (f.options.feeder ?? id) === id,
    );
    if (faulted) return true;
    return (this.feeders.get(id) ?? 0) <= 0;
  }

  /** `Sk;f` / `Sk;w` (guide p.64): bit 1 feeder 1, bit 2 feeder 2. */
  private feederBits(test: (id: string) => boolean): string {
    let bits = 0;
    for (const id of this.feeders.keys()) if (test(id)) bits |= id === "1" ? 1 : 2;
    return String(bits);
  }

  private endCard(
    outcome: Exclude<CardOutcome, "in-printer">,
    event: "card-taken" | "card-captured" | "card-rejected" | "card-ejected",
  ): void {
    this.cancelMouthTimers();
    this.position = "NONE";
    this.sequence = undefined;
    this.writtenTracks.clear();
    this.readBuffer.clear();
    const card = this.current;
    this.current = undefined;
    this.presented = false;
    if (!card) return;
    card.outcome = outcome;
    card.endedAt = this.clock.wallNow();
    this.emit(event, card);
    this.forgetOldCards();
  }

  private forgetOldCards(): void {
    const finished = this.records.length - (this.current ? 1 : 0);
    if (finished > this.keepRecords) this.records.splice(0, finished - this.keepRecords);
    const commands = this.keepRecords * 10;
    if (this.commandLog.length > commands) this.commandLog.splice(0, this.commandLog.length - commands);
  }

  private pullCable(replugAfterMs: number): void {
    // Whatever was half-received or queued dies with the cable.
    this.queue.length = 0;
    this.parser.reset();
    this.link?.unplug();
    this.clock.setTimeout(() => this.link?.replug(), replugAfterMs);
  }

  private send(bytes: Buffer): void {
    this.link?.send(bytes);
  }

  /** High bytes only, so no piece of it can pass for a reply; a terminator lets the host resynchronise. */
  private lineNoise(): Buffer {
    const length = 3 + Math.floor(this.random() * 12);
    const noise = Buffer.alloc(length + 1);
    for (let i = 0; i < length; i++) noise[i] = 0x80 + Math.floor(this.random() * 0x80);
    noise[length] = CR;
    return noise;
  }

  private persistent(name: PrinterFaultName): boolean {
    return this.faults.some((f) => f.name === name && f.persistent);
  }
}

/** Commands whose parameters are card data or bitmaps: logged by name only. */
const DATA_COMMANDS: ReadonlySet<string> = new Set(["Dm", "Db", "Dbc"]);

function logEntry(command: ParsedCommand, step: string): string {
  if (command.kind !== "command" || DATA_COMMANDS.has(command.name)) return command.name;
  if (step === "present") return "Se>mouth";
  return [command.name, ...command.params].join(";");
}

const TERMINATORS: Record<ReplyTerminator, Buffer> = {
  NUL: Buffer.of(NUL),
  CR: Buffer.of(CR),
  CRLF: Buffer.of(CR, LF),
  none: Buffer.alloc(0),
};

function latencyKindOf(step: string): LatencyKind {
  if (step === "print") return "printMs";
  if (step === "Smw" || step === "Smr" || step === "Rmb") return "magMs";
  return "commandMs";
}

/** Changes the last character to another one valid on every track. */
function corrupt(data: string): string {
  return data.slice(0, -1) + (data.endsWith("0") ? "1" : "0");
}

function panOf(track: number, data: string): string | undefined {
  const match = track === 1 ? /^B(\d{12,19})\^/.exec(data) : track === 2 ? /^(\d{12,19})=/.exec(data) : null;
  return match?.[1];
}
