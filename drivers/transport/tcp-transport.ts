import { connect, type Socket } from "node:net";
import { type Logger, silentLogger } from "../../agent/log/logger.js";
import { DeviceError } from "../device-fault.js";
import type { Transport, TransportCloseInfo } from "./transport.js";
import { TransportListeners } from "./transport-listeners.js";

export interface TcpTransportOptions {
  host: string;
  port: number;
  /** How long a connection attempt may take before open() gives up. Default 5000. */
  connectTimeoutMs?: number;
  logger?: Logger;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
/** Idle time before the first keep-alive probe: a printer switched off mid-session is noticed. */
const KEEPALIVE_MS = 10_000;

/**
 * `Transport` over a TCP connection to a network printer (Evolis printers listen on a raw port).
 * Each `open()` makes a new socket: a Node socket that ended cannot be reused. A refused or timed-out
 * connection rejects `open()`; once connected, a socket error or the printer closing its end is the
 * device going away (`close` with `disconnected: true`), never an uncaught error.
 */
export class TcpTransport implements Transport {
  readonly description: string;
  private readonly options: TcpTransportOptions;
  private readonly logger: Logger;
  private readonly listeners: TransportListeners;
  private session: Session | undefined;
  private opening: Promise<void> | undefined;

  constructor(options: TcpTransportOptions) {
    this.options = options;
    this.description = `tcp:${options.host}:${options.port}`;
    this.logger = (options.logger ?? silentLogger).child({ transport: this.description });
    this.listeners = new TransportListeners(this.logger);
  }

  get isOpen(): boolean {
    return this.session !== undefined && !this.session.closeRequested && !this.session.socket.destroyed;
  }

  open(): Promise<void> {
    if (this.isOpen) return Promise.resolve();
    // Concurrent callers share one attempt: a printer serves one connection at a time.
    this.opening ??= this.openSession().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  private async openSession(): Promise<void> {
    // A session still closing holds the printer's one connection.
    if (this.session) await this.session.ended;
    const { host, port } = this.options;
    const timeoutMs = this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    let socket: Socket;
    try {
      socket = connect({ host, port });
    } catch (err) {
      // A malformed port or host throws synchronously; it is still "cannot reach the printer".
      throw this.absent(`cannot connect to ${host}:${port}`, err);
    }
    // Attached for the socket's whole life: an `error` without a listener is an uncaught exception.
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (this.session?.socket === socket) this.logger.warn({ errno: err.code }, "TCP connection failed");
    });
    await new Promise<void>((resolve, reject) => {
      const fail = (reason: string, cause?: unknown) => {
        socket.off("connect", connected);
        socket.destroy();
        reject(this.absent(`cannot connect to ${host}:${port}: ${reason}`, cause));
      };
      const connected = () => {
        socket.off("error", failed);
        socket.off("timeout", timedOut);
        socket.setTimeout(0);
        resolve();
      };
      const failed = (err: NodeJS.ErrnoException) => fail(err.code ?? err.message, err);
      const timedOut = () => fail(`no answer in ${timeoutMs} ms`);
      // An idle timeout on a socket that is still connecting is a connect timeout, on the socket's
      // own timer.
      socket.setTimeout(timeoutMs);
      socket.once("connect", connected);
      socket.once("error", failed);
      socket.once("timeout", timedOut);
    });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_MS);
    const session = new Session(socket);
    this.session = session;
    socket.on("data", (chunk: Buffer) => {
      if (this.session === session) this.listeners.emitData(chunk);
    });
    // The printer closing its end (`end`) makes Node end ours too (allowHalfOpen is off), and an
    // error destroys the socket: either way `close` follows, once.
    socket.once("close", (hadError: boolean) => {
      this.endSession(session, hadError || !session.closeRequested);
    });
  }

  async close(): Promise<void> {
    const session = this.session;
    if (!session) return;
    if (!session.closeRequested) {
      session.closeRequested = true;
      const { socket } = session;
      // Flush what was written, send FIN, then release the socket without waiting for the printer
      // to close its end (it may never). A printer that stopped reading would hold the flush
      // forever: after a connect timeout's worth of silence the rest is dropped.
      socket.setTimeout(this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, () => socket.destroy());
      socket.end(() => socket.destroy());
    }
    await session.ended;
  }

  write(data: Buffer): Promise<void> {
    const session = this.session;
    if (!session || session.closeRequested || !session.socket.writable) {
      return Promise.reject(this.absent(`${this.description} is not open`));
    }
    return new Promise<void>((resolve, reject) => {
      // The callback runs once the bytes are in the kernel's send buffer, or with an error when the
      // socket is destroyed first.
      session.socket.write(data, (err) =>
        err ? reject(this.absent(`write to ${this.description} failed`, err)) : resolve(),
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
    if (this.session !== session) return;
    this.session = undefined;
    if (disconnected) this.logger.warn("TCP connection lost");
    this.listeners.emitClose({ disconnected });
    session.markEnded();
  }

  private absent(message: string, cause?: unknown): DeviceError {
    return new DeviceError("DEVICE_DISCONNECTED", message, {
      device: this.description,
      ...(cause === undefined ? {} : { cause }),
    });
  }
}

class Session {
  closeRequested = false;
  readonly ended: Promise<void>;
  markEnded!: () => void;

  constructor(readonly socket: Socket) {
    this.ended = new Promise<void>((resolve) => {
      this.markEnded = resolve;
    });
  }
}
