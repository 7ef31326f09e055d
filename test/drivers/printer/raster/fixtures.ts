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

/** Random bytes with about `inkRatio` of their bits set. */
export function randomBytes(length: number, seed: number, inkRatio = 0.5): Buffer {
  const rnd = prng(seed);
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) {
    let byte = 0;
    for (let bit = 0; bit < 8; bit++) byte = (byte << 1) | (rnd() < inkRatio ? 1 : 0);
    out[i] = byte;
  }
  return out;
}
