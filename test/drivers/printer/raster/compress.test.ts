import { describe, expect, it } from "vitest";
import { CodedError } from "../../../../agent/util/errors.js";
import {
  BadBitmapError,
  compressPanel,
  decompressPanel,
  KR1_MAGIC,
  MAX_PAYLOAD_BYTES,
} from "../../../../drivers/printer/raster/compress.js";
import { BYTES_PER_LINE, LINES, PANEL_BYTES } from "../../../../drivers/printer/raster/geometry.js";
import { renderPanel } from "../../../../drivers/printer/raster/render.js";
import { prng, randomPanel, TYPICAL_BACK, TYPICAL_FRONT } from "./fixtures.js";

function roundTrip(raw: Buffer): Buffer {
  const payload = compressPanel(raw);
  expect(payload.length).toBeLessThanOrEqual(MAX_PAYLOAD_BYTES);
  const back = decompressPanel(payload);
  expect(back.length).toBe(PANEL_BYTES);
  expect(back.equals(raw)).toBe(true);
  return payload;
}

function expectBadBitmap(payload: Buffer): BadBitmapError {
  let caught: unknown;
  try {
    decompressPanel(payload);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(BadBitmapError);
  expect(caught).toBeInstanceOf(CodedError);
  expect((caught as BadBitmapError).code).toBe("BAD_BITMAP");
  return caught as BadBitmapError;
}

const rep = (lines: number): number[] => {
  const out: number[] = [];
  for (let left = lines; left > 0; left -= 128) out.push(Math.min(left, 128) - 1);
  return out;
};

describe("KR1 panel codec", () => {
  it("round-trips random bitmaps of several densities", () => {
    for (const [seed, ratio] of [
      [1, 0.5],
      [2, 0.02],
      [3, 0.98],
      [4, 0.001],
    ] as const) {
      roundTrip(randomPanel(seed, ratio));
    }
  });

  it("round-trips random bytes, including single changed bytes between equal lines", () => {
    const rnd = prng(99);
    for (let n = 0; n < 20; n++) {
      const raw = Buffer.alloc(PANEL_BYTES);
      const base = Buffer.alloc(BYTES_PER_LINE);
      for (let line = 0; line < LINES; line++) {
        if (rnd() < 0.3) base[Math.floor(rnd() * BYTES_PER_LINE)] = Math.floor(rnd() * 256);
        base.copy(raw, line * BYTES_PER_LINE);
      }
      roundTrip(raw);
    }
  });

  it("codes a blank panel as header + repeat records", () => {
    const payload = roundTrip(Buffer.alloc(PANEL_BYTES));
    expect([...payload]).toEqual([...KR1_MAGIC, ...rep(LINES)]);
  });

  it("codes an all-black panel as one full patch then repeats", () => {
    const payload = roundTrip(Buffer.alloc(PANEL_BYTES, 0xff));
    expect(payload.length).toBe(KR1_MAGIC.length + 1 + 2 + BYTES_PER_LINE + rep(LINES - 1).length);
  });

  it("round-trips dot and line checkerboards within the worst-case bound", () => {
    const dots = Buffer.alloc(PANEL_BYTES);
    const bands = Buffer.alloc(PANEL_BYTES);
    for (let line = 0; line < LINES; line++) {
      dots.fill(line % 2 === 0 ? 0xaa : 0x55, line * BYTES_PER_LINE, (line + 1) * BYTES_PER_LINE);
      for (let b = 0; b < BYTES_PER_LINE; b++) {
        bands[line * BYTES_PER_LINE + b] = (Math.floor(line / 8) + b) % 2 === 0 ? 0xff : 0x00;
      }
    }
    roundTrip(dots);
    roundTrip(bands);
  });

  it("matches the documented byte format (golden vector)", () => {
    const raw = Buffer.alloc(PANEL_BYTES);
    raw[0 * BYTES_PER_LINE + 2] = 0xf0;
    raw[1 * BYTES_PER_LINE + 2] = 0xf0;
    for (let line = 2; line < LINES; line++) {
      raw[line * BYTES_PER_LINE + 0] = 0xff;
      raw[line * BYTES_PER_LINE + 2] = 0xf0;
      raw[line * BYTES_PER_LINE + 80] = 0x01;
    }
    const golden = Buffer.from([
      0x4b,
      0x52,
      0x01, // "KR", version 1
      0x81,
      2,
      1,
      0xf0, // line 0: 1 patch, skip 2, 1 byte
      0x00, // line 1: repeat once
      0x82,
      0,
      1,
      0xff,
      79,
      1,
      0x01, // line 2: 2 patches (byte 0; then skip 79 to byte 80)
      ...rep(LINES - 3), // lines 3..1015: repeats
    ]);
    expect(compressPanel(raw).equals(golden)).toBe(true);
    expect(decompressPanel(golden).equals(raw)).toBe(true);
  });

  it("compresses the typical kiosk card to at most 5 % of the raw panels", () => {
    const front = renderPanel(TYPICAL_FRONT);
    const back = renderPanel(TYPICAL_BACK);
    const size = roundTrip(front).length + roundTrip(back).length;
    expect(size).toBeLessThanOrEqual(0.05 * 2 * PANEL_BYTES);
  });

  it("refuses a raw panel of the wrong size", () => {
    expect(() => compressPanel(Buffer.alloc(PANEL_BYTES - 1))).toThrow(BadBitmapError);
  });
});

describe("KR1 decoder on malformed payloads", () => {
  // Sparse, so that trying every truncation stays quick, but with both record kinds and multi-patch lines.
  const sparse = Buffer.alloc(PANEL_BYTES);
  const rnd = prng(7);
  for (let n = 0; n < 400; n++) sparse[Math.floor(rnd() * PANEL_BYTES)] = 1 + Math.floor(rnd() * 255);
  const valid = compressPanel(sparse);

  it("rejects empty input and a wrong magic or version", () => {
    expectBadBitmap(Buffer.alloc(0));
    expectBadBitmap(Buffer.from([0x4b, 0x52]));
    expectBadBitmap(Buffer.from([0x4b, 0x52, 0x02, ...rep(LINES)]));
    expectBadBitmap(Buffer.alloc(PANEL_BYTES)); // a raw panel sent where a payload belongs
  });

  it("rejects every truncation of a valid payload", () => {
    for (let len = 0; len < valid.length; len++) expectBadBitmap(valid.subarray(0, len));
  });

  it("rejects too few lines and too many lines", () => {
    expectBadBitmap(Buffer.from([...KR1_MAGIC, ...rep(LINES - 1)]));
    expectBadBitmap(Buffer.from([...KR1_MAGIC, ...rep(LINES), 0x00]));
    expectBadBitmap(Buffer.from([...KR1_MAGIC, ...rep(LINES), 0x81, 0, 1, 0xff]));
    expectBadBitmap(Buffer.concat([valid, Buffer.from([0x00])]));
  });

  it("rejects the reserved record, empty patches and patches past the line end", () => {
    const tail = rep(LINES - 1);
    expectBadBitmap(Buffer.from([...KR1_MAGIC, 0x80, ...tail]));
    expectBadBitmap(Buffer.from([...KR1_MAGIC, 0x81, 0, 0, ...tail]));
    expectBadBitmap(Buffer.from([...KR1_MAGIC, 0x81, 80, 2, 0xff, 0xff, ...tail]));
    expectBadBitmap(Buffer.from([...KR1_MAGIC, 0x81, 0xff, 1, 0xff, ...tail]));
    expectBadBitmap(Buffer.from([...KR1_MAGIC, 0x82, 0, 81, ...Buffer.alloc(81, 1), 0, 1, 0xff, ...tail]));
    // Patch count larger than the patches that follow: the next record byte is eaten as a header.
    expectBadBitmap(Buffer.from([...KR1_MAGIC, 0x83, 0, 1, 0xff, ...tail]));
  });

  it("never throws anything but BAD_BITMAP and always returns a full panel (fuzz)", () => {
    const rnd = prng(2024);
    for (let n = 0; n < 3000; n++) {
      let payload: Buffer;
      if (n % 2 === 0) {
        payload = Buffer.from(valid);
        for (let k = 0; k < 1 + Math.floor(rnd() * 4); k++) {
          const at = KR1_MAGIC.length + Math.floor(rnd() * (payload.length - KR1_MAGIC.length));
          payload[at] = Math.floor(rnd() * 256);
        }
      } else {
        const body = Buffer.alloc(Math.floor(rnd() * 400));
        for (let i = 0; i < body.length; i++) body[i] = Math.floor(rnd() * 256);
        payload = Buffer.concat([KR1_MAGIC, body]);
      }
      try {
        expect(decompressPanel(payload).length).toBe(PANEL_BYTES);
      } catch (err) {
        expect(err).toBeInstanceOf(BadBitmapError);
      }
    }
  });
});
