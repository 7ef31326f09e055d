import { describe, expect, it } from "vitest";
import {
  encodeCommand,
  encodeCompressedPanel,
  encodeRawPanel,
} from "../../../../drivers/printer/evolis/codec.js";
import { CommandParser } from "../../../../drivers/printer/evolis/command-parser.js";
import { PANEL_BYTES } from "../../../../drivers/printer/evolis/panel.js";
import { hex } from "./rig.js";

describe("Evolis CommandParser (device side, the simulator's)", () => {
  it("Si: 1B 53 69 0D", () => {
    expect(new CommandParser().push(hex("1B 53 69 0D"))).toEqual([
      { kind: "command", name: "Si", params: [] },
    ]);
  });

  it("splits parameters, and several commands in one chunk", () => {
    // ESC "Pem;2" CR ESC "Rse;f" CR
    const parsed = new CommandParser().push(hex("1B 50 65 6D 3B 32 0D 1B 52 73 65 3B 66 0D"));
    expect(parsed).toEqual([
      { kind: "command", name: "Pem", params: ["2"] },
      { kind: "command", name: "Rse", params: ["f"] },
    ]);
  });

  it("reassembles a command fed one byte at a time", () => {
    const parser = new CommandParser();
    const out = [...encodeCommand("Smr", ["2"])].flatMap((b) => parser.push(Buffer.of(b)));
    expect(out).toEqual([{ kind: "command", name: "Smr", params: ["2"] }]);
  });

  it("Dm keeps everything after the second ';' as the track data", () => {
    const parsed = new CommandParser().push(encodeCommand("Dm", ["1", "B41^A;B^25"]));
    expect(parsed).toEqual([{ kind: "command", name: "Dm", params: ["1", "B41^A;B^25"] }]);
  });

  it("drops noise before an ESC and counts it", () => {
    const parser = new CommandParser();
    // Three noise bytes (one of them CR), then ESC "Si" CR.
    expect(parser.push(hex("FF 0D 00 1B 53 69 0D"))).toEqual([{ kind: "command", name: "Si", params: [] }]);
    expect(parser.droppedBytes).toBe(3);
  });

  it("reads Db by its fixed length, so CR and ESC inside the bitmap are data", () => {
    const panel = Buffer.alloc(PANEL_BYTES);
    panel.fill(0x0d, 0, 100);
    panel.fill(0x1b, 100, 200);
    const frame = encodeRawPanel(panel);
    const parser = new CommandParser();
    // In two pieces cut inside the bitmap.
    const out = [...parser.push(frame.subarray(0, 50)), ...parser.push(frame.subarray(50))];
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ kind: "command", name: "Db", params: ["k", "2"] });
    expect((out[0] as { binary: Buffer }).binary.equals(panel)).toBe(true);
  });

  it("reads Dbc by its declared length", () => {
    const payload = hex("0D 0D 1B 0D");
    const out = new CommandParser().push(
      Buffer.concat([encodeCompressedPanel(payload), encodeCommand("Se")]),
    );
    expect(out).toEqual([
      { kind: "command", name: "Dbc", params: ["k", "2", "4"], binary: payload },
      { kind: "command", name: "Se", params: [] },
    ]);
  });

  it("a bitmap whose trailer is not CR is malformed; the parser picks up at the next ESC", () => {
    // ESC "Dbc;k;2;2;" AA BB, then (no CR) ESC "Si" CR
    const out = new CommandParser().push(hex("1B 44 62 63 3B 6B 3B 32 3B 32 3B AA BB 1B 53 69 0D"));
    expect(out).toEqual([
      { kind: "malformed", name: "Dbc" },
      { kind: "command", name: "Si", params: [] },
    ]);
  });

  it("a Dbc with an impossible length is malformed", () => {
    expect(new CommandParser().push(Buffer.from("\x1bDbc;k;2;abc;"))).toEqual([
      { kind: "malformed", name: "Dbc" },
    ]);
  });

  it("a command cut short by the next ESC is dropped", () => {
    const parser = new CommandParser();
    // ESC "Se" (no CR) ESC "Rsn" CR
    expect(parser.push(hex("1B 53 65 1B 52 73 6E 0D"))).toEqual([
      { kind: "command", name: "Rsn", params: [] },
    ]);
    expect(parser.droppedFrames).toBe(1);
  });

  it("a header with a control byte is dropped", () => {
    const parser = new CommandParser();
    expect(parser.push(hex("1B 53 00 69 0D 1B 53 69 0D"))).toEqual([
      { kind: "command", name: "Si", params: [] },
    ]);
    expect(parser.droppedFrames).toBe(1);
  });

  it("well framed but unknown commands come out as unknown (answered ERROR CDE): nothing outside the record", () => {
    const parsed = new CommandParser().push(
      Buffer.from("\x1bXyz;1\r\x1bRpos\r\x1bWbz;500\r\x1bScb\r", "latin1"),
    );
    expect(parsed).toEqual([
      { kind: "unknown", name: "Xyz" },
      { kind: "unknown", name: "Rpos" },
      { kind: "unknown", name: "Wbz" },
      { kind: "unknown", name: "Scb" },
    ]);
  });

  it("after a CR the ESC may be left out (guide §3: not compulsory after the CR character)", () => {
    expect(new CommandParser().push(Buffer.from("\x1bPem;2\rSi\rRse;b\r", "latin1"))).toEqual([
      { kind: "command", name: "Pem", params: ["2"] },
      { kind: "command", name: "Si", params: [] },
      { kind: "command", name: "Rse", params: ["b"] },
    ]);
  });

  it("NUL padding between commands is noise (the Windows driver pads its jobs)", () => {
    const parser = new CommandParser();
    expect(parser.push(hex("00 00 1B 53 65 3B 31 0D 00 00 00"))).toEqual([
      { kind: "command", name: "Se", params: ["1"] },
    ]);
    expect(parser.droppedBytes).toBe(5);
  });

  it("Db of a colour panel cannot be sized: malformed", () => {
    expect(new CommandParser().push(Buffer.from("\x1bDb;y;32;", "latin1"))).toEqual([
      { kind: "malformed", name: "Db" },
    ]);
  });
});
