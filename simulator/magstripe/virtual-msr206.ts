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
  type BlockTracks,
  ESC,
  encodeCoercivityReply,
  encodeFirmwareReply,
  encodeModelReply,
  encodeReadAnswer,
  encodeStatusReply,
  encodeTestReply,
  type FrameParserStats,
} from "../../drivers/magstripe/msr206-codec.js";
import { type Msr206Command, Msr206CommandParser } from "../../drivers/magstripe/msr206-command-parser.js";
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
  /** Latency and replug timers. Default systemClock. */
  clock?: Clock;
  /** Answer delay of quick commands. Default 0: the next turn of the event loop. */
  commandMs?: number;
  /** Answer delay of write, read and erase (the card passing the head). Default 0. */
  swipeMs?: number;
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
  /** Clock time (ms) of the write. */
  at: number;
  coercivity: Coercivity;
  tracks: Array<{ n: TrackNumber; sha256: string }>;
}

export interface VirtualMsr206Events {
  "stripe-written": [record: StripeWriteRecord];
}

type Via = "serial" | "hid";

interface Outcome {
  reply?: Buffer;
  latency: "commandMs" | "swipeMs";
}

/**
 * A software MSR206 speaking the bytes of docs/devices.md ("Magnetic stripe encoder"), usable as a
 * `VirtualSerialDevice` under `VirtualSerialBinding` (a serial MSR206) and, through `hidBackend()`,
 * as a node-hid device object for `HidTransport` (an MSR605X: 64-byte reports, replies optionally cut
 * into more reports and split across `data` events). A card always sits at the head (in a kiosk the
 * printer positions it): a write or read happens as soon as it is asked. Commands are handled one at
 * a time in arrival order; each answer goes back the way its command came.
 */
export class VirtualMsr206 extends EventEmitter<VirtualMsr206Events> implements VirtualSerialDevice {
  private readonly clock: Clock;
  private readonly latency: { commandMs: number; swipeMs: number };
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
  private hidWrites: Buffer[] = [];
  /** Kinds of the commands received, in order; never their data. */
  readonly commandLog: string[] = [];

  constructor(options: VirtualMsr206Options = {}) {
    super();
    this.clock = options.clock ?? systemClock;
    this.latency = { commandMs: options.commandMs ?? 0, swipeMs: options.swipeMs ?? 0 };
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

  /** A fresh, blank card at the head. */
  newCard(): void {
    this.stripe.clear();
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
    for (const command of commands) this.queue.push({ command, via });
    this.pump();
  }

  private pump(): void {
    if (this.busy) return;
    const next = this.queue.shift();
    if (!next) return;
    this.busy = true;
    const { reply, latency, noise } = this.handle(next.command);
    const finish = (): void => {
      if (reply && this.plugged) this.answer(next.via, reply, noise);
      this.busy = false;
      this.pump();
    };
    const ms = this.latency[latency];
    if (ms > 0) this.clock.setTimeout(finish, ms);
    else setImmediate(finish);
  }

  private handle(command: Msr206Command): Outcome & { noise?: boolean } {
    this.commandLog.push(command.kind);
    const fired = fireMsr206Faults(this.faults, command.kind);
    const firedOf = (kind: Msr206FaultEffect["kind"]) => fired.find((f) => f.effect.kind === kind);
    const unplug = firedOf("unplug");
    if (unplug) {
      this.unplug();
      this.clock.setTimeout(() => this.replug(), unplug.options.replugAfterMs ?? 1000);
      return { latency: "commandMs" };
    }
    if (firedOf("swallow")) return { latency: "commandMs" };
    const outcome = this.execute(command, {
      writeError: firedOf("write-error") !== undefined,
      corruptWrite: firedOf("corrupt-write") !== undefined,
    });
    return firedOf("noise") ? { ...outcome, noise: true } : outcome;
  }

  private execute(command: Msr206Command, flags: { writeError: boolean; corruptWrite: boolean }): Outcome {
    const quick = (reply: Buffer): Outcome => ({ reply, latency: "commandMs" });
    switch (command.kind) {
      case "reset":
        return { latency: "commandMs" };
      case "test":
        return quick(encodeTestReply());
      case "hico":
      case "loco":
        this.coercivity = command.kind === "hico" ? "HICO" : "LOCO";
        return quick(encodeStatusReply("OK"));
      case "coercivity":
        return quick(encodeCoercivityReply(this.coercivity));
      case "model":
        return quick(encodeModelReply(this.model));
      case "firmware":
        return quick(encodeFirmwareReply(this.firmware));
      case "readIso":
        return { reply: this.read(), latency: "swipeMs" };
      case "writeIso":
        return { reply: this.write(command.tracks, flags), latency: "swipeMs" };
      case "erase":
        for (const n of command.tracks) this.stripe.delete(n);
        return { reply: encodeStatusReply("OK"), latency: "swipeMs" };
      case "unknown":
        return quick(encodeStatusReply("INVALID_COMMAND"));
      case "malformed":
        return quick(encodeStatusReply("COMMAND_FORMAT_ERROR"));
    }
  }

  /** ISO write: the device adds sentinels and LRC. An empty track in the block is left as it is. */
  private write(tracks: BlockTracks, flags: { writeError: boolean; corruptWrite: boolean }): Buffer {
    const toWrite: Array<{ n: TrackNumber; data: string }> = [];
    for (const n of [1, 2, 3] as const) {
      const data = tracks[`track${n}`];
      if (data === "") continue;
      if (!isEncodableTrack(n, data)) return encodeStatusReply("COMMAND_FORMAT_ERROR");
      toWrite.push({ n, data: flags.corruptWrite ? corrupt(data) : data });
    }
    if (toWrite.length === 0) return encodeStatusReply("COMMAND_FORMAT_ERROR");
    if (flags.writeError) return encodeStatusReply("READ_WRITE_ERROR");
    for (const { n, data } of toWrite) this.stripe.set(n, formatTrack(n, data));
    const record: StripeWriteRecord = {
      serial: this.writes.length + 1,
      at: this.clock.now(),
      coercivity: this.coercivity,
      tracks: toWrite.map(({ n, data }) => ({ n, sha256: sha256(data) })),
    };
    this.writes.push(record);
    this.emit("stripe-written", record);
    return encodeStatusReply("OK");
  }

  /** ISO read: LRC checked, LRC stripped, sentinels kept or not (`readSentinels`). */
  private read(): Buffer {
    const out: Partial<BlockTracks> = {};
    let readable = 0;
    let bad = 0;
    for (const [n, formatted] of this.stripe) {
      const parsed = parseFormattedTrack(n, formatted);
      if (!parsed.ok) {
        bad++;
        continue;
      }
      readable++;
      const spec = TRACK_SPECS[n];
      out[`track${n}`] = this.readSentinels ? spec.start + parsed.value + spec.end : parsed.value;
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

/** Changes the last character to another one valid on every track (and keeps the LRC right). */
function corrupt(data: string): string {
  return data.slice(0, -1) + (data.endsWith("0") ? "1" : "0");
}

function sha256(text: string): string {
  return createHash("sha256").update(text, "latin1").digest("hex");
}
