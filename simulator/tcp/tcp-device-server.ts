import { createServer, type Server, type Socket } from "node:net";
import type { VirtualSerialDevice, VirtualSerialLink } from "../serial/virtual-binding.js";

export interface TcpDeviceServerOptions {
  /** Default 0: an ephemeral port, kept across unplug/replug. */
  port?: number;
  /** Default `127.0.0.1`. */
  host?: string;
  /** Sees every chunk the host wrote, after the device got it. */
  onHostBytes?: (bytes: Buffer) => void;
  /** Sees every chunk the device sent towards the host. */
  onDeviceBytes?: (bytes: Buffer) => void;
}

export interface TcpDeviceServerStats {
  bytesFromHost: number;
  bytesToHost: number;
  /** Host connections served. */
  connections: number;
  /** Connections closed at once because another host was connected. */
  refused: number;
}

/**
 * A `VirtualSerialDevice` (e.g. the VirtualEvolisPrinter) behind a TCP listener, as a network printer is:
 * the host reaches it through `TcpTransport` like real hardware.
 *
 * One host at a time, as a printer serves one client: a connection made while another is open is
 * closed at once. `unplug()` drops the connection and stops listening, so a host's connect is
 * refused (ECONNREFUSED, as from a printer that is switched off) rather than accepted and dropped;
 * `replug()` listens again on the same port.
 */
export class TcpDeviceServer implements VirtualSerialLink {
  readonly stats: TcpDeviceServerStats = { bytesFromHost: 0, bytesToHost: 0, connections: 0, refused: 0 };
  private server: Server | undefined;
  private connection: Socket | undefined;
  private listeningPort = 0;
  private closed = false;
  /** unplug/replug run one after the other, as PtyDevice's do. */
  private cycle: Promise<void> = Promise.resolve();

  private constructor(
    private readonly device: VirtualSerialDevice,
    private readonly options: TcpDeviceServerOptions,
  ) {}

  /** Listens and attaches `device`; resolves once a host can connect. */
  static async start(
    device: VirtualSerialDevice,
    options: TcpDeviceServerOptions = {},
  ): Promise<TcpDeviceServer> {
    const server = new TcpDeviceServer(device, options);
    await server.listen(options.port ?? 0);
    device.attach(server);
    return server;
  }

  get host(): string {
    return this.options.host ?? "127.0.0.1";
  }

  get port(): number {
    return this.listeningPort;
  }

  get path(): string {
    return `tcp:${this.host}:${this.port}`;
  }

  get plugged(): boolean {
    return this.server !== undefined;
  }

  /** Whether a host is connected now. */
  get connected(): boolean {
    return this.connection !== undefined;
  }

  send(bytes: Buffer): void {
    const connection = this.connection;
    // Nobody connected: dropped, as a UART with nobody listening drops it.
    if (!connection || bytes.length === 0) return;
    this.stats.bytesToHost += bytes.length;
    connection.write(bytes);
    this.options.onDeviceBytes?.(bytes);
  }

  unplug(): void {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    this.dropConnection();
    this.enqueue(() => closeServer(server));
  }

  replug(): void {
    if (this.server || this.closed) return;
    this.enqueue(() => (this.closed || this.server ? undefined : this.listen(this.port)));
  }

  /**
   * Resolves once a pending unplug/replug has finished; rejects when a replug could not listen
   * (the port was taken meanwhile).
   */
  settled(): Promise<void> {
    return this.cycle;
  }

  async close(): Promise<void> {
    this.closed = true;
    const server = this.server;
    this.server = undefined;
    this.dropConnection();
    await this.cycle.catch(() => undefined);
    if (server) await closeServer(server);
  }

  /** Queues a step after the previous one, whether or not that one failed. */
  private enqueue(step: () => Promise<void> | undefined): void {
    const next = this.cycle.catch(() => undefined).then(step);
    // Reported through settled(); never an unhandled rejection when nobody asks.
    next.catch(() => undefined);
    this.cycle = next;
  }

  private async listen(port: number): Promise<void> {
    const server = createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ port, host: this.host }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const address = server.address();
    if (address && typeof address === "object") this.listeningPort = address.port;
    this.server = server;
  }

  private accept(socket: Socket): void {
    // A reset from a host that died is the host's business; without a listener it would be uncaught.
    socket.on("error", () => undefined);
    if (this.connection || !this.server) {
      this.stats.refused++;
      socket.destroy();
      return;
    }
    this.connection = socket;
    this.stats.connections++;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      if (this.connection !== socket) return;
      this.stats.bytesFromHost += chunk.length;
      this.device.receive(chunk);
      this.options.onHostBytes?.(chunk);
    });
    socket.once("close", () => {
      if (this.connection === socket) this.connection = undefined;
    });
  }

  private dropConnection(): void {
    const connection = this.connection;
    this.connection = undefined;
    connection?.destroy();
  }
}

/** Stops listening; the connections were destroyed before, so this does not wait on a host. */
function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
