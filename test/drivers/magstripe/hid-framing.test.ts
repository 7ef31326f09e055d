import { describe, expect, it } from "vitest";
import {
  encodeHidOutput,
  encodeHidReports,
  HidReassembler,
  parseHidHeader,
  withReportId,
} from "../../../drivers/magstripe/hid-framing.js";
import { hex } from "./rig.js";

/** A 141-byte message with every byte position recognisable. */
const MESSAGE_141 = Buffer.from(Array.from({ length: 141 }, (_, i) => (i * 7 + 3) & 0xff));

describe("MSR605X HID framing (devices.md §3)", () => {
  it("the 6-byte message `string` is one report: C6 73 74 72 69 6E 67 00 …", () => {
    const reports = encodeHidReports(Buffer.from("string"));
    expect(reports).toHaveLength(1);
    const report = reports[0]!;
    expect(report).toHaveLength(64);
    expect(report.subarray(0, 7)).toEqual(hex("C6 73 74 72 69 6E 67"));
    expect(report.subarray(7).every((b) => b === 0)).toBe(true);
    expect(parseHidHeader(0xc6)).toEqual({ first: true, last: true, length: 6 });
  });

  it("a 141-byte message is three reports with headers BF, 3F, 4F", () => {
    const reports = encodeHidReports(MESSAGE_141);
    expect(reports.map((r) => r[0])).toEqual([0xbf, 0x3f, 0x4f]);
    expect(reports.map((r) => r.length)).toEqual([64, 64, 64]);
    expect(
      Buffer.concat([reports[0]!.subarray(1), reports[1]!.subarray(1), reports[2]!.subarray(1, 16)]),
    ).toEqual(MESSAGE_141);
    expect(reports[2]!.subarray(16).every((b) => b === 0)).toBe(true);
  });

  it("exactly 63 bytes is one report (FF); 64 bytes is two (BF, 41)", () => {
    expect(encodeHidReports(Buffer.alloc(63, 1)).map((r) => r[0])).toEqual([0xff]);
    expect(encodeHidReports(Buffer.alloc(64, 1)).map((r) => r[0])).toEqual([0xbf, 0x41]);
  });

  it("host → device writes carry report id 0 in front: 65 bytes for node-hid", () => {
    const [write] = encodeHidOutput(hex("1B 65"));
    expect(write).toHaveLength(65);
    expect(write!.subarray(0, 4)).toEqual(hex("00 C2 1B 65"));
    expect(() => withReportId(Buffer.alloc(10))).toThrow(RangeError);
    expect(() => encodeHidReports(Buffer.alloc(0))).toThrow(RangeError);
  });
});

describe("HidReassembler", () => {
  const reports = encodeHidReports(MESSAGE_141);
  const stream = Buffer.concat(reports);

  it("keeps every chunk, not only the last one", () => {
    const r = new HidReassembler();
    const out = reports.flatMap((report) => r.push(report));
    expect(out).toEqual([MESSAGE_141]);
    expect(r.stats).toMatchObject({ reports: 3, messages: 1, orphanReports: 0, droppedMessages: 0 });
  });

  it("reassembles reports split across several data events, at any cut", () => {
    for (const cuts of [[1], [10], [63], [65], [100], [3, 61, 1, 64, 2, 50]]) {
      const r = new HidReassembler();
      const out: Buffer[] = [];
      let offset = 0;
      for (let k = 0; offset < stream.length; k++) {
        const n = cuts[k % cuts.length]!;
        out.push(...r.push(stream.subarray(offset, offset + n)));
        offset += n;
      }
      expect(out).toEqual([MESSAGE_141]);
      expect(r.pending).toBe(false);
    }
  });

  it("several messages in one event come out in order", () => {
    const r = new HidReassembler();
    const a = Buffer.from("first message");
    const b = Buffer.from("second");
    expect(r.push(Buffer.concat([...encodeHidReports(a), ...encodeHidReports(b)]))).toEqual([a, b]);
  });

  it("a report without a preceding 0x80 is dropped, counted, and the next message is whole", () => {
    const r = new HidReassembler();
    // The middle and last reports of a message whose first report was lost.
    expect(r.push(Buffer.concat([reports[1]!, reports[2]!]))).toEqual([]);
    expect(r.stats).toMatchObject({ orphanReports: 2, droppedBytes: 63 + 15 });
    expect(r.push(Buffer.concat(encodeHidReports(Buffer.from("ok"))))).toEqual([Buffer.from("ok")]);
  });

  it("a new first report drops the unfinished message", () => {
    const r = new HidReassembler();
    expect(r.push(reports[0]!)).toEqual([]);
    expect(r.push(stream)).toEqual([MESSAGE_141]);
    expect(r.stats).toMatchObject({ droppedMessages: 1, droppedBytes: 63, messages: 1 });
  });

  it("a message growing past maxMessageBytes is dropped", () => {
    const r = new HidReassembler({ maxMessageBytes: 100 });
    expect(r.push(stream)).toEqual([]);
    expect(r.stats.droppedMessages).toBe(1);
    // The rest of it is orphaned, then the next one is fine.
    expect(r.push(Buffer.concat(encodeHidReports(Buffer.from("next"))))).toEqual([Buffer.from("next")]);
  });

  it("reset() drops a half-received report and message, counting them", () => {
    const r = new HidReassembler();
    r.push(Buffer.concat([reports[0]!, reports[1]!.subarray(0, 10)]));
    expect(r.pending).toBe(true);
    r.reset();
    expect(r.pending).toBe(false);
    expect(r.stats).toMatchObject({ droppedMessages: 1, droppedBytes: 63 + 10 });
  });

  it("an empty first+last report yields nothing; header lengths never read past the report", () => {
    const r = new HidReassembler();
    const empty = Buffer.alloc(64);
    empty[0] = 0xc0;
    expect(r.push(empty)).toEqual([]);
    const full = Buffer.alloc(64, 0xee);
    full[0] = 0xff; // first + last + 63
    expect(r.push(full)).toEqual([Buffer.alloc(63, 0xee)]);
  });
});
