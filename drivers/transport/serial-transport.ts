import type { BindingInterface } from "@serialport/bindings-interface";
import { SerialPortStream } from "@serialport/stream";
import { type Logger, silentLogger } from "../../agent/log/logger.js";
import { DeviceError } from "../device-fault.js";
import type { Transport, TransportCloseInfo } from "./transport.js";
import { TransportListeners } from "./transport-listeners.js";

export interface SerialTransportOptions {
  path: string;
  baudRate: number;
  /** `autoDetect()` from `@serialport/bindings-cpp` on a kiosk, `VirtualSerialBinding` in the simulator. */
  binding: BindingInterface;
  logger?: Logger;
}

/**
 * `Transport` over node-serialport's `SerialPortStream`. Each `open()` builds a fresh stream: a Node
 * stream that saw a write error is destroyed for good, and a replugged device needs a new one anyway.
 */
export class SerialTransport implements Transport {
  readonly description: string;
  private readonly options: SerialTransportOptions;
  private readonly logger: Logger;
  private readonly listeners: TransportListeners;
  private session: Session | undefined;
  private opening: Promise<void> | undefined;

  constructor(options: SerialTransportOptions) {
    this.options = options;
    this.description = `serial:${options.path}`;
    this.logger = (options.logger ?? silentLogger).child({ transport: this.description });
    this.listeners = new TransportListeners(this.logger);
  }

  get isOpen(): boolean {
    return this.session?.stream.isOpen ?? false;
  }

  open(): Promise<void> {
    if (this.session) return Promise.resolve();
    // Concurrent callers share one attempt rather than racing two streams onto one port.
    this.opening ??= this.openSession().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  private async openSession(): Promise<void> {
    const { path, baudRate, binding } = this.options;
    const stream = new SerialPortStream({ binding, path, baudRate, autoOpen: false });
    // Without a listener a late stream error (a write failing as the port vanishes) would be uncaught.
    stream.on("error", (err: Error) => this.logger.warn({ err: err.message }, "serial stream error"));
    await new Promise<void>((resolve, reject) => {
      stream.open((err) =>
        err
          ? reject(
              new DeviceError("DEVICE_DISCONNECTED", `cannot open ${path}`, { device: path, cause: err }),
            )
          : resolve(),
      );
    });
    const session = new Session(stream);
    this.session = session;
    stream.on("data", (chunk: Buffer) => {
      if (this.session !== session) return;
      this.listeners.emitData(chunk);
    });
    stream.on("close", (err?: Error | null) => {
      const disconnected = isDisconnect(err) || !session.closeRequested;
      this.endSession(session, disconnected);
    });
  }

  async close(): Promise<void> {
    const session = this.session;
    if (!session) return;
    session.closeRequested = true;
    session.stream.close((err) => {
      // The stream reports a disconnect as the close callback's argument; anything else means the
      // binding refused to close and no `close` event will follow.
      if (err && !isDisconnect(err) && !session.stream.closing) this.endSession(session, false);
    });
    await session.ended;
  }

  write(data: Buffer): Promise<void> {
    const session = this.session;
    const path = this.options.path;
    if (!session?.stream.isOpen) {
      return Promise.reject(new DeviceError("DEVICE_DISCONNECTED", `${path} is not open`, { device: path }));
    }
    return new Promise<void>((resolve, reject) => {
      session.stream.write(data, (err) =>
        err
          ? reject(
              new DeviceError("DEVICE_DISCONNECTED", `write to ${path} failed`, { device: path, cause: err }),
            )
          : resolve(),
      );
    });
  }

  onData(listener: (chunk: Buffer) => void): () => void {
    return this.listeners.onData(listener);
  }

  onClose(listener: (info: TransportCloseInfo) => void): () => void {
    return this.listeners.onClose(listener);
  }

  private endSession(session: Session, disconnected: boolean): void {
    // A destroyed Duplex emits `close` a second time; one open gets one close.
    if (this.session !== session) return;
    this.session = undefined;
    if (disconnected) this.logger.warn("serial port disconnected");
    this.listeners.emitClose({ disconnected });
    session.markEnded();
  }
}

class Session {
  closeRequested = false;
  readonly ended: Promise<void>;
  markEnded!: () => void;

  constructor(readonly stream: SerialPortStream) {
    this.ended = new Promise<void>((resolve) => {
      this.markEnded = resolve;
    });
  }
}

function isDisconnect(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { disconnected?: unknown }).disconnected === true;
}
