import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import { type Clock, systemClock } from "../../agent/util/clock.js";
import type { Coercivity } from "../../drivers/magstripe/encoder.js";
import {
  encodeHidReports,
  HID_MAX_PAYLOAD,
  HID_REPORT_ID,
  HID_REPORT_SIZE,
  HidReassembler,
  type HidReassemblerStats,
  MSR605X_PRODUCT_ID,
  MSR605X_VENDOR_ID,
} from "../../drivers/magstripe/hid-framing.js";
import {
  formatTrack,
  isEncodableTrack,
  parseFormattedTrack,
  TRACK_SPECS,
  type TrackNumber,
} from "../../drivers/magstripe/iso7813.js";
import {
  BAD_TRACK,
  type BlockTracks,
  dataTrack,
  ESC,
  encodeCoercivityReply,
  encodeFirmwareReply,
  encodeModelReply,
  encodeReadAnswer,
  encodeStatusReply,
  encodeTestReply,
  type FrameParserStats,
  type ReadTracks,
} from "../../drivers/magstripe/msr206-codec.js";
import { type Msr206Command, Msr206CommandParser } from "../../drivers/magstripe/msr206-command-parser.js";
import type { SwipeOperation } from "../../drivers/magstripe/msr206-driver.js";
import type { HidBackend, HidDeviceHandle, HidDeviceInfo } from "../../drivers/transport/hid-transport.js";
import { mulberry32 } from "../common/random.js";
import type { VirtualSerialDevice, VirtualSerialLink } from "../serial/virtual-binding.js";
import {
  type ArmedMsr206Fault,
  armMsr206Fault,
  fireMsr206Faults,
  type Msr206FaultEffect,
  type Msr206FaultName,
  type Msr206FaultOptions,
} from "./faults.js";

export interface VirtualMsr206HidOptions {
  /** What `devices()` lists and `open()` accepts. Default `/dev/hidraw-msr605x`. */
  path?: string;
  vendorId?: number;
  productId?: number;
  /** Payload bytes per input report, 1–63 (default 63): smaller cuts a reply into more reports. */
  payloadPerReport?: number;
  /** Bytes per `data` event (default 64, one report): other values split or merge reports across events. */
  bytesPerEvent?: number;
}

export interface VirtualMsr206Options {
  /** Latency, swipe and replug timers. Default systemClock. */
  clock?: Clock;
  /** Answer delay of the commands the unit answers by itself. Default 0: the next turn of the event loop. */
  commandMs?: number;
  /**
   * When the simulated teller swipes the card after a write, read or erase: 0 (default) on the next
   * turn of the event loop, N ms later on the clock, `null` never (the test or the person at the
   * console calls `swipe()`).
   */
  swipeAfterMs?: number | null;
  /** `ESC t` answer. Default `3` (three tracks). */
  model?: string;
  /** `ESC v` answer, `REV` + 5 characters. Default `REVE1.03`. */
  firmware?: string;
  /** Whether read answers carry the start and end sentinels, as real units do. Default true. */
  readSentinels?: boolean;
  /** Seeds the noise generator so runs repeat. Default 1. */
  seed?: number;
  hid?: VirtualMsr206HidOptions;
}

/** One ISO write that reached the stripe. Tracks are kept as hashes of their data, never in clear. */
export interface StripeWriteRecord {
  serial: number;
  /** Wall time (ms, the clock's wallNow()) of the write: a timestamp of the record. */
  at: number;
  coercivity: Coercivity;
  tracks: Array<{ n: TrackNumber; sha256: string }>;
}

export interface VirtualMsr206Events {
  "stripe-written": [record: StripeWriteRecord];
  /** A write, read or erase now waits for the card to be swiped (`swipe()`). */
  "awaiting-swipe": [operation: SwipeOperation];
}

type Via = "serial" | "hid";

/** What the faults that fired on a swipe command do once the card is swiped. */
interface SwipeFlags {
  writeError: boolean;
  corruptWrite: boolean;
  /** `bad-track`: the track stored with a broken LRC, `first` = the first track written. */
  damage?: TrackNumber | "first";
  noise: boolean;
}

/** The commands the unit answers only after a swipe. */
type SwipeCommand = { kind: "readIso" } | Extract<Msr206Command, { kind: "writeIso" | "erase" }>;

function swipeCommandOf(command: Msr206Command): SwipeCommand | undefined {
  switch (command.kind) {
    case "readIso":
      return { kind: "readIso" };
    case "writeIso":
    case "erase":
      return command;
    default:
      return undefined;
  }
}

/** A write, read or erase the unit holds until the card is swiped. */
interface PendingSwipe {
  command: SwipeCommand;
  via: Via;
  flags: SwipeFlags;
}

type Outcome =
  /** Answered by the unit itself after `commandMs` (or never, without a reply). */
  | { kind: "answer"; reply?: Buffer; noise?: boolean }
  /** Answered after a swipe. */
  | { kind: "swipe"; pending: PendingSwipe };

const SWIPE_OPERATION: Readonly<Record<SwipeCommand["kind"], SwipeOperation>> = {
  writeIso: "write",
  readIso: "read",
  erase: "erase",
};

/**
 * A software MSR206 speaking the bytes of docs/devices.md ("Magnetic stripe encoder"), usable as a
 * `VirtualSerialDevice` under `VirtualSerialBinding` (a serial MSR206) and, through `hidBackend()`,
 * as a node-hid device object for `HidTransport` (an MSR605X: 64-byte reports, replies optionally cut
 * into more reports and split across `data` events). Like the real units it is hand-swipe: a write,
 * read or erase waits for the card to be swiped (`swipe()`, or by itself after `swipeAfterMs`) and
 * only then touches the stripe and answers; a reset drops the command that waits. Reads answer
 * `ESC +` for an empty track and `ESC *` for one whose stored data fails its LRC check. Commands are
 * handled one at a time in arrival order; each answer goes back the way its command came.
 */
export class VirtualMsr206 extends EventEmitter<VirtualMsr206Events> implements VirtualSerialDevice {
  private readonly clock: Clock;
  private readonly commandMs: number;
  private readonly swipeAfterMs: number | null;
  private readonly model: string;
  private readonly firmware: string;
  private readonly readSentinels: boolean;
  private readonly random: () => number;
  private readonly hidOptions: Required<VirtualMsr206HidOptions>;

  private link: VirtualSerialLink | undefined;
  private readonly serialParser = new Msr206CommandParser();
  private hidHandle: VirtualHidHandle | undefined;
  private readonly hidReassembler = new HidReassembler();
  private readonly hidParser = new Msr206CommandParser();
  private plugged = true;

  private coercivity: Coercivity = "HICO";
  /** Formatted tracks (sentinels + data + LRC), as on the stripe. */
  private readonly stripe = new Map<TrackNumber, string>();
  private readonly writes: StripeWriteRecord[] = [];
  private faults: ArmedMsr206Fault[] = [];
  private queue: Array<{ command: Msr206Command; via: Via }> = [];
  private busy = false;
  /** The write, read or erase waiting for a swipe; `busy` stays set while it waits. */
  private waiting: PendingSwipe | undefined;
  private hidWrites: Buffer[] = [];
  /** Kinds of the commands received, in order; never their data. */
  readonly commandLog: string[] = [];

  constructor(options: VirtualMsr206Options = {}) {
    super();
    this.clock = options.clock ?? systemClock;
    this.commandMs = options.commandMs ?? 0;
    this.swipeAfterMs = options.swipeAfterMs === undefined ? 0 : options.swipeAfterMs;
    this.model = options.model ?? "3";
    this.firmware = options.firmware ?? "REVE1.03";
    // Fail at construction, not at the first answer.
    encodeModelReply(this.model);
    encodeFirmwareReply(this.firmware);
    this.readSentinels = options.readSentinels ?? true;
    this.random = mulberry32(options.seed ?? 1);
    this.hidOptions = {
      path: "/dev/hidraw-msr605x",
      vendorId: MSR605X_VENDOR_ID,
      productId: MSR605X_PRODUCT_ID,
      payloadPerReport: HID_MAX_PAYLOAD,
      bytesPerEvent: HID_REPORT_SIZE,
      ...options.hid,
    };
  }

  // --- serial side ------------------------------------------------------------------------------

  attach(link: VirtualSerialLink): void {
    this.link = link;
  }

  receive(bytes: Buffer): void {
    if (!this.plugged) return;
    this.enqueue(this.serialParser.push(bytes), "serial");
  }

  // --- HID side ---------------------------------------------------------------------------------

  /** A node-hid stand-in for `HidTransport`'s `backend` option: lists and opens this device. */
  hidBackend(): HidBackend {
    return {
      devices: (): HidDeviceInfo[] =>
        this.plugged
          ? [
              {
                vendorId: this.hidOptions.vendorId,
                productId: this.hidOptions.productId,
                path: this.hidOptions.path,
                product: "Virtual MSR605X",
                interface: 0,
              },
            ]
          : [],
      open: (path: string): HidDeviceHandle => {
        if (path !== this.hidOptions.path || !this.plugged)
          throw new Error(`cannot open device with path ${path}`);
        if (this.hidHandle?.usable) throw new Error(`device busy: ${path}`);
        const handle = new VirtualHidHandle(this.hidOptions, (report) => this.onHidReport(report));
        this.hidHandle = handle;
        return handle;
      },
    };
  }

  /** The raw `write()` arguments the host sent over HID since the last call (report id + 64 bytes each). */
  takeHidWrites(): Buffer[] {
    const all = this.hidWrites;
    this.hidWrites = [];
    return all;
  }

  private onHidReport(report: Buffer): void {
    this.hidWrites.push(Buffer.from(report));
    for (const message of this.hidReassembler.push(report.subarray(1))) {
      this.enqueue(this.hidParser.push(message), "hid");
    }
  }

  // --- control ----------------------------------------------------------------------------------

  injectFault(name: Msr206FaultName, options: Msr206FaultOptions = {}): void {
    this.faults.push(armMsr206Fault(name, options));
  }

  clearFaults(): void {
    this.faults = [];
  }

  /** Pulls the cable now: an open serial port sees a disconnect, an open HID handle a read error. */
  unplug(): void {
    if (!this.plugged) return;
    this.plugged = false;
    this.queue = [];
    if (this.waiting) {
      // Nobody will answer the command that waited; the unit starts over when it is back.
      this.waiting = undefined;
      this.busy = false;
    }
    this.serialParser.reset();
    this.hidParser.reset();
    this.hidReassembler.reset();
    this.link?.unplug();
    this.hidHandle?.fail();
  }

  replug(): void {
    this.plugged = true;
    this.link?.replug();
  }

  get isPlugged(): boolean {
    return this.plugged;
  }

  /** A fresh, blank card in the teller's hand: the next swipe writes or reads it. */
  newCard(): void {
    this.stripe.clear();
  }

  /** The command waiting for a swipe (`write`, `read`, `erase`), if any. */
  get awaitingSwipe(): SwipeOperation | undefined {
    return this.waiting && SWIPE_OPERATION[this.waiting.command.kind];
  }

  /**
   * The teller swipes the card now: the write, read or erase that waits runs on the card and is
   * answered. Returns false, doing nothing, when no command waits (a swipe the unit was not asked for).
   */
  swipe(): boolean {
    const pending = this.waiting;
    if (!pending) return false;
    this.waiting = undefined;
    const reply = this.executeSwiped(pending);
    if (this.plugged) this.answer(pending.via, reply, pending.flags.noise);
    this.busy = false;
    this.pump();
    return true;
  }

  get currentCoercivity(): Coercivity {
    return this.coercivity;
  }

  /** Every write that reached a stripe, oldest first. */
  get record(): readonly StripeWriteRecord[] {
    return [...this.writes];
  }

  /** SHA-256 of each track's data on the stripe now (sentinels and LRC excluded). */
  stripeHashes(): Partial<Record<TrackNumber, string>> {
    const out: Partial<Record<TrackNumber, string>> = {};
    for (const [n, formatted] of this.stripe) {
      const parsed = parseFormattedTrack(n, formatted);
      if (parsed.ok) out[n] = sha256(parsed.value);
    }
    return out;
  }

  /** Bytes the device-side parsers threw away (noise from the host). */
  get parserStats(): { serial: FrameParserStats; hid: HidReassemblerStats } {
    return { serial: this.serialParser.stats, hid: this.hidReassembler.stats };
  }

  // --- command handling -------------------------------------------------------------------------

  private enqueue(commands: Msr206Command[], via: Via): void {
    for (const command of commands) {
      // A reset drops the command waiting for a swipe and what queued behind it (libmsr: a waiting
      // command "can be interrupted by a reset"): that is how a host gives up on a swipe.
      if (command.kind === "reset" && this.waiting) {
        this.waiting = undefined;
        this.queue = [];
        this.busy = false;
      }
      this.queue.push({ command, via });
    }
    this.pump();
  }

  private pump(): void {
    if (this.busy) return;
    const next = this.queue.shift();
    if (!next) return;
    this.busy = true;
    const outcome = this.handle(next.command, next.via);
    if (outcome.kind === "swipe") {
      this.awaitSwipe(outcome.pending);
      return;
    }
    const finish = (): void => {
      if (outcome.reply && this.plugged) this.answer(next.via, outcome.reply, outcome.noise);
      this.busy = false;
      this.pump();
    };
    if (this.commandMs > 0) this.clock.setTimeout(finish, this.commandMs);
    else setImmediate(finish);
  }

  /** Holds `pending` until `swipe()`; the simulated teller swipes after `swipeAfterMs` unless null. */
  private awaitSwipe(pending: PendingSwipe): void {
    this.waiting = pending;
    this.emit("awaiting-swipe", SWIPE_OPERATION[pending.command.kind]);
    if (this.swipeAfterMs === null) return;
    // Only this command's swipe: after a reset or an unplug another command may be waiting.
    const swipeIfStillWaiting = (): void => {
      if (this.waiting === pending) this.swipe();
    };
    if (this.swipeAfterMs > 0) this.clock.setTimeout(swipeIfStillWaiting, this.swipeAfterMs);
    else setImmediate(swipeIfStillWaiting);
  }

  private handle(command: Msr206Command, via: Via): Outcome {
    this.commandLog.push(command.kind);
    const fired = fireMsr206Faults(this.faults, command.kind);
    const firedOf = (kind: Msr206FaultEffect["kind"]) => fired.find((f) => f.effect.kind === kind);
    const unplug = firedOf("unplug");
    if (unplug) {
      this.unplug();
      this.clock.setTimeout(() => this.replug(), unplug.options.replugAfterMs ?? 1000);
      return { kind: "answer" };
    }
    // Not executed, not even waiting for a swipe: the host hears nothing.
    if (firedOf("swallow")) return { kind: "answer" };
    const noise = firedOf("noise") !== undefined;
    const swiped = swipeCommandOf(command);
    if (!swiped) return { kind: "answer", ...this.executeQuick(command), noise };
    const damage = firedOf("damage-track");
    const flags: SwipeFlags = {
      writeError: firedOf("write-error") !== undefined,
      corruptWrite: firedOf("corrupt-write") !== undefined,
      noise,
      ...(damage ? { damage: damage.options.track ?? "first" } : {}),
    };
    return { kind: "swipe", pending: { command: swiped, via, flags } };
  }

  /** The commands the unit answers without a card. */
  private executeQuick(command: Msr206Command): { reply?: Buffer } {
    switch (command.kind) {
      case "readIso":
      case "writeIso":
      case "erase":
        return {}; // answered after the swipe (`executeSwiped`), never here
      case "reset":
        return {};
      case "test":
        return { reply: encodeTestReply() };
      case "hico":
      case "loco":
        this.coercivity = command.kind === "hico" ? "HICO" : "LOCO";
        return { reply: encodeStatusReply("OK") };
      case "coercivity":
        return { reply: encodeCoercivityReply(this.coercivity) };
      case "model":
        return { reply: encodeModelReply(this.model) };
      case "firmware":
        return { reply: encodeFirmwareReply(this.firmware) };
      case "unknown":
        return { reply: encodeStatusReply("INVALID_COMMAND") };
      case "malformed":
        return { reply: encodeStatusReply("COMMAND_FORMAT_ERROR") };
    }
  }

  /** A write, read or erase, once the card was swiped. */
  private executeSwiped({ command, flags }: PendingSwipe): Buffer {
    switch (command.kind) {
      case "readIso":
        return this.read();
      case "writeIso":
        return this.write(command.tracks, flags);
      case "erase":
        for (const n of command.tracks) this.stripe.delete(n);
        return encodeStatusReply("OK");
    }
  }

  /** ISO write: the device adds sentinels and LRC. An empty track in the block is left as it is. */
  private write(tracks: BlockTracks, flags: SwipeFlags): Buffer {
    const toWrite: Array<{ n: TrackNumber; data: string }> = [];
    for (const n of [1, 2, 3] as const) {
      const data = tracks[`track${n}`];
      if (data === "") continue;
      if (!isEncodableTrack(n, data)) return encodeStatusReply("COMMAND_FORMAT_ERROR");
      toWrite.push({ n, data: flags.corruptWrite ? corrupt(data) : data });
    }
    if (toWrite.length === 0) return encodeStatusReply("COMMAND_FORMAT_ERROR");
    if (flags.writeError) return encodeStatusReply("READ_WRITE_ERROR");
    const damaged = flags.damage === "first" ? toWrite[0]!.n : flags.damage;
    for (const { n, data } of toWrite) {
      const formatted = formatTrack(n, data);
      this.stripe.set(n, n === damaged ? withBrokenLrc(n, formatted) : formatted);
    }
    const record: StripeWriteRecord = {
      serial: this.writes.length + 1,
      at: this.clock.wallNow(),
      coercivity: this.coercivity,
      tracks: toWrite.map(({ n, data }) => ({ n, sha256: sha256(data) })),
    };
    this.writes.push(record);
    this.emit("stripe-written", record);
    return encodeStatusReply("OK");
  }

  /**
   * ISO read: LRC checked, LRC stripped, sentinels kept or not (`readSentinels`). A track with
   * nothing on it answers `ESC +`, one that fails its check `ESC *`; status `1` when any track is
   * bad or none is readable.
   */
  private read(): Buffer {
    const out: Partial<ReadTracks> = {};
    let readable = 0;
    let bad = 0;
    for (const [n, formatted] of this.stripe) {
      const parsed = parseFormattedTrack(n, formatted);
      if (!parsed.ok) {
        bad++;
        out[`track${n}`] = BAD_TRACK;
        continue;
      }
      readable++;
      const spec = TRACK_SPECS[n];
      // A bare `*` would read back as the bad-track mark: such data keeps its sentinels.
      const bare = !this.readSentinels && parsed.value !== "*";
      out[`track${n}`] = dataTrack(bare ? parsed.value : spec.start + parsed.value + spec.end);
    }
    return encodeReadAnswer(out, bad > 0 || readable === 0 ? "READ_WRITE_ERROR" : "OK");
  }

  private answer(via: Via, reply: Buffer, noise: boolean | undefined): void {
    if (via === "serial") {
      if (noise) this.link?.send(this.lineNoise());
      this.link?.send(reply);
      return;
    }
    const handle = this.hidHandle;
    if (!handle?.usable) return;
    if (noise)
      handle.deliver(
        Buffer.concat([this.orphanReport(), ...this.reportsOf(Buffer.concat([this.lineNoise(), reply]))]),
      );
    else handle.deliver(Buffer.concat(this.reportsOf(reply)));
  }

  private reportsOf(message: Buffer): Buffer[] {
    return encodeHidReports(message, this.hidOptions.payloadPerReport);
  }

  /** Random bytes, never ESC: noise must not be able to pass for the start of an answer. */
  private lineNoise(): Buffer {
    const length = 3 + Math.floor(this.random() * 12);
    const noise = Buffer.alloc(length);
    for (let i = 0; i < length; i++) {
      const byte = Math.floor(this.random() * 256);
      noise[i] = byte === ESC ? ESC - 1 : byte;
    }
    return noise;
  }

  /** A whole report without the first-report flag: the host must drop it. */
  private orphanReport(): Buffer {
    const report = Buffer.alloc(HID_REPORT_SIZE);
    for (let i = 0; i < report.length; i++) report[i] = Math.floor(this.random() * 256);
    report[0] = report[0]! & 0x7f;
    return report;
  }
}

/**
 * The device end of an open HID handle, shaped like node-hid's `HID.HID`: `write()` is synchronous
 * and throws once the device is gone; input reports come as `data` events; a vanished device emits
 * `error` once; `close()` removes every listener.
 */
class VirtualHidHandle extends EventEmitter implements HidDeviceHandle {
  private closed = false;
  private dead = false;

  constructor(
    private readonly options: Required<VirtualMsr206HidOptions>,
    private readonly toDevice: (report: Buffer) => void,
  ) {
    super();
  }

  get usable(): boolean {
    return !this.closed && !this.dead;
  }

  write(values: number[] | Buffer): number {
    if (this.closed) throw new Error("Cannot write to a closed HID device");
    if (this.dead) throw new Error("Cannot write to hid device");
    const bytes = Buffer.from(values);
    // Report id 0 + one 64-byte output report, as hidapi wants it for a device without numbered reports.
    if (bytes.length !== HID_REPORT_SIZE + 1 || bytes[0] !== HID_REPORT_ID) {
      throw new Error(`expected report id 0 + ${HID_REPORT_SIZE} bytes, got ${bytes.length} bytes`);
    }
    this.toDevice(bytes);
    return bytes.length;
  }

  close(): void {
    this.closed = true;
    this.removeAllListeners();
  }

  /** Input reports, cut into `bytesPerEvent` pieces, one `data` event per turn of the event loop. */
  deliver(stream: Buffer): void {
    const step = this.options.bytesPerEvent;
    for (let offset = 0; offset < stream.length; offset += step) {
      const piece = Buffer.from(stream.subarray(offset, offset + step));
      setImmediate(() => {
        if (this.usable) this.emit("data", piece);
      });
    }
  }

  /** The device vanished: the pending read fails once, writes throw from now on. */
  fail(): void {
    if (!this.usable) return;
    this.dead = true;
    setImmediate(() => {
      if (!this.closed) this.emit("error", new Error("could not read from HID device"));
    });
  }
}

/** The formatted track with a wrong LRC character (still one the track can hold): it fails its check. */
function withBrokenLrc(n: TrackNumber, formatted: string): string {
  const spec = TRACK_SPECS[n];
  const mask = (1 << spec.dataBits) - 1;
  const lrcCode = formatted.charCodeAt(formatted.length - 1) - spec.offset;
  return formatted.slice(0, -1) + String.fromCharCode(((lrcCode + 1) & mask) + spec.offset);
}

/** Changes the last character to another one valid on every track (and keeps the LRC right). */
function corrupt(data: string): string {
  return data.slice(0, -1) + (data.endsWith("0") ? "1" : "0");
}

function sha256(text: string): string {
  return createHash("sha256").update(text, "latin1").digest("hex");
}
