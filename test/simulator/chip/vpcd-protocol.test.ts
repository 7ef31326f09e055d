import { describe, expect, it } from "vitest";
import {
  classifyVpcdPayload,
  encodeVpcdFrame,
  VpcdControl,
  VpcdFrameParser,
} from "../../../simulator/chip/vpcd-protocol.js";

const frame = (hex: string) => encodeVpcdFrame(Buffer.from(hex, "hex"));

describe("vpcd framing", () => {
  it("encodes a 2-byte big-endian length, then the payload, as one buffer", () => {
    expect(frame("9000").toString("hex")).toBe("00029000");
    expect(encodeVpcdFrame(Buffer.alloc(0)).toString("hex")).toBe("0000");
    expect(encodeVpcdFrame(Buffer.alloc(300)).subarray(0, 2).toString("hex")).toBe("012c");
    expect(() => encodeVpcdFrame(Buffer.alloc(0x10000))).toThrow(RangeError);
  });

  it("reads 1-byte payloads as control codes: 0 off, 1 on, 2 reset, 4 get ATR", () => {
    const p = new VpcdFrameParser();
    const out = p.push(Buffer.concat([frame("00"), frame("01"), frame("02"), frame("04"), frame("03")]));
    expect(out).toEqual([
      { kind: "control", code: VpcdControl.POWER_OFF },
      { kind: "control", code: VpcdControl.POWER_ON },
      { kind: "control", code: VpcdControl.RESET },
      { kind: "control", code: VpcdControl.GET_ATR },
      { kind: "unknown-control", code: 3 },
    ]);
  });

  it("reads longer payloads as APDUs and a zero-length one as empty", () => {
    expect(classifyVpcdPayload(Buffer.from("00A40400", "hex"))).toEqual({
      kind: "apdu",
      apdu: Buffer.from("00A40400", "hex"),
    });
    expect(classifyVpcdPayload(Buffer.from("0000", "hex"))).toMatchObject({ kind: "apdu" });
    expect(new VpcdFrameParser().push(Buffer.from("0000", "hex"))).toEqual([{ kind: "empty" }]);
  });

  it("reassembles frames that TCP split at any byte, including inside the length prefix", () => {
    const apdu = "00A4040007A000000004101000";
    const stream = Buffer.concat([frame("01"), frame("04"), frame(apdu), frame("80E2800003010100")]);
    for (let cut = 1; cut < stream.length; cut++) {
      const p = new VpcdFrameParser();
      const out = [...p.push(stream.subarray(0, cut)), ...p.push(stream.subarray(cut))];
      expect(out.map((m) => m.kind)).toEqual(["control", "control", "apdu", "apdu"]);
      expect(out[2]).toEqual({ kind: "apdu", apdu: Buffer.from(apdu, "hex") });
      expect(p.buffered).toBe(0);
    }
  });

  it("delivers byte-by-byte input as the same messages", () => {
    const stream = Buffer.concat([frame("04"), frame("80CA9F7F00")]);
    const p = new VpcdFrameParser();
    const out = [...stream].flatMap((b) => p.push(Buffer.from([b])));
    expect(out).toEqual([
      { kind: "control", code: 4 },
      { kind: "apdu", apdu: Buffer.from("80CA9F7F00", "hex") },
    ]);
  });

  it("keeps an incomplete frame until the rest arrives, and reset() drops it", () => {
    const p = new VpcdFrameParser();
    expect(p.push(Buffer.from("000500A4", "hex"))).toEqual([]);
    expect(p.buffered).toBe(4);
    p.reset();
    expect(p.buffered).toBe(0);
    expect(p.push(frame("04"))).toEqual([{ kind: "control", code: 4 }]);
  });

  it("does not alias the caller's chunk: an APDU stays intact when the chunk is reused", () => {
    const chunk = frame("80E2800003010100");
    const [msg] = new VpcdFrameParser().push(chunk);
    chunk.fill(0);
    expect(msg).toEqual({ kind: "apdu", apdu: Buffer.from("80E2800003010100", "hex") });
  });
});
