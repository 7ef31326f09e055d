import type { Logger } from "../../agent/log/logger.js";
import type { TransportCloseInfo } from "./transport.js";

/**
 * The `data` and `close` listeners of a transport, the same for every kind of link. A listener that
 * throws is a bug in the listener, not a device fault: it is logged and the others still run, so it
 * can neither end a read loop nor surface as an uncaught exception inside a socket, stream or
 * node-hid callback.
 */
export class TransportListeners {
  private readonly data = new Set<(chunk: Buffer) => void>();
  private readonly close = new Set<(info: TransportCloseInfo) => void>();

  constructor(private readonly logger: Logger) {}

  onData(listener: (chunk: Buffer) => void): () => void {
    this.data.add(listener);
    return () => this.data.delete(listener);
  }

  onClose(listener: (info: TransportCloseInfo) => void): () => void {
    this.close.add(listener);
    return () => this.close.delete(listener);
  }

  emitData(chunk: Buffer): void {
    for (const listener of this.data) {
      try {
        listener(chunk);
      } catch (err) {
        this.logger.error({ err: errorMessage(err) }, "data listener threw");
      }
    }
  }

  emitClose(info: TransportCloseInfo): void {
    for (const listener of this.close) {
      try {
        listener(info);
      } catch (err) {
        this.logger.error({ err: errorMessage(err) }, "close listener threw");
      }
    }
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
