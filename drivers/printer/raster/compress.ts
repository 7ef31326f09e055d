/**
 * Panel codec for the printer link: "KR1" delta-line encoding (byte format in docs/raster.md).
 *
 * Each line is coded against the line before it. Text printed across the short edge gives runs of
 * identical lines (blank margins, the inside of vertical strokes) and, where lines differ, only a few
 * bytes at glyph edges, so a typical card costs ~2 % of the raw panels. The decoder needs one 81-byte
 * line of state and no lookahead: firmware can decode straight into the head buffer.
 */
import { CodedError } from "../../../agent/util/errors.js";
import { BYTES_PER_LINE, LINES, PANEL_BYTES } from "./geometry.js";

/** Module-local copy for the byte loops: test and dev loaders turn imported bindings into property reads. */
const STRIDE: number = BYTES_PER_LINE;

export const KR1_MAGIC = Buffer.from([0x4b, 0x52, 0x01]);

/** Record byte 0x00–0x7F: repeat the previous line (byte + 1) times. */
const MAX_REPEAT = 0x80;
/** Record byte 0x81–0xFF: one line = previous line with (byte & 0x7F) patches. 0x80 is reserved. */
const DELTA_FLAG = 0x80;
const MAX_PATCHES = 0x7f;
/**
 * Splitting a patch costs 2 header bytes; bridging a gap of unchanged bytes costs the gap. Bridging
 * gaps up to 2 is never worse and keeps the patch count low.
 */
const BRIDGE_GAP = 2;

/** Upper bound of a payload: every line a single full-width patch. */
export const MAX_PAYLOAD_BYTES = KR1_MAGIC.length + LINES * (1 + 2 + BYTES_PER_LINE);

export class BadBitmapError extends CodedError<"BAD_BITMAP"> {
  /** Byte offset in the payload where decoding gave up, when known. */
  readonly offset: number | undefined;
  constructor(message: string, offset?: number) {
    super("BAD_BITMAP", offset === undefined ? message : `${message} (at payload byte ${offset})`);
    this.offset = offset;
  }
}

export function compressPanel(raw: Buffer): Buffer {
  if (raw.length !== PANEL_BYTES) {
    throw new BadBitmapError(`raw panel must be ${PANEL_BYTES} bytes, got ${raw.length}`);
  }
  const out = Buffer.allocUnsafe(MAX_PAYLOAD_BYTES);
  KR1_MAGIC.copy(out, 0);
  let w = KR1_MAGIC.length;
  // Line -1 is blank, so leading blank lines are plain repeats.
  let prev = -1;
  let repeats = 0;
  const flushRepeats = (): void => {
    while (repeats > 0) {
      const n = Math.min(repeats, MAX_REPEAT);
      out[w++] = n - 1;
      repeats -= n;
    }
  };
  for (let line = 0; line < LINES; line++) {
    const cur = line * STRIDE;
    if (sameLine(raw, cur, prev)) {
      repeats++;
      continue;
    }
    flushRepeats();
    const head = w++;
    let patches = 0;
    let pos = 0;
    let i = 0;
    while (i < STRIDE) {
      if (byteAt(raw, prev, i) === raw[cur + i]) {
        i++;
        continue;
      }
      const start = i;
      let end = i + 1;
      for (;;) {
        while (end < STRIDE && byteAt(raw, prev, end) !== raw[cur + end]) end++;
        let gapEnd = end;
        while (gapEnd < STRIDE && byteAt(raw, prev, gapEnd) === raw[cur + gapEnd]) gapEnd++;
        if (gapEnd < STRIDE && gapEnd - end <= BRIDGE_GAP) end = gapEnd;
        else break;
      }
      out[w++] = start - pos;
      out[w++] = end - start;
      raw.copy(out, w, cur + start, cur + end);
      w += end - start;
      patches++;
      pos = end;
      i = end;
    }
    // At most ceil(81 / (1 + BRIDGE_GAP + 1)) patches fit in a line, far below MAX_PATCHES.
    out[head] = DELTA_FLAG | patches;
    prev = cur;
  }
  flushRepeats();
  return Buffer.from(out.subarray(0, w));
}

export function decompressPanel(payload: Buffer): Buffer {
  if (payload.length < KR1_MAGIC.length || !payload.subarray(0, KR1_MAGIC.length).equals(KR1_MAGIC)) {
    throw new BadBitmapError("not a KR1 panel payload", 0);
  }
  const out = Buffer.alloc(PANEL_BYTES);
  let r = KR1_MAGIC.length;
  let line = 0;
  const need = (n: number, what: string): void => {
    if (r + n > payload.length) throw new BadBitmapError(`truncated ${what}`, r);
  };
  while (r < payload.length) {
    const op = payload[r]!;
    const opAt = r++;
    if (op < DELTA_FLAG) {
      const n = op + 1;
      if (line + n > LINES) throw new BadBitmapError(`repeat runs past line ${LINES}`, opAt);
      for (let k = 0; k < n; k++, line++) copyPrevLine(out, line);
      continue;
    }
    const patches = op & MAX_PATCHES;
    if (patches === 0) throw new BadBitmapError("reserved record 0x80", opAt);
    if (line >= LINES) throw new BadBitmapError(`line past ${LINES}`, opAt);
    copyPrevLine(out, line);
    const base = line * STRIDE;
    let pos = 0;
    for (let p = 0; p < patches; p++) {
      need(2, "patch header");
      const skip = payload[r]!;
      const len = payload[r + 1]!;
      if (len === 0 || pos + skip + len > STRIDE) {
        throw new BadBitmapError(`patch outside the ${STRIDE}-byte line`, r);
      }
      r += 2;
      need(len, "patch data");
      pos += skip;
      payload.copy(out, base + pos, r, r + len);
      r += len;
      pos += len;
    }
    line++;
  }
  if (line !== LINES) throw new BadBitmapError(`payload ends after ${line} of ${LINES} lines`, r);
  return out;
}

function sameLine(raw: Buffer, cur: number, prev: number): boolean {
  if (prev < 0) {
    for (let i = 0; i < STRIDE; i++) if (raw[cur + i] !== 0) return false;
    return true;
  }
  return raw.compare(raw, prev, prev + STRIDE, cur, cur + STRIDE) === 0;
}

function byteAt(raw: Buffer, lineStart: number, i: number): number {
  return lineStart < 0 ? 0 : raw[lineStart + i]!;
}

function copyPrevLine(out: Buffer, line: number): void {
  // `out` starts zero-filled, so line 0 already equals the implicit blank line -1.
  if (line > 0) out.copy(out, line * STRIDE, (line - 1) * STRIDE, line * STRIDE);
}
