/**
 * Evolis K/O panel compression, the payload of `Dbc;k;2;<n>;` (Programming Guide A5013 Rev E §4,
 * p.5–6, "Compression of K and O"), as the captures of Evolis's Windows driver use it:
 *
 *   the panel is coded line by line, 1016 lines of 81 bytes;
 *   a line starts with one byte:
 *     0x00      the line is white (nothing follows);
 *     0xFF      the line is black (nothing follows);
 *     N = 1…81  N useful bytes of the line follow; the rest of the line is white.
 *
 * "The counter corresponds to the index of the last byte of the line": the encoder sends every byte
 * up to the last one holding ink. Since dot 0 is the card's bottom edge (panel.ts), a line costs as
 * many bytes as the card is tall up to its topmost ink.
 */
import { CodedError } from "../../../agent/util/errors.js";
import { BYTES_PER_LINE, LINES, PANEL_BYTES } from "./panel.js";

const WHITE = 0x00;
const BLACK = 0xff;
/** Module-local copies for the byte loops (see panel.ts). */
const STRIDE: number = BYTES_PER_LINE;
const LINE_COUNT: number = LINES;

/** Upper bound of a payload: every line a count byte and 81 data bytes (the Windows driver's form). */
export const MAX_KO_PAYLOAD_BYTES = LINES * (1 + BYTES_PER_LINE);

export class BadBitmapError extends CodedError<"BAD_BITMAP"> {
  /** Byte offset in the payload where decoding gave up, when known. */
  readonly offset: number | undefined;
  constructor(message: string, offset?: number) {
    super("BAD_BITMAP", offset === undefined ? message : `${message} (at payload byte ${offset})`);
    this.offset = offset;
  }
}

export function compressKO(panel: Buffer): Buffer {
  if (panel.length !== PANEL_BYTES) {
    throw new BadBitmapError(`raw panel must be ${PANEL_BYTES} bytes, got ${panel.length}`);
  }
  const out = Buffer.allocUnsafe(MAX_KO_PAYLOAD_BYTES);
  let w = 0;
  for (let line = 0; line < LINE_COUNT; line++) {
    const start = line * STRIDE;
    let last = STRIDE - 1;
    while (last >= 0 && panel[start + last] === 0) last--;
    if (last < 0) {
      out[w++] = WHITE;
      continue;
    }
    if (last === STRIDE - 1 && allBlack(panel, start)) {
      out[w++] = BLACK;
      continue;
    }
    const useful = last + 1;
    out[w++] = useful;
    panel.copy(out, w, start, start + useful);
    w += useful;
  }
  return Buffer.from(out.subarray(0, w));
}

/** The raw panel a K/O payload codes. Throws BadBitmapError on anything but exactly 1016 lines. */
export function decompressKO(payload: Buffer): Buffer {
  const panel = Buffer.alloc(PANEL_BYTES);
  let r = 0;
  for (let line = 0; line < LINE_COUNT; line++) {
    if (r >= payload.length) {
      throw new BadBitmapError(`payload ends after ${line} of ${LINE_COUNT} lines`, r);
    }
    const count = payload[r]!;
    const at = r++;
    if (count === WHITE) continue;
    const start = line * STRIDE;
    if (count === BLACK) {
      panel.fill(0xff, start, start + STRIDE);
      continue;
    }
    if (count > STRIDE)
      throw new BadBitmapError(`line ${line} declares ${count} bytes (at most ${STRIDE})`, at);
    if (r + count > payload.length) throw new BadBitmapError(`line ${line} is cut short`, at);
    payload.copy(panel, start, r, r + count);
    r += count;
  }
  if (r !== payload.length)
    throw new BadBitmapError(`${payload.length - r} bytes after line ${LINE_COUNT}`, r);
  return panel;
}

function allBlack(panel: Buffer, start: number): boolean {
  for (let i = 0; i < STRIDE; i++) if (panel[start + i] !== 0xff) return false;
  return true;
}
