import { describe, expect, it } from "vitest";
import {
  bitsForTrack,
  formatTrack,
  isTrackDataChar,
  isValidExpiry,
  lrc,
  parseFormattedTrack,
  parseTrack1,
  parseTrack2,
  TrackDataError,
  withOddParity,
} from "../../../drivers/magstripe/iso7813.js";

// shared/devices.md §4, verbatim. Each is a formatted track without its LRC character.
const VECTORS = [
  { n: 2, text: ";5266092201416174=16042010000056700100?", lrc: 0x2, lrcChar: "2" },
  { n: 2, text: ";4111111111111111=25121010000000000000?", lrc: 0x8, lrcChar: "8" },
  {
    n: 1,
    text: "%B5266092201416174^FATEHI/SUALEH^16042010000000000000000000000000000567001000?",
    lrc: 45,
    lrcChar: "M",
  },
  // LRC 31 is the character `?`: the same as the end sentinel right before it.
  { n: 1, text: "%B4815881002867896^YATES/EUGENE JOHN ^37829821000123456789?", lrc: 31, lrcChar: "?" },
] as const;

describe("LRC (devices.md §4 vectors)", () => {
  for (const v of VECTORS) {
    it(`track ${v.n} ${v.text.slice(0, 12)}… → ${v.lrc}`, () => {
      expect(lrc(v.n, v.text)).toBe(v.lrc);
      const data = v.text.slice(1, -1);
      expect(formatTrack(v.n, data)).toBe(v.text + v.lrcChar);
      expect(parseFormattedTrack(v.n, v.text + v.lrcChar)).toEqual({ ok: true, value: data });
    });
  }
});

describe("formatTrack", () => {
  it("adds sentinels and LRC", () => {
    expect(formatTrack(2, "5266092201416174=16042010000056700100")).toBe(
      ";5266092201416174=16042010000056700100?2",
    );
  });

  it("rejects data the track cannot hold, with a code and no data in the message", () => {
    const secret = "5266092201416174=1604201A";
    let caught: unknown;
    try {
      formatTrack(2, secret);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(TrackDataError);
    expect((caught as TrackDataError).code).toBe("BAD_CHARACTER");
    expect((caught as Error).message).not.toContain("5266");
    expect(() => formatTrack(2, "1".repeat(38))).toThrow(expect.objectContaining({ code: "TOO_LONG" }));
    expect(() => formatTrack(3, "1".repeat(105))).toThrow(expect.objectContaining({ code: "TOO_LONG" }));
    expect(() => formatTrack(1, "B".repeat(77))).toThrow(expect.objectContaining({ code: "TOO_LONG" }));
    expect(() => formatTrack(1, "")).toThrow(expect.objectContaining({ code: "EMPTY" }));
    expect(() => formatTrack(1, "B1^A%B")).toThrow(expect.objectContaining({ code: "BAD_CHARACTER" }));
  });

  it("accepts the maximum lengths", () => {
    expect(formatTrack(1, "B".repeat(76))).toHaveLength(79);
    expect(formatTrack(2, "1".repeat(37))).toHaveLength(40);
    expect(formatTrack(3, "1".repeat(104))).toHaveLength(107);
  });
});

describe("parseFormattedTrack", () => {
  const good = ";4111111111111111=25121010000000000000?8";
  it("checks sentinels and LRC", () => {
    expect(parseFormattedTrack(2, good).ok).toBe(true);
    expect(parseFormattedTrack(2, good.slice(0, -1) + "9")).toEqual({ ok: false, error: "BAD_LRC" });
    expect(parseFormattedTrack(2, good.slice(1))).toEqual({ ok: false, error: "NO_START_SENTINEL" });
    expect(parseFormattedTrack(2, good.slice(0, -1))).toEqual({ ok: false, error: "NO_END_SENTINEL" });
    expect(parseFormattedTrack(1, good)).toEqual({ ok: false, error: "NO_START_SENTINEL" });
    expect(parseFormattedTrack(2, ";?4")).toEqual({
      ok: false,
      error: "EMPTY",
    });
    expect(parseFormattedTrack(2, "")).toEqual({ ok: false, error: "NO_START_SENTINEL" });
  });
});

describe("parity and bits", () => {
  it("sets the odd parity bit above the data bits", () => {
    expect(withOddParity(0b0000, 4)).toBe(0b10000);
    expect(withOddParity(0b0001, 4)).toBe(0b00001);
    expect(withOddParity(0b0011, 4)).toBe(0b10011);
    expect(withOddParity(0b000101, 6)).toBe(0b1000101);
    expect(withOddParity(0b000111, 6)).toBe(0b0000111);
  });

  it("gives every written character (sentinels and LRC included) odd parity", () => {
    for (const v of VECTORS) {
      const formatted = v.text + v.lrcChar;
      const bits = bitsForTrack(v.n, formatted);
      expect(bits).toHaveLength(formatted.length);
      const width = v.n === 1 ? 7 : 5;
      for (const b of bits) {
        expect(b).toBeLessThan(1 << width);
        expect(b.toString(2).split("1").length - 1).toSatisfy((ones: number) => ones % 2 === 1);
      }
    }
    // `;` = 0xB = 1011 (3 ones): parity 0. `?` = 0xF (4 ones): parity 1. `2` = 0010: parity 0.
    const t2 = bitsForTrack(2, ";5266092201416174=16042010000056700100?2");
    expect(t2[0]).toBe(0b01011);
    expect(t2.at(-2)).toBe(0b11111);
    expect(t2.at(-1)).toBe(0b00010);
    // `%` = 0x05 (2 ones): parity 1. `M` = 45 = 101101 (4 ones): parity 1.
    const t1 = bitsForTrack(1, VECTORS[2].text + "M");
    expect(t1[0]).toBe(0b1000101);
    expect(t1.at(-1)).toBe(0b1101101);
  });

  it("refuses a track that is not formatted", () => {
    expect(() => bitsForTrack(2, "5266092201416174=1604201")).toThrow(TrackDataError);
  });
});

describe("character sets", () => {
  it("track 1: ASCII 0x20-0x5F minus % and ?", () => {
    expect(isTrackDataChar(1, " ")).toBe(true);
    expect(isTrackDataChar(1, "_")).toBe(true);
    expect(isTrackDataChar(1, "^")).toBe(true);
    expect(isTrackDataChar(1, "%")).toBe(false);
    expect(isTrackDataChar(1, "?")).toBe(false);
    expect(isTrackDataChar(1, "a")).toBe(false);
    expect(isTrackDataChar(1, "\u001f")).toBe(false);
  });
  it("tracks 2/3: digits and =", () => {
    for (const n of [2, 3] as const) {
      expect(isTrackDataChar(n, "0")).toBe(true);
      expect(isTrackDataChar(n, "=")).toBe(true);
      for (const c of [":", ";", "<", ">", "?", "A", " "]) expect(isTrackDataChar(n, c)).toBe(false);
    }
  });
});

describe("parseTrack1 / parseTrack2", () => {
  it("splits the contract's example tracks", () => {
    expect(parseTrack1("B5266092201416174^FATEHI/SUALEH^2804201000000000000")).toEqual({
      ok: true,
      value: {
        pan: "5266092201416174",
        name: "FATEHI/SUALEH",
        expiry: "2804",
        serviceCode: "201",
        discretionary: "000000000000",
      },
    });
    expect(parseTrack2("5266092201416174=2804201000000000000")).toEqual({
      ok: true,
      value: { pan: "5266092201416174", expiry: "2804", serviceCode: "201", discretionary: "000000000000" },
    });
  });

  it("vector 4 is an LRC vector only: its PAN fails Luhn and its expiry month is 82", () => {
    const data = "B4815881002867896^YATES/EUGENE JOHN ^37829821000123456789";
    expect(parseTrack1(data)).toEqual({ ok: false, error: "PAN_CHECK_DIGIT" });
    const validPan = data.replace("4815881002867896", "4111111111111111");
    expect(parseTrack1(validPan)).toEqual({ ok: false, error: "BAD_EXPIRY" });
    // The name's trailing space is data, kept as written.
    expect(parseTrack1(validPan.replace("^3782", "^3712"))).toMatchObject({
      ok: true,
      value: { name: "YATES/EUGENE JOHN ", expiry: "3712", serviceCode: "982" },
    });
  });

  it("reports each rule with its own code", () => {
    const t1 = (s: string) => parseTrack1(s);
    expect(t1("A5266092201416174^FATEHI/SUALEH^2804201")).toEqual({ ok: false, error: "BAD_FORMAT_CODE" });
    expect(t1("B5266092201416174")).toEqual({ ok: false, error: "NO_SEPARATOR" });
    expect(t1("B5266092201416174^FATEHI/SUALEH")).toEqual({ ok: false, error: "NO_SEPARATOR" });
    expect(t1("B526609220141^FATEHI/SUALEH^2804201")).toEqual({ ok: false, error: "BAD_PAN" });
    expect(t1("B5266092201416175^FATEHI/SUALEH^2804201")).toEqual({ ok: false, error: "PAN_CHECK_DIGIT" });
    expect(t1("B5266092201416174^F^2804201")).toEqual({ ok: false, error: "BAD_NAME" });
    expect(t1(`B5266092201416174^${"X".repeat(27)}^2804201`)).toEqual({ ok: false, error: "BAD_NAME" });
    expect(t1("B5266092201416174^FATEHI/SUALEH^2813201")).toEqual({ ok: false, error: "BAD_EXPIRY" });
    expect(t1("B5266092201416174^FATEHI/SUALEH^280420")).toEqual({ ok: false, error: "BAD_SERVICE_CODE" });
    expect(t1("B5266092201416174^FATEHI/SUALEH^2804201").ok).toBe(true);

    const t2 = (s: string) => parseTrack2(s);
    expect(t2("52660922014161742804201")).toEqual({ ok: false, error: "NO_SEPARATOR" });
    expect(t2("4111111111111111=0000201")).toEqual({ ok: false, error: "BAD_EXPIRY" });
    expect(t2("4111111111111111=25A1201")).toEqual({ ok: false, error: "BAD_CHARACTER" });
    expect(t2("41111111111111111111=2512201")).toEqual({ ok: false, error: "BAD_PAN" });
    expect(t2("4111111111111112=2512201")).toEqual({ ok: false, error: "PAN_CHECK_DIGIT" });
    expect(t2("4111111111111111=2512201").ok).toBe(true);
  });

  it("validates YYMM months 01-12 only", () => {
    expect(isValidExpiry("2801")).toBe(true);
    expect(isValidExpiry("2812")).toBe(true);
    expect(isValidExpiry("2800")).toBe(false);
    expect(isValidExpiry("2813")).toBe(false);
    expect(isValidExpiry("281")).toBe(false);
  });
});
