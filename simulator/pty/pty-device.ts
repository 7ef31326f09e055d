import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { VirtualSerialDevice, VirtualSerialLink } from "../serial/virtual-binding.js";

const BRIDGE = fileURLToPath(new URL("./pty_bridge.py", import.meta.url));

export interface PtyDeviceOptions {
  /**
   * A stable path for the port (a symlink to the pty slave). Without it the path is the slave's
   * `/dev/pts/N`, which changes on every replug.
   */
  linkPath?: string;
  /** Default `python3`. */
  python?: string;
  /** Sees every chunk the host wrote, after the device got it (the crash harness watches commands). */
  onHostBytes?: (bytes: Buffer) => void;
  /** Sees every chunk the device sent towards the host. */
  onDeviceBytes?: (bytes: Buffer) => void;
}

export interface PtyDeviceStats {
  bytesFromHost: number;
  bytesToHost: number;
  /** Bridge processes started: 1 + replugs. */
  bridges: number;
}

/**
 * A `VirtualSerialDevice` (e.g. the VirtualEvolisPrinter) on a real pseudo-terminal, so a host in another
 * process opens it through the OS serial binding (`@serialport/bindings-cpp`) like a USB-serial
 * printer. The device gets the same link contract as under `VirtualSerialBinding`; `unplug()` ends
 * the pty (the host sees a hang-up) and `replug()` makes a new one behind the same `linkPath`.
 *
 * The pty itself lives in `pty_bridge.py`: Node cannot open a pty pair without a native addon.
 */
export class PtyDevice implements VirtualSerialLink {
  readonly stats: PtyDeviceStats = { bytesFromHost: 0, bytesToHost: 0, bridges: 0 };
  private bridge: Bridge | undefined;
  private slavePath = "";
  private closed = false;
  /** A replug started before the previous bridge was gone: the sequence keeps them in order. */
  private cycle: Promise<void> = Promise.resolve();

  private constructor(
    private readonly device: VirtualSerialDevice,
    private readonly options: PtyDeviceOptions,
  ) {}

  /** Starts the pty and attaches `device` to it; resolves once the host can open `path`. */
  static async start(device: VirtualSerialDevice, options: PtyDeviceOptions = {}): Promise<PtyDevice> {
    const pty = new PtyDevice(device, options);
    await pty.startBridge();
    device.attach(pty);
    return pty;
  }

  get path(): string {
    return this.options.linkPath ?? this.slavePath;
  }

  get plugged(): boolean {
    return this.bridge !== undefined;
  }

  send(bytes: Buffer): void {
    const bridge = this.bridge;
    if (!bridge || bytes.length === 0) return;
    this.stats.bytesToHost += bytes.length;
    bridge.child.stdin.write(bytes);
    this.options.onDeviceBytes?.(bytes);
  }

  unplug(): void {
    const bridge = this.bridge;
    if (!bridge) return;
    this.bridge = undefined;
    this.cycle = this.cycle.then(() => bridge.stop());
  }

  replug(): void {
    if (this.bridge || this.closed) return;
    this.cycle = this.cycle.then(() => (this.closed ? undefined : this.startBridge()));
  }

  /** Resolves once a pending unplug/replug has finished. */
  settled(): Promise<void> {
    return this.cycle;
  }

  async close(): Promise<void> {
    this.closed = true;
    const bridge = this.bridge;
    this.bridge = undefined;
    await this.cycle;
    await bridge?.stop();
  }

  private async startBridge(): Promise<void> {
    const args = [BRIDGE, ...(this.options.linkPath ? [this.options.linkPath] : [])];
    const child = spawn(this.options.python ?? "python3", args, { stdio: ["pipe", "pipe", "pipe"] });
    this.stats.bridges++;
    const bridge = new Bridge(child);
    this.slavePath = await bridge.ready;
    bridge.onData = (chunk) => {
      this.stats.bytesFromHost += chunk.length;
      this.device.receive(chunk);
      this.options.onHostBytes?.(chunk);
    };
    bridge.flushEarly();
    // A bridge that dies on its own is a pulled cable.
    void bridge.exited.then(() => {
      if (this.bridge === bridge) this.bridge = undefined;
    });
    this.bridge = bridge;
  }
}

class Bridge {
  readonly ready: Promise<string>;
  readonly exited: Promise<void>;
  onData: ((chunk: Buffer) => void) | undefined;
  private early: Buffer[] = [];
  private stderr = "";

  constructor(readonly child: ChildProcessWithoutNullStreams) {
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    // The harness may be killed mid-write to a bridge that is going away; EPIPE there is harmless.
    child.stdin.on("error", () => undefined);
    child.stderr.on("data", (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString("utf8")).slice(-2000);
    });
    this.ready = new Promise((resolve, reject) => {
      let head = Buffer.alloc(0);
      let path: string | undefined;
      child.stdout.on("data", (chunk: Buffer) => {
        if (path !== undefined) {
          this.deliver(chunk);
          return;
        }
        head = Buffer.concat([head, chunk]);
        const nl = head.indexOf(0x0a);
        if (nl === -1) return;
        path = head.subarray(0, nl).toString("utf8");
        const rest = head.subarray(nl + 1);
        if (rest.length > 0) this.deliver(rest);
        resolve(path);
      });
      child.once("error", reject);
      child.once("exit", (code, signal) => {
        if (path === undefined)
          reject(
            new Error(`pty bridge exited (${signal ?? code}) before opening a pty: ${this.stderr.trim()}`),
          );
      });
    });
  }

  /** Bytes that came before `onData` was set (the host cannot have written any, but be exact). */
  flushEarly(): void {
    const early = this.early;
    this.early = [];
    for (const chunk of early) this.onData?.(chunk);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    // A SIGTERM landing just before the bridge enters select() is only handled at the next event,
    // which may never come (seen ~1 in 900 stops under load). The bridge also exits at stdin EOF,
    // an fd event select() cannot miss: send both.
    this.child.kill("SIGTERM");
    this.child.stdin.end();
    await this.exited;
  }

  private deliver(chunk: Buffer): void {
    if (this.onData) this.onData(chunk);
    else this.early.push(chunk);
  }
}
