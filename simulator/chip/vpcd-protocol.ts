/**
 * The wire format between vsmartcard's vpcd (the IFD handler loaded by pcscd, a TCP server) and a
 * virtual card (the TCP client): every message is a 2-byte big-endian length, then the payload.
 * A 1-byte payload is a control code; only GET ATR is answered (with the ATR). Any longer payload is
 * a command APDU, answered with the response APDU. An answer with length 0 makes vpcd drop the card.
 */

export const VPCD_DEFAULT_PORT = 35963;

export const VpcdControl = {
  POWER_OFF: 0,
  POWER_ON: 1,
  RESET: 2,
  GET_ATR: 4,
} as const;
export type VpcdControlCode = (typeof VpcdControl)[keyof typeof VpcdControl];

export type VpcdMessage =
  | { kind: "control"; code: VpcdControlCode }
  /** A control byte this protocol version does not define; a card ignores it. */
  | { kind: "unknown-control"; code: number }
  | { kind: "apdu"; apdu: Buffer }
  /** A zero-length message (vpcd never sends one; tolerated, ignored). */
  | { kind: "empty" };

const MAX_PAYLOAD = 0xffff;

/** Frames one payload for the wire: length (2 bytes, big-endian) ‖ payload, as one buffer. */
export function encodeVpcdFrame(payload: Buffer): Buffer {
  if (payload.length > MAX_PAYLOAD) throw new RangeError("vpcd payload longer than 65535 bytes");
  const frame = Buffer.allocUnsafe(2 + payload.length);
  frame.writeUInt16BE(payload.length, 0);
  payload.copy(frame, 2);
  return frame;
}

export function classifyVpcdPayload(payload: Buffer): VpcdMessage {
  if (payload.length === 0) return { kind: "empty" };
  if (payload.length === 1) {
    const code = payload[0]!;
    if (code === 0 || code === 1 || code === 2 || code === 4) return { kind: "control", code };
    return { kind: "unknown-control", code };
  }
  return { kind: "apdu", apdu: payload };
}

/**
 * Cuts a TCP byte stream into vpcd messages. TCP does not keep message boundaries: one chunk may hold
 * half a length prefix, several messages, or the tail of one and the head of the next, so bytes are
 * buffered until a whole frame is there.
 */
export class VpcdFrameParser {
  private pending: Buffer = Buffer.alloc(0);

  /** Feeds bytes from the socket; returns every message completed by them, in order. */
  push(chunk: Buffer): VpcdMessage[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: VpcdMessage[] = [];
    let offset = 0;
    while (this.pending.length - offset >= 2) {
      const length = this.pending.readUInt16BE(offset);
      if (this.pending.length - offset - 2 < length) break;
      // Copied: the socket may reuse its chunk buffers, and a card keeps nothing it was not given.
      const payload = Buffer.from(this.pending.subarray(offset + 2, offset + 2 + length));
      out.push(classifyVpcdPayload(payload));
      offset += 2 + length;
    }
    this.pending = offset === 0 ? this.pending : Buffer.from(this.pending.subarray(offset));
    return out;
  }

  /** Bytes of an incomplete frame still waiting for the rest. */
  get buffered(): number {
    return this.pending.length;
  }

  reset(): void {
    this.pending = Buffer.alloc(0);
  }
}
