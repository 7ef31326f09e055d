import { close as closeFd, constants, fstat, open as openFd, read, type Stats, write } from "node:fs";
import { type Logger, silentLogger } from "../../agent/log/logger.js";
import { DeviceError } from "../device-fault.js";
import type { Transport, TransportCloseInfo } from "./transport.js";
import { errorMessage, TransportListeners } from "./transport-listeners.js";

export interface DeviceFileTransportOptions {
  /** The device file, e.g. `/dev/usb/lp0` (Linux USB printer class) or a pty standing in for it. */
  path: string;
  logger?: Logger;
  /**
   * How long to wait before reading again when nothing came, or writing again when the device
   * took nothing (EAGAIN). Default 5.
   */
  pollMs?: number;
}

const DEFAULT_POLL_MS = 5;
/** The most one read takes: more than a printer says at once; a read returns what is there. */
const READ_CHUNK = 64 * 1024;
// O_NOCTTY: a tty standing in for the device (a pty in tests) must never become our controlling
// terminal. Node adds O_CLOEXEC itself, so child processes (the pty bridge) do not inherit the fd.
const OPEN_FLAGS = constants.O_RDWR | (constants.O_NOCTTY ?? 0) | constants.O_NONBLOCK;

/**
 * `Transport` over a device file read and written on one descriptor: the Linux USB printer class
 * (`/dev/usb/lpN`, the `usblp` driver) for Evolis printers on USB.
 *
 * The descriptor is non-blocking and polled. A blocking `fs.read` would occupy a libuv thread-pool
 * thread until the device spoke, and `close()` cannot interrupt it; the pool is also where panels are
 * rendered. So each read returns at once: data is handed on and read again at once, EAGAIN waits
 * `pollMs`. Every `fs.read`/`fs.write` still runs on the pool, so the descriptor is closed only after
 * the operation in flight has returned: closing under it would let a recycled fd number be read.
 *
 * The device going away shows as a read or write error (usblp: ENODEV; a pty slave whose master
 * closed: EIO on write). A pty slave that was hung up reads 0 bytes rather than failing, whereas
 * usblp reads 0 bytes for a zero-length packet from a live printer; so a 0-byte read is followed by
 * a 0-byte write, which fails only on a device that is gone.
 */
export class DeviceFileTransport implements Transport {
  readonly description: string;
  private readonly path: string;
  private readonly pollMs: number;
  private readonly logger: Logger;
  private readonly listeners: TransportListeners;
  private session: Session | undefined;
  private opening: Promise<void> | undefined;

  constructor(options: DeviceFileTransportOptions) {
    this.path = options.path;
    this.pollMs = options.pollMs ?? DEFAULT_POLL_MS;
    this.description = `usb:${options.path}`;
    this.logger = (options.logger ?? silentLogger).child({ transport: this.description });
    this.listeners = new TransportListeners(this.logger);
  }

  get isOpen(): boolean {
    return this.session !== undefined && !this.session.ending;
  }

  open(): Promise<void> {
    if (this.isOpen) return Promise.resolve();
    // Concurrent callers share one attempt rather than opening the device twice (usblp allows one).
    this.opening ??= this.openSession().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  private async openSession(): Promise<void> {
    // A session still closing holds the descriptor; the device may refuse a second one (EBUSY).
    if (this.session) await this.session.ended;
    const path = this.path;
    let fd: number;
    try {
      fd = await new Promise<number>((resolve, reject) => {
        openFd(path, OPEN_FLAGS, (err, opened) => (err ? reject(err) : resolve(opened)));
      });
    } catch (err) {
      throw this.absent(`cannot open ${path}`, err);
    }
    try {
      const stats = await new Promise<Stats>((resolve, reject) => {
        fstat(fd, (err, s) => (err ? reject(err) : resolve(s)));
      });
      // Writing to an absent /dev/usb/lp0 as root leaves a regular file there: not a printer.
      if (stats.isFile() || stats.isDirectory()) throw new Error(`${path} is not a device`);
    } catch (err) {
      await closeQuietly(fd);
      throw this.absent(`cannot open ${path}`, err);
    }
    const session = new Session(fd);
    this.session = session;
    session.reading = this.readLoop(session);
  }

  async close(): Promise<void> {
    const session = this.session;
    if (!session) return;
    await this.finish(session, false);
  }

  write(data: Buffer): Promise<void> {
    const session = this.session;
    if (!session || session.ending) return Promise.reject(this.absent(`${this.path} is not open`));
    // One write at a time, in call order: a bitmap frame is many partial writes and another
    // caller's bytes must not land between them.
    const job = session.writes.then(() => this.writeAll(session, data));
    session.writes = job.catch(() => undefined);
    return job;
  }

  onData(listener: (chunk: Buffer) => void): () => void {
    return this.listeners.onData(listener);
  }

  onClose(listener: (info: TransportCloseInfo) => void): () => void {
    return this.listeners.onClose(listener);
  }

  private async readLoop(session: Session): Promise<void> {
    const buffer = Buffer.allocUnsafe(READ_CHUNK);
    while (!session.ending) {
      let n: number;
      try {
        n = await readFd(session.fd, buffer);
      } catch (err) {
        const code = errnoOf(err);
        if (code === "EINTR") continue;
        if (code === "EAGAIN" || code === "EWOULDBLOCK") {
          await session.sleep(this.pollMs);
          continue;
        }
        // Anything else (EIO, ENODEV, ENXIO, EBADF, EINVAL from a printer without a read channel):
        // the device cannot be read any more. Treating it as gone beats spinning on it.
        this.gone(session, "read", err);
        return;
      }
      if (session.ending) return;
      if (n > 0) {
        this.listeners.emitData(Buffer.from(buffer.subarray(0, n)));
        continue;
      }
      if (await this.vanished(session)) return;
      await session.sleep(this.pollMs);
    }
  }

  /** After a 0-byte read: is this end of file (a hung-up tty) or just a zero-length packet? */
  private async vanished(session: Session): Promise<boolean> {
    try {
      await writeFd(session.fd, Buffer.alloc(0), 0);
      return false;
    } catch (err) {
      const code = errnoOf(err);
      if (code === "EAGAIN" || code === "EWOULDBLOCK" || code === "EINTR") return false;
      this.gone(session, "probe", err);
      return true;
    }
  }

  private async writeAll(session: Session, data: Buffer): Promise<void> {
    let offset = 0;
    while (offset < data.length) {
      if (session.ending) throw this.absent(`${this.path} closed before the write completed`);
      let n: number;
      try {
        n = await writeFd(session.fd, data, offset);
      } catch (err) {
        const code = errnoOf(err);
        if (code === "EINTR") continue;
        if (code === "EAGAIN" || code === "EWOULDBLOCK") {
          await session.sleep(this.pollMs);
          continue;
        }
        this.gone(session, "write", err);
        throw this.absent(`write to ${this.path} failed`, err);
      }
      offset += n;
      // A device taking nothing without saying EAGAIN is full all the same; never spin on it.
      if (n === 0) await session.sleep(this.pollMs);
    }
  }

  private gone(session: Session, operation: string, err: unknown): void {
    if (session.ending) return;
    this.logger.warn({ operation, errno: errnoOf(err) }, "device file failed; device gone");
    // Not awaited: finish() waits for this read loop or write to return first.
    void this.finish(session, true);
  }

  /**
   * Ends a session once: stops the loop, waits for the read and write in flight to return (queued
   * writes reject), closes the descriptor, then tells the listeners. The event comes after the fd
   * is closed so a listener may re-open at once.
   */
  private finish(session: Session, disconnected: boolean): Promise<void> {
    if (session.ending) return session.ended;
    session.ending = true;
    session.wake();
    void (async () => {
      await session.reading.catch((err) =>
        this.logger.error({ err: errorMessage(err) }, "device file read loop failed"),
      );
      await session.writes;
      await closeQuietly(session.fd, (err) =>
        this.logger.debug({ errno: errnoOf(err) }, "closing the device file failed"),
      );
      if (this.session === session) this.session = undefined;
      if (disconnected) this.logger.warn("device disconnected");
      this.listeners.emitClose({ disconnected });
      session.markEnded();
    })();
    return session.ended;
  }

  private absent(message: string, cause?: unknown): DeviceError {
    return new DeviceError("DEVICE_DISCONNECTED", message, {
      device: this.path,
      ...(cause === undefined ? {} : { cause }),
    });
  }
}

/** One open descriptor and the work running on it. */
class Session {
  ending = false;
  /** The read loop; resolves when it has stopped touching the fd. */
  reading: Promise<void> = Promise.resolve();
  /** Tail of the write queue; never rejects. */
  writes: Promise<void> = Promise.resolve();
  readonly ended: Promise<void>;
  markEnded!: () => void;
  private readonly sleepers = new Set<() => void>();

  constructor(readonly fd: number) {
    this.ended = new Promise<void>((resolve) => {
      this.markEnded = resolve;
    });
  }

  /** Waits `ms`, or less when the session ends, so close() does not wait out a poll interval. */
  sleep(ms: number): Promise<void> {
    if (this.ending) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }

  wake(): void {
    for (const done of [...this.sleepers]) done();
  }
}

function readFd(fd: number, buffer: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buffer, 0, buffer.length, null, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function writeFd(fd: number, data: Buffer, offset: number): Promise<number> {
  return new Promise((resolve, reject) => {
    write(fd, data, offset, data.length - offset, null, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function closeQuietly(fd: number, onError?: (err: unknown) => void): Promise<void> {
  return new Promise((resolve) => {
    closeFd(fd, (err) => {
      if (err) onError?.(err);
      resolve();
    });
  });
}

function errnoOf(err: unknown): string | undefined {
  const code = typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === "string" ? code : undefined;
}
