import type { VirtualSerialDevice, VirtualSerialLink } from "../../../simulator/serial/virtual-binding.js";

/** Keeps every byte the host wrote and, unless told not to, sends each chunk back. */
export class EchoDevice implements VirtualSerialDevice {
  link: VirtualSerialLink | undefined;
  onReceive: ((bytes: Buffer) => void) | undefined;
  private readonly chunks: Buffer[] = [];
  private count = 0;

  constructor(private readonly options: { echo?: boolean } = {}) {}

  attach(link: VirtualSerialLink): void {
    this.link = link;
  }

  receive(bytes: Buffer): void {
    this.chunks.push(Buffer.from(bytes));
    this.count += bytes.length;
    if (this.options.echo ?? true) setImmediate(() => this.link?.send(bytes));
    this.onReceive?.(bytes);
  }

  bytes(): number {
    return this.count;
  }

  received(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/**
 * `length` bytes of a printer-like frame: every byte value, so CR, ESC, NUL, XON/XOFF and ^C all
 * appear, in an order that shows any loss, duplication or reordering.
 */
export function frame(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = (i * 7 + seed + (i >> 8)) & 0xff;
  return out;
}

/** Real I/O: poll a condition with a deadline rather than sleeping a fixed time. */
export async function until(check: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}
