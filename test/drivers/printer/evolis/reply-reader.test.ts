import { describe, expect, it } from "vitest";
import { ManualClock } from "../../../../agent/util/clock.js";
import { ReplyReader } from "../../../../drivers/printer/evolis/reply-reader.js";
import { hex } from "./rig.js";

function reader(idleGapMs = 50) {
  const clock = new ManualClock();
  const replies: string[] = [];
  const r = new ReplyReader({ clock, idleGapMs, onReply: (t) => replies.push(t) });
  return { r, clock, replies };
}

describe("ReplyReader: a reply ends at CR, LF, NUL or a short idle gap", () => {
  it.each([
    ["CR", "4F 4B 0D"],
    ["LF", "4F 4B 0A"],
    ["CR LF", "4F 4B 0D 0A"],
    ["NUL", "4F 4B 00"],
    ["NUL padding", "4F 4B 00 00 00 00"],
  ])("%s", (_name, bytes) => {
    const { r, replies } = reader();
    r.push(hex(bytes));
    expect(replies).toEqual(["OK"]);
  });

  it("no terminator: the reply ends after idleGapMs of silence, not before", () => {
    const { r, clock, replies } = reader(50);
    r.push(Buffer.from("CARD"));
    clock.advance(30);
    r.push(Buffer.from(" JAM")); // still coming: the gap starts again
    clock.advance(49);
    expect(replies).toEqual([]);
    clock.advance(1);
    expect(replies).toEqual(["CARD JAM"]);
  });

  it("any cut of the byte stream gives the same replies", () => {
    const stream = Buffer.from("OK\r\n5,00 Volts\0SMART CARD\rERROR CDE\0\0", "latin1");
    for (let cut = 1; cut < stream.length; cut++) {
      const { r, replies } = reader();
      r.push(stream.subarray(0, cut));
      r.push(stream.subarray(cut));
      expect(replies).toEqual(["OK", "5,00 Volts", "SMART CARD", "ERROR CDE"]);
    }
  });

  it("line noise is dropped and counted; the next terminator starts clean", () => {
    const { r, replies } = reader();
    r.push(hex("F3 9A 81 0D 4F 4B 00"));
    expect(replies).toEqual(["OK"]);
    expect(r.droppedFrames).toBe(1);
  });

  it("an overlong reply is dropped whole", () => {
    const { r, replies } = reader();
    r.push(Buffer.concat([Buffer.alloc(300, 0x41), hex("0D"), Buffer.from("OK\r")]));
    expect(replies).toEqual(["OK"]);
    expect(r.droppedFrames).toBe(1);
  });

  it("reset() forgets a partial reply (the link closed mid-reply)", () => {
    const { r, clock, replies } = reader();
    r.push(Buffer.from("SMA"));
    r.reset();
    clock.advance(100);
    r.push(Buffer.from("OK\0"));
    expect(replies).toEqual(["OK"]);
  });
});
