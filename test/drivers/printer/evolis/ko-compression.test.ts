import { describe, expect, it } from "vitest";
import {
  BadBitmapError,
  compressKO,
  decompressKO,
  MAX_KO_PAYLOAD_BYTES,
} from "../../../../drivers/printer/evolis/ko-compression.js";
import { PANEL_BYTES } from "../../../../drivers/printer/evolis/panel.js";
import { randomBytes } from "../raster/fixtures.js";
import { hex } from "./rig.js";

describe("K/O compression (guide §4, p.5–6)", () => {
  it("a white panel is 1016 bytes of 0x00, a black one 1016 bytes of 0xFF", () => {
    expect(compressKO(Buffer.alloc(PANEL_BYTES))).toEqual(Buffer.alloc(1016, 0x00));
    expect(compressKO(Buffer.alloc(PANEL_BYTES, 0xff))).toEqual(Buffer.alloc(1016, 0xff));
  });

  it("golden vector: a line is N (its last inked byte + 1) and those N bytes", () => {
    const panel = Buffer.alloc(PANEL_BYTES);
    panel[0] = 0x80; // line 0: one dot, the card's bottom-left corner
    panel[81 + 2] = 0xf0; // line 1: byte 2
    panel.fill(0xff, 2 * 81, 3 * 81); // line 2: black
    panel[3 * 81 + 80] = 0x01; // line 3: the last dot of the line
    const payload = compressKO(panel);
    expect(payload.subarray(0, 6)).toEqual(hex("01 80 03 00 00 F0"));
    expect(payload[6]).toBe(0xff);
    expect(payload[7]).toBe(81);
    expect(payload.subarray(8, 8 + 81)).toEqual(Buffer.concat([Buffer.alloc(80), hex("01")]));
    expect(payload.subarray(89)).toEqual(Buffer.alloc(1012, 0x00));
    expect(decompressKO(payload).equals(panel)).toBe(true);
  });

  it("round-trips random panels of any density", () => {
    for (const [seed, ratio] of [
      [1, 0.5],
      [2, 0.02],
      [3, 0.98],
    ] as const) {
      const panel = randomBytes(PANEL_BYTES, seed, ratio);
      const payload = compressKO(panel);
      expect(payload.length).toBeLessThanOrEqual(MAX_KO_PAYLOAD_BYTES);
      expect(decompressKO(payload).equals(panel)).toBe(true);
    }
  });

  it("the decoder refuses anything but exactly 1016 lines, with a coded error and an offset", () => {
    const bad: Array<[string, Buffer]> = [
      ["too few lines", Buffer.alloc(1015)],
      ["bytes after the last line", Buffer.alloc(1017)],
      ["a count above 81", Buffer.concat([hex("52"), Buffer.alloc(82)])],
      ["a line cut short", Buffer.concat([Buffer.alloc(1015), hex("05 01 02")])],
    ];
    for (const [why, payload] of bad) {
      let caught: unknown;
      try {
        decompressKO(payload);
      } catch (err) {
        caught = err;
      }
      expect(caught, why).toBeInstanceOf(BadBitmapError);
      expect((caught as BadBitmapError).code).toBe("BAD_BITMAP");
      expect((caught as BadBitmapError).offset, why).toBeTypeOf("number");
    }
  });
});
