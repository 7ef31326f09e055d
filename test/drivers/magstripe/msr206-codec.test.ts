import { describe, expect, it } from "vitest";
import {
  dataTrack,
  EMPTY_TRACK,
  encodeCommand,
  encodeDataBlock,
  encodeErase,
  encodeFirmwareReply,
  encodeModelReply,
  encodeReadAnswer,
  encodeSetCoercivity,
  encodeStatusReply,
  encodeWriteIso,
  eraseSelector,
  faultOfStatus,
  type Msr206Reply,
  Msr206ReplyParser,
  type Msr206Status,
  scanReply,
  trackDataOf,
} from "../../../drivers/magstripe/msr206-codec.js";
import { Msr206CommandParser, scanCommand } from "../../../drivers/magstripe/msr206-command-parser.js";
import { ascii, hex } from "./rig.js";

// Test vectors from shared/devices.md §4 (data = without sentinels and LRC).
const TRACK1 = "B5266092201416174^FATEHI/SUALEH^16042010000000000000000000000000000567001000";
const TRACK2 = "5266092201416174=16042010000056700100";
const TRACK3 = "011234567890123445=7247241000000000000303000000040006000=0000000000";

function parseAll(bytes: Buffer, split = 0): { replies: Msr206Reply[]; parser: Msr206ReplyParser } {
  const parser = new Msr206ReplyParser();
  const replies: Msr206Reply[] = [];
  if (split <= 0) replies.push(...parser.push(bytes));
  else
    for (let i = 0; i < bytes.length; i += split) replies.push(...parser.push(bytes.subarray(i, i + split)));
  return { replies, parser };
}

describe("host → device commands (devices.md §2)", () => {
  it("encodes the parameterless commands as ESC + one byte", () => {
    expect(encodeCommand("reset")).toEqual(hex("1B 61")); // ESC a
    expect(encodeCommand("test")).toEqual(hex("1B 65")); // ESC e
    expect(encodeCommand("readIso")).toEqual(hex("1B 72")); // ESC r
    expect(encodeCommand("hico")).toEqual(hex("1B 78")); // ESC x
    expect(encodeCommand("loco")).toEqual(hex("1B 79")); // ESC y
    expect(encodeCommand("coercivity")).toEqual(hex("1B 64")); // ESC d
    expect(encodeCommand("model")).toEqual(hex("1B 74")); // ESC t
    expect(encodeCommand("firmware")).toEqual(hex("1B 76")); // ESC v
    expect(encodeSetCoercivity("HICO")).toEqual(hex("1B 78"));
    expect(encodeSetCoercivity("LOCO")).toEqual(hex("1B 79"));
  });

  it("ISO write: 1B 77 1B 73 1B 01 <t1> 1B 02 <t2> 1B 03 <t3> 3F 1C, tracks without sentinels", () => {
    expect(encodeWriteIso({ track1: TRACK1, track2: TRACK2, track3: TRACK3 })).toEqual(
      Buffer.concat([
        hex("1B 77 1B 73 1B 01"),
        ascii(TRACK1),
        hex("1B 02"),
        ascii(TRACK2),
        hex("1B 03"),
        ascii(TRACK3),
        hex("3F 1C"),
      ]),
    );
  });

  it("ISO write of track 2 only leaves tracks 1 and 3 empty", () => {
    expect(encodeWriteIso({ track2: "4111111111111111=2512101" })).toEqual(
      hex(
        "1B 77 1B 73 1B 01 1B 02 34 31 31 31 31 31 31 31 31 31 31 31 31 31 31 31 3D 32 35 31 32 31 30 31 1B 03 3F 1C",
      ),
    );
  });

  it("refuses data the encoder cannot take, naming the track and never the data", () => {
    const cases = [
      { track2: `;${TRACK2}?` }, // sentinels: the device adds them
      { track2: "52660922014161A4=1604" }, // a letter on a numeric track
      { track2: "1".repeat(38) }, // > 37
      { track1: "B".repeat(77) }, // > 76
      { track3: "1".repeat(105) }, // > 104
      { track1: "" },
      {},
    ];
    for (const tracks of cases) {
      let caught: unknown;
      try {
        encodeWriteIso(tracks);
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(RangeError);
      expect((caught as Error).message).not.toMatch(/5266|1111|BBBB/);
    }
  });

  it("erase selectors: track 1 alone is 00, otherwise bit n-1 per track", () => {
    expect(encodeErase([1])).toEqual(hex("1B 63 00"));
    expect(encodeErase([2])).toEqual(hex("1B 63 02"));
    expect(encodeErase([3])).toEqual(hex("1B 63 04"));
    expect(eraseSelector([1, 2])).toBe(0x03);
    expect(eraseSelector([1, 3])).toBe(0x05);
    expect(eraseSelector([2, 3])).toBe(0x06);
    expect(eraseSelector([1, 2, 3])).toBe(0x07);
    expect(() => eraseSelector([])).toThrow(RangeError);
  });
});

describe("device → host answers", () => {
  it("decodes the read answer 1B 73 1B 01 … 1B 02 … 1B 03 … 3F 1C 1B <status>", () => {
    // What a real unit sends: sentinels kept, LRC dropped; track 3 empty as `ESC +`.
    const answer = Buffer.concat([
      hex("1B 73 1B 01"),
      ascii(`%${TRACK1}?`),
      hex("1B 02"),
      ascii(`;${TRACK2}?`),
      hex("1B 03 1B 2B"),
      hex("3F 1C"),
      hex("1B 30"),
    ]);
    const { replies, parser } = parseAll(answer);
    expect(replies).toEqual([
      {
        kind: "read",
        tracks: { track1: dataTrack(`%${TRACK1}?`), track2: dataTrack(`;${TRACK2}?`), track3: EMPTY_TRACK },
        status: "OK",
      },
    ]);
    expect(parser.stats).toEqual({ droppedBytes: 0, droppedFrames: 0 });
    expect(trackDataOf(1, `%${TRACK1}?`)).toBe(TRACK1);
    expect(trackDataOf(2, `;${TRACK2}?`)).toBe(TRACK2);
    expect(trackDataOf(2, TRACK2)).toBe(TRACK2);
    expect(trackDataOf(3, "")).toBe("");
  });

  it("a track 3 ending in its own end sentinel: the ? right before FS closes the block", () => {
    const answer = Buffer.concat([hex("1B 73 1B 01 1B 02 1B 03"), ascii(";0123?"), hex("3F 1C 1B 31")]);
    expect(parseAll(answer).replies).toEqual([
      {
        kind: "read",
        tracks: { track1: EMPTY_TRACK, track2: EMPTY_TRACK, track3: dataTrack(";0123?") },
        status: "READ_WRITE_ERROR",
      },
    ]);
  });

  it("decodes every status byte to a typed outcome", () => {
    const table: Array<[string, Msr206Status]> = [
      ["1B 30", "OK"],
      ["1B 31", "READ_WRITE_ERROR"],
      ["1B 32", "COMMAND_FORMAT_ERROR"],
      ["1B 34", "INVALID_COMMAND"],
      ["1B 39", "INVALID_SWIPE"],
      ["1B 41", "FAILURE"],
    ];
    for (const [bytes, status] of table) {
      expect(parseAll(hex(bytes)).replies).toEqual([{ kind: "status", status }]);
      expect(encodeStatusReply(status)).toEqual(hex(bytes));
    }
  });

  it("maps statuses to DeviceFault codes per operation", () => {
    expect(faultOfStatus("OK", "write")).toBeUndefined();
    expect(faultOfStatus("READ_WRITE_ERROR", "write")).toBe("MAG_WRITE");
    expect(faultOfStatus("INVALID_SWIPE", "write")).toBe("MAG_WRITE");
    expect(faultOfStatus("READ_WRITE_ERROR", "read")).toBe("MAG_READ");
    expect(faultOfStatus("FAILURE", "erase")).toBe("MAG_WRITE");
    expect(faultOfStatus("COMMAND_FORMAT_ERROR", "write")).toBe("COMMAND_REJECTED");
    expect(faultOfStatus("INVALID_COMMAND", "read")).toBe("COMMAND_REJECTED");
    expect(faultOfStatus("FAILURE", "command")).toBe("COMMAND_REJECTED");
  });

  it("decodes the test, coercivity, model and firmware answers", () => {
    expect(parseAll(hex("1B 79")).replies).toEqual([{ kind: "test-ok" }]); // ESC y
    expect(parseAll(hex("1B 68 1B 6C")).replies).toEqual([
      { kind: "coercivity", coercivity: "HICO" },
      { kind: "coercivity", coercivity: "LOCO" },
    ]);
    expect(parseAll(Buffer.concat([hex("1B"), ascii("REVE1.03")])).replies).toEqual([
      { kind: "firmware", version: "REVE1.03" },
    ]);
    expect(encodeFirmwareReply("REVE1.03")).toEqual(Buffer.concat([hex("1B"), ascii("REVE1.03")]));
    expect(encodeModelReply("3")).toEqual(hex("1B 33 53")); // ESC 3 S
  });

  it("ESC 2 S is the model only while a model answer is expected, else status 2 and a stray S", () => {
    const parser = new Msr206ReplyParser();
    parser.expectModel = true;
    expect(parser.push(hex("1B 32"))).toEqual([]); // waits: could be either
    expect(parser.push(hex("53"))).toEqual([{ kind: "model", model: "2" }]);
    const plain = parseAll(hex("1B 32 53"));
    expect(plain.replies).toEqual([{ kind: "status", status: "COMMAND_FORMAT_ERROR" }]);
    expect(plain.parser.stats).toEqual({ droppedBytes: 1, droppedFrames: 0 });
  });
});

describe("Msr206ReplyParser: incremental, resynchronising", () => {
  // Track 3 absent: encoded as `ESC +`.
  const readAnswer = encodeReadAnswer(
    { track1: dataTrack(`%${TRACK1}?`), track2: dataTrack(`;${TRACK2}?`) },
    "OK",
  );

  it("gives the same frames whatever the cut: one byte at a time, 7 at a time, all at once", () => {
    const stream = Buffer.concat([hex("1B 79"), readAnswer, hex("1B 30 1B 68")]);
    const whole = parseAll(stream).replies;
    expect(whole).toHaveLength(4);
    for (const split of [1, 2, 7, 63, 64]) expect(parseAll(stream, split).replies).toEqual(whole);
  });

  it("drops and counts noise before a frame", () => {
    const noise = hex("00 FF 3F 1C 30 73 41 0D 0A");
    const { replies, parser } = parseAll(Buffer.concat([noise, readAnswer]), 5);
    expect(replies).toHaveLength(1);
    expect(replies[0]).toMatchObject({ kind: "read", status: "OK" });
    expect(parser.stats).toEqual({ droppedBytes: noise.length, droppedFrames: 0 });
  });

  it("drops ESC + a byte no answer starts with, then finds the next frame", () => {
    const { replies, parser } = parseAll(hex("1B 7F 1B 1B 30"));
    expect(replies).toEqual([{ kind: "status", status: "OK" }]);
    // ESC 7F: the ESC (a broken frame), then 7F (noise), then the first ESC of ESC ESC (broken).
    expect(parser.stats).toEqual({ droppedBytes: 3, droppedFrames: 2 });
  });

  it("a read answer cut short by a fresh answer is dropped at the ESC, which starts the next frame", () => {
    const cut = readAnswer.subarray(0, 20); // ESC s ESC 1 and part of track 1
    const { replies, parser } = parseAll(Buffer.concat([cut, hex("1B 30")]), 3);
    expect(replies).toEqual([{ kind: "status", status: "OK" }]);
    expect(parser.stats).toEqual({ droppedBytes: 20, droppedFrames: 1 });
  });

  it("a truncated frame waits for more bytes; the caller's timeout discards and counts it", () => {
    const parser = new Msr206ReplyParser();
    expect(parser.push(readAnswer.subarray(0, 30))).toEqual([]);
    expect(parser.buffered).toBe(30);
    expect(parser.discardPartial()).toBe(30);
    expect(parser.stats).toEqual({ droppedBytes: 30, droppedFrames: 1 });
    expect(parser.buffered).toBe(0);
    // The rest of the old frame is noise now, except its closing `ESC 0`, which parses as a status
    // (the driver only accepts `ESC y` after a timeout, so a stale status cannot answer anything).
    expect(parser.push(Buffer.concat([readAnswer.subarray(30), hex("1B 79")]))).toEqual([
      { kind: "status", status: "OK" },
      { kind: "test-ok" },
    ]);
  });

  it("a non-printable byte inside a track breaks the frame", () => {
    const broken = Buffer.concat([hex("1B 73 1B 01"), ascii("%B41"), hex("00"), ascii("11?"), hex("1B 79")]);
    const { replies, parser } = parseAll(broken);
    expect(replies).toEqual([{ kind: "test-ok" }]);
    expect(parser.stats.droppedFrames).toBe(1);
  });

  it("a track longer than any real one breaks the frame instead of growing the buffer", () => {
    const parser = new Msr206ReplyParser();
    parser.push(Buffer.concat([hex("1B 73 1B 01"), ascii("1".repeat(500))]));
    expect(parser.buffered).toBe(0);
    expect(parser.stats.droppedFrames).toBe(1);
  });

  it("never throws and never holds more than one frame's worth on random input cut at random", () => {
    let seed = 7;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    let maxBuffered = 0;
    const alphabet = [
      0x1b, 0x73, 0x01, 0x02, 0x03, 0x3f, 0x1c, 0x30, 0x31, 0x79, 0x52, 0x45, 0x56, 0x41, 0x2b, 0x2a,
    ];
    for (let round = 0; round < 200; round++) {
      const parser = new Msr206ReplyParser();
      parser.expectModel = round % 2 === 0;
      const bytes = Buffer.alloc(300);
      for (let i = 0; i < bytes.length; i++)
        bytes[i] = rnd(3) === 0 ? rnd(256) : alphabet[rnd(alphabet.length)]!;
      for (let i = 0; i < bytes.length; ) {
        const n = 1 + rnd(20);
        parser.push(bytes.subarray(i, i + n)); // a throw fails the test
        maxBuffered = Math.max(maxBuffered, parser.buffered);
        i += n;
      }
    }
    expect(maxBuffered).toBeLessThan(3 * 130 + 16);
  });

  it("scanReply on an empty or one-byte buffer asks for more", () => {
    expect(scanReply(Buffer.alloc(0))).toEqual({ kind: "need-more" });
    expect(scanReply(hex("1B"))).toEqual({ kind: "need-more" });
  });
});

describe("device-side command parser (the simulator's end)", () => {
  it("reads back what the host encodes", () => {
    const parser = new Msr206CommandParser();
    const stream = Buffer.concat([
      encodeCommand("reset"),
      encodeCommand("test"),
      encodeSetCoercivity("LOCO"),
      encodeWriteIso({ track1: TRACK1, track2: TRACK2 }),
      encodeCommand("readIso"),
      encodeErase([2, 3]),
    ]);
    const commands = [];
    for (let i = 0; i < stream.length; i += 5) commands.push(...parser.push(stream.subarray(i, i + 5)));
    expect(commands).toEqual([
      { kind: "reset" },
      { kind: "test" },
      { kind: "loco" },
      { kind: "writeIso", tracks: { track1: TRACK1, track2: TRACK2, track3: "" } },
      { kind: "readIso" },
      { kind: "erase", tracks: [2, 3] },
    ]);
  });

  it("a write block cut short is malformed and the next command still parses", () => {
    const parser = new Msr206CommandParser();
    const cut = encodeWriteIso({ track2: TRACK2 }).subarray(0, 12);
    expect(parser.push(Buffer.concat([cut, encodeCommand("test")]))).toEqual([
      { kind: "malformed", command: "writeIso" },
      { kind: "test" },
    ]);
  });

  it("unknown commands and bad erase selectors are reported, noise is skipped", () => {
    expect(scanCommand(hex("1B 7A"))).toEqual({
      kind: "frame",
      value: { kind: "unknown", code: 0x7a },
      length: 2,
    });
    expect(scanCommand(hex("1B 63 09"))).toEqual({
      kind: "frame",
      value: { kind: "malformed", command: "erase" },
      length: 3,
    });
    const parser = new Msr206CommandParser();
    expect(parser.push(hex("00 11 22 1B 65"))).toEqual([{ kind: "test" }]);
    expect(parser.stats.droppedBytes).toBe(3);
  });

  it("data blocks refuse text that could be mistaken for markers", () => {
    expect(() => encodeDataBlock({ track1: "A\u001bB" })).toThrow(RangeError);
    expect(() => encodeDataBlock({ track2: "é" })).toThrow(RangeError);
  });
});
