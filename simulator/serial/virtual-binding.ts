import type {
  BindingInterface,
  BindingPortInterface,
  OpenOptions,
  PortInfo,
  PortStatus,
  SetOptions,
  UpdateOptions,
} from "@serialport/bindings-interface";

/**
 * A software device on the far end of a virtual serial line. It gets the host's bytes through
 * `receive()` and talks back through the link handed to `attach()`.
 */
export interface VirtualSerialDevice {
  attach(link: VirtualSerialLink): void;
  /** Bytes the host wrote, cut at arbitrary points. */
  receive(bytes: Buffer): void;
}

/** The device's end of the line. */
export interface VirtualSerialLink {
  readonly path: string;
  /** Queues bytes for the host; dropped while the host has the port closed, as on a real UART. */
  send(bytes: Buffer): void;
  /** The cable is pulled: the host's pending read fails as a disconnect, later opens fail. */
  unplug(): void;
  replug(): void;
  readonly plugged: boolean;
}

export interface PlugOptions {
  /** Keep every byte the host writes, for tests that assert on the wire. */
  record?: boolean;
  /** What `list()` reports besides the path, e.g. USB ids. */
  info?: Partial<Omit<PortInfo, "path">>;
}

export interface VirtualPortStats {
  bytesFromHost: number;
  bytesToHost: number;
  opens: number;
}

/** Rejection of an in-progress read or write because the host closed the port. */
export class CanceledError extends Error {
  readonly canceled = true;
}

/**
 * Rejection because the device went away. @serialport/stream treats any read/write error without
 * `canceled` as a disconnect and closes itself with a `DisconnectedError`; `disconnected` is set
 * here as well so code that looks at the binding error directly sees the same thing.
 */
export class VirtualDisconnectError extends Error {
  readonly disconnected = true;
}

interface PortEntry {
  path: string;
  device: VirtualSerialDevice;
  plugged: boolean;
  record: boolean;
  recording: Buffer[];
  info: PortInfo;
  stats: VirtualPortStats;
  /** The host's open handle, if any: one at a time (ports are exclusive, like `lock: true`). */
  open: VirtualPortBinding | undefined;
}

/**
 * A serialport `BindingInterface` whose ports are software devices, so the agent's real
 * `SerialPortStream` code runs unchanged against the simulator. Honours the binding contract:
 * open of an unknown or unplugged path rejects, a port opens once at a time, writes never overlap,
 * reads pend until data arrives and reject with `canceled` on close or `disconnected` on unplug.
 */
export class VirtualSerialBinding implements BindingInterface<VirtualPortBinding> {
  private readonly ports = new Map<string, PortEntry>();

  /** Connects `device` at `path` (e.g. `/dev/ttyVIRT0`) and hands it its link. */
  plug(path: string, device: VirtualSerialDevice, options: PlugOptions = {}): void {
    if (this.ports.has(path)) throw new Error(`${path} already has a device`);
    const entry: PortEntry = {
      path,
      device,
      plugged: true,
      record: options.record ?? false,
      recording: [],
      info: {
        path,
        manufacturer: "kiosk-agent simulator",
        serialNumber: undefined,
        pnpId: undefined,
        locationId: undefined,
        productId: undefined,
        vendorId: undefined,
        ...options.info,
      },
      stats: { bytesFromHost: 0, bytesToHost: 0, opens: 0 },
      open: undefined,
    };
    this.ports.set(path, entry);
    device.attach({
      path,
      send: (bytes) => entry.open?.deliver(bytes),
      unplug: () => this.unplug(path),
      replug: () => this.replug(path),
      get plugged() {
        return entry.plugged;
      },
    });
  }

  /** Pulls the cable: the open port (if any) sees a disconnect; opens fail until `replug()`. */
  unplug(path: string): void {
    const entry = this.entry(path);
    if (!entry.plugged) return;
    entry.plugged = false;
    entry.open?.disconnect();
  }

  replug(path: string): void {
    this.entry(path).plugged = true;
  }

  isPlugged(path: string): boolean {
    return this.entry(path).plugged;
  }

  stats(path: string): VirtualPortStats {
    return { ...this.entry(path).stats };
  }

  /** Host-to-device bytes so far: the wire cost of what the agent sent. */
  bytesFromHost(path: string): number {
    return this.entry(path).stats.bytesFromHost;
  }

  /** Everything the host wrote since plug (or the last call), when plugged with `record: true`. */
  takeRecording(path: string): Buffer {
    const entry = this.entry(path);
    const all = Buffer.concat(entry.recording);
    entry.recording = [];
    return all;
  }

  async list(): Promise<PortInfo[]> {
    return [...this.ports.values()].filter((p) => p.plugged).map((p) => ({ ...p.info }));
  }

  async open(options: OpenOptions): Promise<VirtualPortBinding> {
    if (!options?.path) throw new TypeError('"path" is not a valid port');
    if (!options.baudRate) throw new TypeError('"baudRate" is not a valid baudRate');
    await nextTick();
    const entry = this.ports.get(options.path);
    if (!entry) throw new Error(`no such port: ${options.path}`);
    if (!entry.plugged) throw new Error(`device not present: ${options.path}`);
    if (entry.open) throw new Error(`port is locked: ${options.path}`);
    const openOptions: Required<OpenOptions> = {
      dataBits: 8,
      lock: true,
      stopBits: 1,
      parity: "none",
      rtscts: false,
      xon: false,
      xoff: false,
      xany: false,
      hupcl: true,
      ...options,
    };
    const port = new VirtualPortBinding(openOptions, {
      toDevice: (bytes) => {
        entry.stats.bytesFromHost += bytes.length;
        if (entry.record) entry.recording.push(Buffer.from(bytes));
        entry.device.receive(bytes);
      },
      counted: (n) => {
        entry.stats.bytesToHost += n;
      },
      released: () => {
        if (entry.open === port) entry.open = undefined;
      },
    });
    entry.open = port;
    entry.stats.opens++;
    return port;
  }

  private entry(path: string): PortEntry {
    const entry = this.ports.get(path);
    if (!entry) throw new Error(`no such port: ${path}`);
    return entry;
  }
}

interface PortWiring {
  toDevice(bytes: Buffer): void;
  /** Bytes handed to the host's reads. */
  counted(n: number): void;
  released(): void;
}

/** The host's handle on one open virtual port. */
export class VirtualPortBinding implements BindingPortInterface {
  readonly openOptions: Required<OpenOptions>;
  isOpen = true;
  private readonly wiring: PortWiring;
  /** Device-to-host bytes waiting for a read: the OS input buffer. */
  private inbound: Buffer[] = [];
  private pendingRead: { wake: () => void; abort: (err: Error) => void } | undefined;
  private writing = false;
  private gone = false;

  constructor(openOptions: Required<OpenOptions>, wiring: PortWiring) {
    this.openOptions = openOptions;
    this.wiring = wiring;
  }

  /** Called by the device side. */
  deliver(bytes: Buffer): void {
    if (!this.isOpen || this.gone || bytes.length === 0) return;
    this.inbound.push(Buffer.from(bytes));
    const pending = this.pendingRead;
    this.pendingRead = undefined;
    pending?.wake();
  }

  /** Called by the binding on unplug. */
  disconnect(): void {
    this.gone = true;
    this.inbound = [];
    const pending = this.pendingRead;
    this.pendingRead = undefined;
    pending?.abort(new VirtualDisconnectError("device disconnected"));
  }

  async close(): Promise<void> {
    if (!this.isOpen) throw new Error("Port is not open");
    this.isOpen = false;
    this.inbound = [];
    this.wiring.released();
    const pending = this.pendingRead;
    this.pendingRead = undefined;
    pending?.abort(new CanceledError("port is closed"));
  }

  async read(buffer: Buffer, offset: number, length: number): Promise<{ buffer: Buffer; bytesRead: number }> {
    if (buffer.length < offset + length) throw new Error("buffer is too small");
    if (!this.isOpen) throw new Error("Port is not open");
    await nextTick();
    for (;;) {
      if (!this.isOpen) throw new CanceledError("read canceled");
      if (this.gone) throw new VirtualDisconnectError("device disconnected");
      if (this.inbound.length > 0) break;
      await new Promise<void>((wake, abort) => {
        this.pendingRead = { wake, abort };
      });
    }
    let bytesRead = 0;
    while (bytesRead < length && this.inbound.length > 0) {
      const head = this.inbound[0]!;
      const n = head.copy(buffer, offset + bytesRead, 0, length - bytesRead);
      bytesRead += n;
      if (n === head.length) this.inbound.shift();
      else this.inbound[0] = head.subarray(n);
    }
    this.wiring.counted(bytesRead);
    return { buffer, bytesRead };
  }

  async write(buffer: Buffer): Promise<void> {
    if (!this.isOpen) throw new Error("Port is not open");
    if (this.writing) throw new Error("Overlapping writes are not supported; the stream must queue them");
    this.writing = true;
    try {
      // A real write reaches the device through the OS, after other pending I/O has had its turn;
      // a next-tick hand-off would let the simulator act before, say, a socket read in the same process.
      await nextIoTurn();
      if (!this.isOpen) throw new CanceledError("write canceled");
      if (this.gone) throw new VirtualDisconnectError("device disconnected");
      this.wiring.toDevice(Buffer.from(buffer));
    } finally {
      this.writing = false;
    }
  }

  async update(options: UpdateOptions): Promise<void> {
    if (typeof options?.baudRate !== "number") throw new TypeError('"options.baudRate" is not a number');
    this.assertOpen();
    this.openOptions.baudRate = options.baudRate;
  }

  async set(_options: SetOptions): Promise<void> {
    this.assertOpen();
  }

  async get(): Promise<PortStatus> {
    this.assertOpen();
    return { cts: true, dsr: true, dcd: false };
  }

  async getBaudRate(): Promise<{ baudRate: number }> {
    this.assertOpen();
    return { baudRate: this.openOptions.baudRate };
  }

  async flush(): Promise<void> {
    this.assertOpen();
    this.inbound = [];
  }

  async drain(): Promise<void> {
    this.assertOpen();
    await nextTick();
  }

  private assertOpen(): void {
    if (!this.isOpen) throw new Error("Port is not open");
    if (this.gone) throw new VirtualDisconnectError("device disconnected");
  }
}

function nextIoTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function nextTick(): Promise<void> {
  return new Promise((resolve) => process.nextTick(resolve));
}
