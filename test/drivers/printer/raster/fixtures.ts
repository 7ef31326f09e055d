import {
  BYTES_PER_LINE,
  DOTS_PER_LINE,
  LINES,
  PANEL_BYTES,
} from "../../../../drivers/printer/raster/geometry.js";
import type { PrintLine } from "../../../../drivers/printer/raster/render.js";

/** The example job of docs/production-job: what a kiosk prints on a debit card. */
export const TYPICAL_FRONT: PrintLine[] = [
  { text: "5266 0922 0141 6174", xMm: 8, yMm: 30, sizePt: 14 },
  { text: "SUALEH FATEHI", xMm: 8, yMm: 42, sizePt: 10 },
  { text: "04/28", xMm: 50, yMm: 36, sizePt: 9 },
];
export const TYPICAL_BACK: PrintLine[] = [{ text: "123", xMm: 60, yMm: 20, sizePt: 8 }];

/** Deterministic so that a failing random case can be replayed. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

export function randomPanel(seed: number, inkRatio = 0.5): Buffer {
  const rnd = prng(seed);
  const panel = Buffer.alloc(PANEL_BYTES);
  for (let i = 0; i < PANEL_BYTES; i++) {
    let byte = 0;
    for (let bit = 0; bit < 8; bit++) byte = (byte << 1) | (rnd() < inkRatio ? 1 : 0);
    panel[i] = byte;
  }
  return panel;
}

/** Written from the documented mapping, independently of the code under test. */
export function setDot(panel: Buffer, line: number, dot: number): void {
  panel[line * BYTES_PER_LINE + Math.floor(dot / 8)]! |= 0x80 >> (dot % 8);
}

export function inkBox(
  panel: Buffer,
): { minLine: number; maxLine: number; minDot: number; maxDot: number } | null {
  let box: { minLine: number; maxLine: number; minDot: number; maxDot: number } | null = null;
  for (let line = 0; line < LINES; line++) {
    for (let dot = 0; dot < DOTS_PER_LINE; dot++) {
      const byte = panel[line * BYTES_PER_LINE + Math.floor(dot / 8)]!;
      if ((byte & (0x80 >> (dot % 8))) === 0) continue;
      if (box === null) box = { minLine: line, maxLine: line, minDot: dot, maxDot: dot };
      box.minLine = Math.min(box.minLine, line);
      box.maxLine = Math.max(box.maxLine, line);
      box.minDot = Math.min(box.minDot, dot);
      box.maxDot = Math.max(box.maxDot, dot);
    }
  }
  return box;
}
