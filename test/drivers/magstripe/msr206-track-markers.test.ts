import { describe, expect, it } from "vitest";
import {
  BAD_TRACK,
  dataTrack,
  EMPTY_TRACK,
  encodeReadAnswer,
  encodeReadBlock,
  type Msr206Reply,
  Msr206ReplyParser,
} from "../../../drivers/magstripe/msr206-codec.js";
import { Msr206CommandParser } from "../../../drivers/magstripe/msr206-command-parser.js";
import { ascii, hex } from "./rig.js";

/**
 * The read answer's per-track markers: `ESC +` (0x1B 0x2B) stands in for the text of a track with no
 * data, `ESC *` (0x1B 0x2A) for a track the head could not decode. Public sources: libmsr defines
 * `MSR_RW_EMPTY` 0x2B / `MSR_RW_BAD` 0x2A ("the empty delimiter occurs when reading a track with no
 * data") and reads them as the byte after an ESC that ends a track without `?`; libMSRx05's readISO
 * reads `ESC <n>`, then, for a track without text, one status byte (`+` empty, `*` error), and after
 * track 3's the block's `3F 1C`.
 */

const T2 = ";4111111111111111=25121010000000000000?"; // track 2 as the unit sends it: with sentinels

/** Track 1 empty, track 2 data, track 3 empty, status OK: what a track-2-only card reads as. */
const TRACK1_EMPTY = Buffer.concat([
  hex("1B 73 1B 01 1B 2B 1B 02"),
  ascii(T2),
  hex("1B 03 1B 2B 3F 1C 1B 30"),
]);
/** A blank card: every track `ESC +`, status `1`. */
const BLANK_CARD = hex("1B 73 1B 01 1B 2B 1B 02 1B 2B 1B 03 1B 2B 3F 1C 1B 31");
/** Track 1 bad (`ESC *`), track 2 data, track 3 empty, status `1`. */
const TRACK1_BAD = Buffer.concat([hex("1B 73 1B 01 1B 2A 1B 02"), ascii(T2), hex("1B 03 1B 2B 3F 1C 1B 31")]);
/** Track 3 bad: its marker sits right before the block's `3F 1C`. */
const TRACK3_BAD = Buffer.concat([hex("1B 73 1B 01 1B 2B 1B 02"), ascii(T2), hex("1B 03 1B 2A 3F 1C 1B 31")]);
/** `*` without its ESC as a track's whole text, as the record words it: also a bad track. */
const BARE_STAR = Buffer.concat([hex("1B 73 1B 01 2A 1B 02"), ascii(T2), hex("1B 03 2A 3F 1C 1B 31")]);
/** The programmer's manuals' form: an empty track is just `ESC <n>`, no marker. */
const NO_MARKER = Buffer.concat([hex("1B 73 1B 01 1B 02"), ascii(T2), hex("1B 03 3F 1C 1B 30")]);

const FIXTURES: Array<{ name: string; bytes: Buffer; reply: Msr206Reply }> = [
  {
    name: "track 1 empty",
    bytes: TRACK1_EMPTY,
    reply: {
      kind: "read",
      tracks: { track1: EMPTY_TRACK, track2: dataTrack(T2), track3: EMPTY_TRACK },
      status: "OK",
    },
  },
  {
    name: "blank card",
    bytes: BLANK_CARD,
    reply: {
      kind: "read",
      tracks: { track1: EMPTY_TRACK, track2: EMPTY_TRACK, track3: EMPTY_TRACK },
      status: "READ_WRITE_ERROR",
    },
  },
  {
    name: "track 1 bad",
    bytes: TRACK1_BAD,
    reply: {
      kind: "read",
      tracks: { track1: BAD_TRACK, track2: dataTrack(T2), track3: EMPTY_TRACK },
      status: "READ_WRITE_ERROR",
    },
  },
  {
    name: "track 3 bad",
    bytes: TRACK3_BAD,
    reply: {
      kind: "read",
      tracks: { track1: EMPTY_TRACK, track2: dataTrack(T2), track3: BAD_TRACK },
      status: "READ_WRITE_ERROR",
    },
  },
  {
    name: "bare * marks",
    bytes: BARE_STAR,
    reply: {
      kind: "read",
      tracks: { track1: BAD_TRACK, track2: dataTrack(T2), track3: BAD_TRACK },
      status: "READ_WRITE_ERROR",
    },
  },
  {
    name: "no marker (manual form)",
    bytes: NO_MARKER,
    reply: {
      kind: "read",
      tracks: { track1: EMPTY_TRACK, track2: dataTrack(T2), track3: EMPTY_TRACK },
      status: "OK",
    },
  },
];

/** Pushes `bytes` cut at the given offsets; returns the replies and the parser. */
function parseCut(bytes: Buffer, cuts: number[]): { replies: Msr206Reply[]; parser: Msr206ReplyParser } {
  const parser = new Msr206ReplyParser();
  const replies: Msr206Reply[] = [];
  let from = 0;
  for (const at of [...cuts, bytes.length]) {
    replies.push(...parser.push(bytes.subarray(from, at)));
    from = at;
  }
  return { replies, parser };
}

describe("read answer track markers: ESC + (empty) and ESC * (bad)", () => {
  it.each(FIXTURES)("$name: decodes to the typed tracks, nothing dropped", ({ bytes, reply }) => {
    const { replies, parser } = parseCut(bytes, []);
    expect(replies).toEqual([reply]);
    expect(parser.stats).toEqual({ droppedBytes: 0, droppedFrames: 0 });
    expect(parser.buffered).toBe(0);
  });

  it.each(FIXTURES)("$name: the same reply for every single cut of the byte stream", ({ bytes, reply }) => {
    for (let at = 1; at < bytes.length; at++) {
      const { replies, parser } = parseCut(bytes, [at]);
      expect(replies, `cut at ${at}`).toEqual([reply]);
      expect(parser.stats, `cut at ${at}`).toEqual({ droppedBytes: 0, droppedFrames: 0 });
    }
  });

  it.each(FIXTURES)("$name: one byte at a time", ({ bytes, reply }) => {
    const cuts = Array.from({ length: bytes.length - 1 }, (_, i) => i + 1);
    expect(parseCut(bytes, cuts).replies).toEqual([reply]);
  });

  it("all fixtures back to back, cut at every pair of points, give every reply in order", () => {
    const stream = Buffer.concat(FIXTURES.map((f) => f.bytes));
    const expected = FIXTURES.map((f) => f.reply);
    for (let a = 1; a < stream.length; a += 3) {
      for (let b = a + 1; b < stream.length; b += 7) {
        const { replies, parser } = parseCut(stream, [a, b]);
        expect(replies, `cuts ${a}, ${b}`).toEqual(expected);
        expect(parser.stats.droppedFrames).toBe(0);
      }
    }
  });

  it("encodeReadAnswer writes the markers where the parser reads them", () => {
    expect(encodeReadAnswer({ track2: dataTrack(T2) }, "OK")).toEqual(TRACK1_EMPTY);
    expect(encodeReadAnswer({}, "READ_WRITE_ERROR")).toEqual(BLANK_CARD);
    expect(encodeReadAnswer({ track1: BAD_TRACK, track2: dataTrack(T2) }, "READ_WRITE_ERROR")).toEqual(
      TRACK1_BAD,
    );
    expect(encodeReadAnswer({ track2: dataTrack(T2), track3: BAD_TRACK }, "READ_WRITE_ERROR")).toEqual(
      TRACK3_BAD,
    );
  });

  it("refuses data text that would read back as a marker or as nothing", () => {
    expect(() => encodeReadBlock({ track1: dataTrack("*") })).toThrow(RangeError);
    expect(() => encodeReadBlock({ track2: dataTrack("") })).toThrow(RangeError);
    // A `+` alone is data: only `ESC +` is the empty mark.
    expect(encodeReadBlock({ track1: dataTrack("+") })).toEqual(
      hex("1B 73 1B 01 2B 1B 02 1B 2B 1B 03 1B 2B 3F 1C"),
    );
  });

  it("a marker after track 3 must be followed by the block's ? FS: otherwise the block breaks, the next ESC resynchronises", () => {
    // ESC 3 ESC + and then a fresh ESC 0 instead of 3F 1C: the block is dropped before that ESC.
    const broken = hex("1B 73 1B 01 1B 2B 1B 02 1B 2B 1B 03 1B 2B 1B 30");
    const { replies, parser } = parseCut(broken, []);
    expect(replies).toEqual([{ kind: "status", status: "OK" }]);
    expect(parser.stats).toEqual({ droppedBytes: 14, droppedFrames: 1 });
    // The same whatever the cut.
    for (let at = 1; at < broken.length; at++) expect(parseCut(broken, [at]).replies).toEqual(replies);
  });

  it("an ESC after track 3's ESC 3 that is no marker breaks the block", () => {
    const { replies, parser } = parseCut(hex("1B 73 1B 01 1B 02 1B 03 1B 79"), []);
    expect(replies).toEqual([{ kind: "test-ok" }]);
    expect(parser.stats.droppedFrames).toBe(1);
  });

  it("ESC + outside a data block is no answer: dropped", () => {
    const { replies, parser } = parseCut(hex("1B 2B 1B 30"), []);
    expect(replies).toEqual([{ kind: "status", status: "OK" }]);
    expect(parser.stats).toEqual({ droppedBytes: 2, droppedFrames: 1 });
  });

  it("a partial marker waits for its second byte", () => {
    const parser = new Msr206ReplyParser();
    expect(parser.push(hex("1B 73 1B 01 1B"))).toEqual([]);
    expect(parser.buffered).toBe(5);
    expect(parser.push(hex("2B 1B 02 1B 2A 1B 03 1B 2B 3F"))).toEqual([]);
    expect(parser.push(hex("1C 1B"))).toEqual([]);
    expect(parser.push(hex("31"))).toEqual([
      {
        kind: "read",
        tracks: { track1: EMPTY_TRACK, track2: BAD_TRACK, track3: EMPTY_TRACK },
        status: "READ_WRITE_ERROR",
      },
    ]);
  });
});

describe("write blocks carry no markers (device side)", () => {
  it("ESC + in a write block is a format error, and the next command still parses", () => {
    const parser = new Msr206CommandParser();
    const block = hex("1B 77 1B 73 1B 01 1B 2B 1B 02 31 1B 03 3F 1C");
    expect(parser.push(Buffer.concat([block, hex("1B 65")]))).toEqual([
      { kind: "malformed", command: "writeIso" },
      // What follows the break is looked at again (as for any broken block): ESC + and the track
      // markers are no commands (status 4 each), the text and `? FS` are noise.
      { kind: "unknown", code: 0x2b },
      { kind: "unknown", code: 0x02 },
      { kind: "unknown", code: 0x03 },
      { kind: "test" },
    ]);
  });

  it("a track-1 text of just * is data in a write block, not a bad track", () => {
    const parser = new Msr206CommandParser();
    expect(parser.push(hex("1B 77 1B 73 1B 01 2A 1B 02 1B 03 3F 1C"))).toEqual([
      { kind: "writeIso", tracks: { track1: "*", track2: "", track3: "" } },
    ]);
  });
});
