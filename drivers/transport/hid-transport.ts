import { type Logger, silentLogger } from "../../agent/log/logger.js";
import { DeviceError } from "../device-fault.js";
import {
  encodeHidOutput,
  HidReassembler,
  type HidReassemblerStats,
  MSR605X_PRODUCT_ID,
  MSR605X_VENDOR_ID,
} from "../magstripe/hid-framing.js";
import type { Transport, TransportCloseInfo } from "./transport.js";
import { errorMessage, TransportListeners } from "./transport-listeners.js";

/** What `HID.devices()` lists; the subset of node-hid's `Device` this transport reads. */
export interface HidDeviceInfo {
  vendorId: number;
  productId: number;
  path?: string | undefined;
  product?: string | undefined;
  serialNumber?: string | undefined;
  interface?: number | undefined;
}

/**
 * An open HID device: the subset of node-hid's `HID.HID` used here, so a simulated device object
 * can stand in for it. As in node-hid: `write()` is synchronous and throws when the device is gone;
 * `data` delivers input reports; `error` means reading failed (typically: unplugged) and reading
 * stopped; `close()` releases the device and removes every listener.
 */
export interface HidDeviceHandle {
  write(values: number[] | Buffer): number;
  on(event: "data", listener: (data: Buffer) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  close(): void;
}

/** node-hid, or a simulator, as the transport sees it. */
export interface HidBackend {
  devices(): HidDeviceInfo[];
  open(path: string): HidDeviceHandle;
}

/**
 * node-hid, loaded on first use: importing this module must work on a machine without the native
 * addon or libusb (tests, the simulator, a kiosk configured with another encoder).
 */
export async function loadNodeHid(): Promise<HidBackend> {
  // A CommonJS package: Node hands its `module.exports` over as the default export.
  const { default: hid } = await import("node-hid");
  return {
    devices: () => hid.devices(),
    open: (path) => new hid.HID(path),
  };
}

export interface HidTransportOptions {
  /** A hidraw / IOKit path. Without it the first device with `vendorId`/`productId` is opened. */
  path?: string;
  /** Default 0x0801 (MSR605X). */
  vendorId?: number;
  /** Default 0x0003 (MSR605X). */
  productId?: number;
  /** Default `loadNodeHid`. Tests and the simulator pass a backend or a loader. */
  backend?: HidBackend | (() => Promise<HidBackend>);
  /** Input reassembly: the longest message accepted. Default 4096. */
  maxMessageBytes?: number;
  logger?: Logger;
}

export interface HidTransportStats extends HidReassemblerStats {
  /** Output reports written. */
  reportsWritten: number;
}

/**
 * `Transport` over a USB HID device speaking MSR605X framing (`drivers/magstripe/hid-framing.ts`).
 * `write()` takes protocol bytes and sends them as 64-byte reports; `data` listeners get whole
 * reassembled messages. A read error or a failed write is the device going away: the transport
 * closes with `disconnected: true`; nothing is thrown out of node-hid's callbacks.
 */
export class HidTransport implements Transport {
  readonly description: string;
  private readonly options: HidTransportOptions;
  private readonly logger: Logger;
  private readonly vendorId: number;
  private readonly productId: number;
  private readonly reassembler: HidReassembler;
  private readonly listeners: TransportListeners;
  private backend: HidBackend | undefined;
  private session: HidSession | undefined;
  private opening: Promise<void> | undefined;
  private reportsWritten = 0;

  constructor(options: HidTransportOptions = {}) {
    this.options = options;
    this.vendorId = options.vendorId ?? MSR605X_VENDOR_ID;
    this.productId = options.productId ?? MSR605X_PRODUCT_ID;
    this.description = options.path
      ? `hid:${options.path}`
      : `hid:${hex4(this.vendorId)}:${hex4(this.productId)}`;
    this.logger = (options.logger ?? silentLogger).child({ transport: this.description });
    this.listeners = new TransportListeners(this.logger);
    this.reassembler = new HidReassembler(
      options.maxMessageBytes === undefined ? {} : { maxMessageBytes: options.maxMessageBytes },
    );
  }

  get isOpen(): boolean {
    return this.session !== undefined;
  }

  get stats(): HidTransportStats {
    return { ...this.reassembler.stats, reportsWritten: this.reportsWritten };
  }

  open(): Promise<void> {
    if (this.session) return Promise.resolve();
    this.opening ??= this.openSession().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  private async openSession(): Promise<void> {
    const backend = await this.loadBackend();
    const path = this.options.path ?? this.findPath(backend);
    let handle: HidDeviceHandle;
    try {
      handle = backend.open(path);
    } catch (err) {
      throw this.absent(`cannot open ${this.description}`, err);
    }
    const session = new HidSession(handle);
    this.session = session;
    this.reassembler.reset();
    handle.on("data", (data: Buffer) => this.onInput(session, data));
    handle.on("error", (error: Error) => {
      if (this.session !== session) return;
      this.logger.warn({ err: error?.message }, "HID read failed; device gone");
      this.endSession(session, true);
    });
  }

  async close(): Promise<void> {
    const session = this.session;
    if (!session) return;
    this.endSession(session, false);
  }

  async write(data: Buffer): Promise<void> {
    const session = this.session;
    if (!session) throw this.absent(`${this.description} is not open`);
    if (data.length === 0) return;
    // node-hid writes synchronously, so one call's reports never interleave with another's.
    for (const report of encodeHidOutput(data)) {
      let written: number;
      try {
        written = session.handle.write(report);
      } catch (err) {
        this.logger.warn({ err: errorMessage(err) }, "HID write failed; device gone");
        this.endSession(session, true);
        throw this.absent(`write to ${this.description} failed`, err);
      }
      if (written < 0) {
        this.endSession(session, true);
        throw this.absent(`write to ${this.description} failed`);
      }
      this.reportsWritten++;
    }
  }

  onData(listener: (chunk: Buffer) => void): () => void {
    return this.listeners.onData(listener);
  }

  onClose(listener: (info: TransportCloseInfo) => void): () => void {
    return this.listeners.onClose(listener);
  }

  private async loadBackend(): Promise<HidBackend> {
    if (this.backend) return this.backend;
    const source = this.options.backend ?? loadNodeHid;
    try {
      this.backend = typeof source === "function" ? await source() : source;
    } catch (err) {
      throw this.absent("node-hid is not available on this machine", err);
    }
    return this.backend;
  }

  private findPath(backend: HidBackend): string {
    let list: HidDeviceInfo[];
    try {
      list = backend.devices();
    } catch (err) {
      throw this.absent("cannot list HID devices", err);
    }
    const match = list.find((d) => d.vendorId === this.vendorId && d.productId === this.productId && d.path);
    if (!match?.path) throw this.absent(`no HID device ${hex4(this.vendorId)}:${hex4(this.productId)}`);
    return match.path;
  }

  private onInput(session: HidSession, data: Buffer): void {
    if (this.session !== session) return;
    // A throwing listener inside node-hid's read callback would come back as an `error` event,
    // which means "unplugged" here: TransportListeners keeps it a listener bug.
    for (const message of this.reassembler.push(Buffer.from(data))) this.listeners.emitData(message);
  }

  private endSession(session: HidSession, disconnected: boolean): void {
    if (this.session !== session) return;
    this.session = undefined;
    try {
      session.handle.close();
    } catch (err) {
      // Closing a device that is already gone may fail; it is closed either way.
      this.logger.debug({ err: errorMessage(err) }, "HID close failed");
    }
    this.reassembler.reset();
    if (disconnected) this.logger.warn("HID device disconnected");
    this.listeners.emitClose({ disconnected });
  }

  private absent(message: string, cause?: unknown): DeviceError {
    return new DeviceError("DEVICE_DISCONNECTED", message, {
      device: this.description,
      ...(cause === undefined ? {} : { cause }),
    });
  }
}

class HidSession {
  constructor(readonly handle: HidDeviceHandle) {}
}

function hex4(n: number): string {
  return n.toString(16).padStart(4, "0");
}
