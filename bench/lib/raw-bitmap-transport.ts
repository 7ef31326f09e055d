import { encodeRawPanel } from "../../drivers/printer/evolis/codec.js";
import { decompressKO } from "../../drivers/printer/evolis/ko-compression.js";
import type { Transport, TransportCloseInfo } from "../../drivers/transport/transport.js";

const DBC_HEAD = Buffer.from("\x1bDbc;", "latin1");

/**
 * The uncompressed baseline of the wire figure: wraps a transport and rewrites every compressed
 * bitmap frame the driver writes (`ESC Dbc;k;2;<len>;<K/O payload> CR`) into the plain `ESC Db;k;2;
 * <82 296 raw bytes> CR` carrying the same panel. Every other byte passes unchanged, so the
 * adapter's own command sequence runs and the binding counts what an uncompressed driver
 * would have put on the line.
 */
export class RawBitmapTransport implements Transport {
  rewritten = 0;

  constructor(private readonly inner: Transport) {}

  get description(): string {
    return `${this.inner.description} (raw Db)`;
  }

  get isOpen(): boolean {
    return this.inner.isOpen;
  }

  open(): Promise<void> {
    return this.inner.open();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  write(data: Buffer): Promise<void> {
    if (!data.subarray(0, DBC_HEAD.length).equals(DBC_HEAD)) return this.inner.write(data);
    // Dbc;k;2;<len>;payload CR: the payload starts after the fourth ';'.
    let at = 0;
    for (let n = 0; n < 4; n++) at = data.indexOf(0x3b, at) + 1;
    const payload = data.subarray(at, data.length - 1);
    this.rewritten++;
    return this.inner.write(encodeRawPanel(decompressKO(payload)));
  }

  onData(listener: (chunk: Buffer) => void): () => void {
    return this.inner.onData(listener);
  }

  onClose(listener: (info: TransportCloseInfo) => void): () => void {
    return this.inner.onClose(listener);
  }
}
