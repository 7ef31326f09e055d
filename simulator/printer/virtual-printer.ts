import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import { maskPan } from "../../agent/log/mask.js";
import { type Clock, systemClock } from "../../agent/util/clock.js";
import { isEncodableTrack } from "../../drivers/magstripe/iso7813.js";
import {
  BITMAP_MODE,
  BITMAP_PANEL,
  type CardPosition,
  CR,
  formatFeederVoltage,
} from "../../drivers/printer/codec.js";
import { CommandParser, type ParsedCommand } from "../../drivers/printer/command-parser.js";
import { decompressPanel } from "../../drivers/printer/raster/compress.js";
import { PANEL_BYTES } from "../../drivers/printer/raster/geometry.js";
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
  /** Clock time (ms) of the `Si` that fed it. */
  insertedAt: number;
  frontInkDots: number;
  backInkDots: number;
  /** The raw 1bpp panels as printed. */
  front?: Buffer;
  back?: Buffer;
  tracks: Array<{ n: number; sha256: string; maskedPan?: string }>;
  outcome: CardOutcome;
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
  /** `Smw` and `Smr`. */
  magMs: number;
}

export interface VirtualPrinterOptions {
  /** Timers for latency, card taking and replug. Default systemClock. */
  clock?: Clock;
  /** Default 100. */
  feederCards?: number;
  /** Panels the ribbon can still print. Default 1000. */
  ribbonPanels?: number;
  /** Default 20. */
  captureBinCapacity?: number;
  /** Default 50. */
  rejectBoxCapacity?: number;
  /** The simulated cardholder takes a presented card after this long; null: nobody ever does. Default 200. */
  takeAfterMs?: number | null;
  /** Default 0 everywhere: answer on the next turn of the event loop. */
  latency?: Partial<PrinterLatency>;
  /** Seeds the line-noise generator so runs repeat. Default 1. */
  seed?: number;
  /**
   * Finished cards kept in `record` (with both panels, 164 KB a card), and ten times as many entries
   * in `commandLog`; older ones are dropped as cards end, so a simulator left running for days
   * stays small. Default 1000.
   */
  keepRecords?: number;
}

export interface VirtualPrinterState {
  position: CardPosition;
  feederCards: number;
  ribbonPanels: number;
  captureBin: { count: number; capacity: number };
  rejectBox: { count: number; capacity: number };
  coverOpen: boolean;
  /** Serial of the card inside or in the mouth. */
  currentSerial?: number;
}

type LatencyKind = keyof PrinterLatency;

interface Outcome {
  /** Absent: nothing goes back. */
  reply?: string;
  latency: LatencyKind;
  /** `Wbz`: hold the reply until the mouth is empty or this many ms have passed. */
  waitForTakeMs?: number;
}

const INSIDE: readonly CardPosition[] = ["INSERT", "PRINT", "CONTACT"];

/**
 * A software card printer speaking the protocol of docs/devices.md ("Printer") over a virtual serial
 * line. It models what the agent can observe: a feeder, the card's position, a print sequence, the
 * magnetic encoder, the mouth with a cardholder, capture bin and reject box. Commands are handled
 * one at a time in arrival order; state changes when a command arrives, the reply leaves after the
 * configured latency.
 */
export class VirtualPrinter extends EventEmitter<VirtualPrinterEvents> implements VirtualSerialDevice {
  private readonly clock: Clock;
  private latency: PrinterLatency;
  private readonly takeAfterMs: number | null;
  private readonly parser = new CommandParser();
  private readonly random: () => number;
  private link: VirtualSerialLink | undefined;

  private position: CardPosition = "NONE";
  private feederCards: number;
  private ribbonPanels: number;
  private readonly captureBin: { count: number; capacity: number };
  private readonly rejectBox: { count: number; capacity: number };
  private current: CardRecord | undefined;
  private readonly records: CardRecord[] = [];
  private readonly keepRecords: number;
  private nextSerial = 1;
  private takeTimer: object | undefined;
  /** Set while a `Wbz` waits for the mouth to empty. */
  private bezelWaiter: (() => void) | undefined;
  private sequence: { side?: "front" | "back"; front?: Buffer; back?: Buffer } | undefined;
  private readonly loadedTracks = new Map<number, string>();
  private readonly writtenTracks = new Map<number, string>();
  private faults: ArmedFault[] = [];

  private readonly queue: ParsedCommand[] = [];
  private busy = false;
  /** Names of the commands received, in order; never their parameters. */
  readonly commandLog: string[] = [];

  constructor(options: VirtualPrinterOptions = {}) {
    super();
    this.clock = options.clock ?? systemClock;
    this.latency = { commandMs: 0, printMs: 0, magMs: 0, ...options.latency };
    this.takeAfterMs = options.takeAfterMs === undefined ? 200 : options.takeAfterMs;
    this.feederCards = options.feederCards ?? 100;
    this.ribbonPanels = options.ribbonPanels ?? 1000;
    this.captureBin = { count: 0, capacity: options.captureBinCapacity ?? 20 };
    this.rejectBox = { count: 0, capacity: options.rejectBoxCapacity ?? 50 };
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
    if (this.position !== "BEZEL") return false;
    this.endCard("taken", "card-taken");
    return true;
  }

  loadFeeder(cards: number): void {
    this.feederCards += cards;
  }

  emptyCaptureBin(): number {
    const n = this.captureBin.count;
    this.captureBin.count = 0;
    return n;
  }

  emptyRejectBox(): number {
    const n = this.rejectBox.count;
    this.rejectBox.count = 0;
    return n;
  }

  get state(): VirtualPrinterState {
    return {
      position: this.position,
      feederCards: this.feederCards,
      ribbonPanels: this.ribbonPanels,
      captureBin: { ...this.captureBin },
      rejectBox: { ...this.rejectBox },
      coverOpen: this.persistent("cover-open"),
      ...(this.current ? { currentSerial: this.current.serial } : {}),
    };
  }

  /** Every card fed so far, oldest first: the printer's production record. */
  get record(): readonly CardRecord[] {
    return [...this.records];
  }

  /** The records without the panel bitmaps, for a JSON file. */
  cardsForRecord(): Array<Omit<CardRecord, "front" | "back">> {
    return this.records.map(({ front: _front, back: _back, ...rest }) => ({
      ...rest,
      tracks: [...rest.tracks],
    }));
  }

  /** Bytes and frames the device-side parser threw away (noise on the line from the host). */
  get parserStats(): { droppedBytes: number; droppedFrames: number } {
    return { droppedBytes: this.parser.droppedBytes, droppedFrames: this.parser.droppedFrames };
  }

  private pump(): void {
    if (this.busy) return;
    const command = this.queue.shift();
    if (!command) return;
    this.busy = true;
    const { reply, latencyMs, noise, waitForTakeMs } = this.handle(command);
    if (waitForTakeMs !== undefined) {
      this.holdUntilTaken(waitForTakeMs);
      return;
    }
    const finish = (): void => {
      if (reply !== undefined) {
        if (noise) this.send(noise.bytes);
        if (!noise || noise.thenReply)
          this.send(Buffer.concat([Buffer.from(reply, "latin1"), Buffer.of(CR)]));
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
    waitForTakeMs?: number;
    latencyMs: number;
    noise?: { bytes: Buffer; thenReply: boolean };
  } {
    this.commandLog.push(command.name);
    const step = command.name === "Se" && this.sequence ? "print" : command.name;
    const fired = fireFaults(this.faults, step);
    const firedOf = (kind: FaultEffect["kind"]) => fired.find((f) => f.effect.kind === kind);

    const unplug = firedOf("unplug");
    if (unplug) {
      this.pullCable(unplug.options.replugAfterMs ?? 1000);
      return { latencyMs: 0 };
    }
    if (firedOf("swallow")) return { latencyMs: 0 };
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
      ...(outcome.waitForTakeMs === undefined ? {} : { waitForTakeMs: outcome.waitForTakeMs }),
      latencyMs: this.latency[outcome.latency] * factor,
      ...(noise ? { noise: { bytes: this.lineNoise(), thenReply: noise.options.thenReply === true } } : {}),
    };
  }

  private refusal(fired: ArmedFault[], step: string): Outcome | undefined {
    for (const { effect } of fired) {
      if (effect.kind === "jam") return this.jam(effect.reply);
      if (effect.kind === "refuse") {
        // Any error inside a print sequence aborts it (docs/devices.md).
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
    const inside = INSIDE.includes(this.position);
    const hasCard = this.position !== "NONE";

    switch (command.name) {
      case "Pem":
        return params[0] === "2" && params.length === 1 ? ok() : answer("ERROR PARAMETRES");
      case "Pr":
        return params[0] === "k" && params.length === 1 ? ok() : answer("ERROR PARAMETRES");
      case "Si":
        if (hasCard) return answer("ERROR CDE");
        if (this.feederCards <= 0 || this.persistent("feeder-empty")) return answer("FEEDER EMPTY");
        this.feedCard("INSERT");
        return ok();
      case "Sis":
        if (!inside) return answer(hasCard ? "ERROR CDE" : "NO CARD");
        this.position = "CONTACT";
        return ok();
      case "Ss":
        if (!inside) return answer(hasCard ? "ERROR CDE" : "NO CARD");
        if (this.sequence) return answer("ERROR CDE");
        this.sequence = {};
        this.position = "PRINT";
        return ok();
      case "Sr":
      case "Sv":
        if (!this.sequence) return answer("ERROR CDE");
        this.sequence.side = command.name === "Sr" ? "front" : "back";
        return ok();
      case "Db":
      case "Dbc":
        return this.loadBitmap(command.name, params, command.binary);
      case "Se":
        return step === "print" ? this.print() : this.eject();
      case "Pmc":
        return params[0] === "h" || params[0] === "l" ? ok() : answer("ERROR PARAMETRES");
      case "Dm": {
        const n = Number(params[0]);
        const data = params[1];
        if (!(n === 1 || n === 2 || n === 3) || data === undefined) return answer("ERROR PARAMETRES");
        if (!isEncodableTrack(n, data)) return answer("ERROR MAG DATA");
        this.loadedTracks.set(n, data);
        return ok();
      }
      case "Smw":
        return this.writeTracks();
      case "Smr": {
        if (!inside) return answer("NO CARD", "magMs");
        const data = this.writtenTracks.get(Number(params[0]));
        if (data === undefined) return answer("ERR READ", "magMs");
        return answer(flags.corruptReadBack ? corrupt(data) : data, "magMs");
      }
      case "Seb":
        if (!inside) return answer(hasCard ? "ERROR CDE" : "NO CARD");
        this.present(flags.cardNotTaken);
        return ok();
      case "Rbz":
        return answer(this.position === "BEZEL" ? "CARD" : "NO CARD");
      case "Wbz": {
        const ms = Number(params[0]);
        if (!Number.isInteger(ms) || ms < 0 || ms > 600_000) return answer("ERROR PARAMETRES");
        if (this.position !== "BEZEL" || ms === 0)
          return answer(this.position === "BEZEL" ? "CARD" : "NO CARD");
        return { latency: "commandMs", waitForTakeMs: ms };
      }
      case "Scb":
        if (!hasCard) return answer("NO CARD");
        if (this.captureBin.count >= this.captureBin.capacity) return answer("CAPTURE BIN FULL");
        this.captureBin.count++;
        this.endCard("captured", "card-captured");
        return ok();
      case "Ser":
        if (!hasCard) return answer("NO CARD");
        if (this.rejectBox.count >= this.rejectBox.capacity) return answer("REJECT BOX FULL");
        this.rejectBox.count++;
        this.endCard("rejected", "card-rejected");
        return ok();
      case "Rse":
        if (params[0] !== "f") return answer("ERROR PARAMETRES");
        return answer(formatFeederVoltage(this.feederCards > 0 && !this.persistent("feeder-empty") ? 5 : 0));
      case "Rrt":
        if (params[0] !== "count") return answer("ERROR PARAMETRES");
        return answer(this.persistent("ribbon-out") ? "ERR RIB DETECTION" : String(this.ribbonPanels));
      case "Rcv":
        return answer(this.persistent("cover-open") ? "OPEN" : "CLOSED");
      case "Rpos":
        return answer(this.position);
    }
  }

  private loadBitmap(name: "Db" | "Dbc", params: string[], binary: Buffer | undefined): Outcome {
    if (!this.sequence?.side) return { reply: "ERROR CDE", latency: "commandMs" };
    const refuse: Outcome = { reply: "ERROR PARAMETRES", latency: "commandMs" };
    if (params[0] !== BITMAP_PANEL || params[1] !== BITMAP_MODE || binary === undefined) return refuse;
    let panel: Buffer;
    if (name === "Db") {
      panel = binary;
    } else {
      try {
        panel = decompressPanel(binary);
      } catch {
        return refuse;
      }
    }
    if (panel.length !== PANEL_BYTES) return refuse;
    this.sequence[this.sequence.side] = panel;
    return { reply: "OK", latency: "commandMs" };
  }

  /** `Se` inside a sequence: prints what was loaded; the card stays at the print position. */
  private print(): Outcome {
    const sequence = this.sequence!;
    this.sequence = undefined;
    const panels = [sequence.front, sequence.back].filter((p) => p !== undefined).length;
    if (panels === 0) return { reply: "ERROR CDE", latency: "commandMs" };
    if (this.ribbonPanels < panels) return { reply: "ERR RIBBON", latency: "printMs" };
    this.ribbonPanels -= panels;
    const card = this.current!;
    if (sequence.front) {
      card.front = sequence.front;
      card.frontInkDots = inkDots(sequence.front);
    }
    if (sequence.back) {
      card.back = sequence.back;
      card.backInkDots = inkDots(sequence.back);
    }
    return { reply: "OK", latency: "printMs" };
  }

  /** `Se` outside a sequence: to the output tray. */
  private eject(): Outcome {
    if (this.position === "NONE") return { reply: "NO CARD", latency: "commandMs" };
    this.endCard("ejected", "card-ejected");
    return { reply: "OK", latency: "commandMs" };
  }

  private writeTracks(): Outcome {
    if (!INSIDE.includes(this.position)) return { reply: "NO CARD", latency: "magMs" };
    // The encoder's buffers are consumed by every write, so one card's tracks can never end up on
    // the next card.
    const loaded = new Map(this.loadedTracks);
    this.loadedTracks.clear();
    if (loaded.size === 0) return { reply: "ERROR MAG DATA", latency: "magMs" };
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

  private feedCard(position: CardPosition): void {
    this.feederCards--;
    this.position = position;
    this.loadedTracks.clear();
    this.writtenTracks.clear();
    const card: CardRecord = {
      serial: this.nextSerial++,
      insertedAt: this.clock.now(),
      frontInkDots: 0,
      backInkDots: 0,
      tracks: [],
      outcome: "in-printer",
    };
    this.current = card;
    this.records.push(card);
    this.emit("card-inserted", card);
  }

  /** A jam takes a card from the feeder and leaves it at the insert position, where `Ser` can clear it. */
  private jam(reply: string): Outcome {
    if (this.position === "NONE" && this.feederCards > 0) this.feedCard("INSERT");
    return { reply, latency: "commandMs" };
  }

  /**
   * `Wbz`: the sensor answers the moment the mouth empties (taken, or retracted by a technician),
   * or `CARD` when the wait runs out. The host needs no polling traffic while a cardholder reaches.
   */
  private holdUntilTaken(ms: number): void {
    const answer = (text: string): void => {
      this.clock.clearTimeout(timer);
      this.bezelWaiter = undefined;
      this.send(Buffer.concat([Buffer.from(text, "latin1"), Buffer.of(CR)]));
      this.busy = false;
      this.pump();
    };
    const timer = this.clock.setTimeout(() => answer("CARD"), ms);
    this.bezelWaiter = () => answer("NO CARD");
  }

  private present(cardNotTaken: boolean): void {
    this.position = "BEZEL";
    this.emit("card-presented", this.current!);
    if (cardNotTaken || this.takeAfterMs === null) return;
    const take = (): void => {
      this.takeTimer = undefined;
      this.takeCardNow();
    };
    if (this.takeAfterMs > 0) this.takeTimer = this.clock.setTimeout(take, this.takeAfterMs);
    else setImmediate(take);
  }

  private endCard(
    outcome: Exclude<CardOutcome, "in-printer">,
    event: "card-taken" | "card-captured" | "card-rejected" | "card-ejected",
  ): void {
    if (this.takeTimer) this.clock.clearTimeout(this.takeTimer);
    this.takeTimer = undefined;
    const wasInMouth = this.position === "BEZEL";
    this.position = "NONE";
    if (wasInMouth) this.bezelWaiter?.();
    this.sequence = undefined;
    this.writtenTracks.clear();
    const card = this.current;
    this.current = undefined;
    if (!card) return;
    card.outcome = outcome;
    card.endedAt = this.clock.now();
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

  /** High bytes only, so no piece of it can pass for a reply; a CR lets the host resynchronise. */
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

function latencyKindOf(step: string): LatencyKind {
  if (step === "print") return "printMs";
  if (step === "Smw" || step === "Smr") return "magMs";
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

const POPCOUNT = Uint8Array.from({ length: 256 }, (_, v) => {
  let n = 0;
  for (let b = v; b; b >>= 1) n += b & 1;
  return n;
});

function inkDots(panel: Buffer): number {
  let dots = 0;
  for (const byte of panel) dots += POPCOUNT[byte]!;
  return dots;
}
