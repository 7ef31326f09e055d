import { describe, expect, it } from "vitest";
import type { DeviceFault } from "../../../drivers/device-fault.js";
import { isEncodableTrack } from "../../../drivers/magstripe/iso7813.js";
import {
  ERROR_REPLIES,
  encodeCommand,
  encodeCompressedBitmap,
  encodeRawBitmap,
  formatFeederVoltage,
  parseBezelSensor,
  parseCardPosition,
  parseCoverState,
  parseFeederVoltage,
  parseReply,
  parseRibbonRemaining,
  ReplySplitter,
} from "../../../drivers/printer/codec.js";
import { PANEL_BYTES } from "../../../drivers/printer/raster/geometry.js";
import { hex } from "./rig.js";

describe("encodeCommand", () => {
  it.each([
    // ESC 'S' 'i' CR
    ["Si: insert from feeder", "Si", [], "1B 53 69 0D"],
    // ESC 'S' 'i' 's' CR
    ["Sis: to the contact station", "Sis", [], "1B 53 69 73 0D"],
    // ESC 'P' 'e' 'm' ';' '2' CR
    ["Pem;2: host handles errors", "Pem", ["2"], "1B 50 65 6D 3B 32 0D"],
    // ESC 'R' 's' 'e' ';' 'f' CR
    ["Rse;f: feeder sensor", "Rse", ["f"], "1B 52 73 65 3B 66 0D"],
    // ESC 'R' 'r' 't' ';' 'c' 'o' 'u' 'n' 't' CR
    ["Rrt;count: ribbon left", "Rrt", ["count"], "1B 52 72 74 3B 63 6F 75 6E 74 0D"],
    // ESC 'S' 'e' 'b' CR: kiosk extension, eject to the mouth
    ["Seb: present in the mouth", "Seb", [], "1B 53 65 62 0D"],
    // ESC 'D' 'm' ';' '2' ';' then track data "123=45" then CR
    ["Dm;2;<data>: load track 2", "Dm", ["2", "123=45"], "1B 44 6D 3B 32 3B 31 32 33 3D 34 35 0D"],
  ])("%s", (_label, name, params, bytes) => {
    expect(encodeCommand(name, params)).toEqual(hex(bytes));
  });

  it("lets only the last parameter hold ';' (the device reads Dm data up to CR)", () => {
    // ESC 'D' 'm' ';' '1' ';' 'A' ';' 'B' CR
    expect(encodeCommand("Dm", ["1", "A;B"])).toEqual(hex("1B 44 6D 3B 31 3B 41 3B 42 0D"));
    expect(() => encodeCommand("Dm", ["1;2", "x"])).toThrow(RangeError);
  });

  it("refuses what would break the frame, without echoing the value", () => {
    const secret = "4111111111111111\r";
    expect(() => encodeCommand("Dm", ["2", secret])).toThrow(/Dm: parameter 2 is not encodable/);
    try {
      encodeCommand("Dm", ["2", secret]);
    } catch (err) {
      expect((err as Error).message).not.toContain("4111");
    }
    expect(() => encodeCommand("S i")).toThrow(RangeError);
  });

  it("Dbc carries the decimal payload length, then the payload as is (here holding CR and ESC)", () => {
    const payload = hex("0D 1B 00 FF 0D");
    // ESC "Dbc;k;2;5;" payload CR
    expect(encodeCompressedBitmap(payload)).toEqual(
      hex("1B 44 62 63 3B 6B 3B 32 3B 35 3B 0D 1B 00 FF 0D 0D"),
    );
  });

  it("Db carries exactly one raw panel", () => {
    const panel = Buffer.alloc(PANEL_BYTES, 0x0d);
    const frame = encodeRawBitmap(panel);
    // ESC "Db;k;2;" = 8 bytes, the panel, CR
    expect(frame.subarray(0, 8)).toEqual(hex("1B 44 62 3B 6B 3B 32 3B"));
    expect(frame.length).toBe(8 + PANEL_BYTES + 1);
    expect(frame.at(-1)).toBe(0x0d);
    expect(() => encodeRawBitmap(Buffer.alloc(10))).toThrow(RangeError);
  });
});

describe("parseReply", () => {
  it("OK and values", () => {
    expect(parseReply("OK")).toEqual({ kind: "ok" });
    expect(parseReply("5,00 Volts")).toEqual({ kind: "value", text: "5,00 Volts" });
  });

  const expected: Array<[string, DeviceFault]> = [
    ["ERROR CDE", "COMMAND_REJECTED"],
    ["ERROR PARAMETRES", "COMMAND_REJECTED"],
    ["ERROR TIME OUT", "DEVICE_TIMEOUT"],
    ["ERR TIME", "DEVICE_TIMEOUT"],
    ["HOPPER FULL", "REJECT_BOX_FULL"],
    ["COVER OPEN", "COVER_OPEN"],
    ["FEEDER EMPTY", "FEEDER_EMPTY"],
    ["CARD JAM", "CARD_JAM"],
    ["ERROR RIBBON", "RIBBON_OUT"],
    ["ERR RIBBON", "RIBBON_OUT"],
    ["ERR RIB DETECTION", "RIBBON_OUT"],
    ["ERROR MAG CHECKSUM", "MAG_READ"],
    ["ERROR MAG DATA", "MAG_WRITE"],
    ["ERR READ", "MAG_READ"],
    ["ERR WRITE", "MAG_WRITE"],
    ["REJECT BOX FULL", "REJECT_BOX_FULL"],
    ["CAPTURE BIN FULL", "CAPTURE_BIN_FULL"],
    ["NO CARD", "NO_CARD"],
  ];

  it.each(expected)("%s → %s", (text, fault) => {
    expect(parseReply(text)).toEqual({ kind: "error", fault, text });
  });

  it("the table has no entry the test does not pin", () => {
    expect(Object.keys(ERROR_REPLIES).sort()).toEqual(expected.map(([t]) => t).sort());
  });

  it("NO CARD answers Rbz (the mouth is empty) but is an error for anything else", () => {
    expect(parseReply("NO CARD", "Rbz")).toEqual({ kind: "value", text: "NO CARD" });
    expect(parseReply("NO CARD", "Sis")).toMatchObject({ kind: "error", fault: "NO_CARD" });
  });
});

describe("value parsers", () => {
  it("feeder voltage uses a decimal comma", () => {
    expect(parseFeederVoltage("5,00 Volts")).toBe(5);
    expect(parseFeederVoltage("0,00 Volts")).toBe(0);
    expect(parseFeederVoltage("5.00 Volts")).toBeUndefined();
    expect(formatFeederVoltage(5)).toBe("5,00 Volts");
  });

  it("ribbon count, cover, position, bezel", () => {
    expect(parseRibbonRemaining("742")).toBe(742);
    expect(parseRibbonRemaining("ERR RIB DETECTION")).toBeUndefined();
    expect(parseCoverState("OPEN")).toBe("OPEN");
    expect(parseCoverState("open")).toBeUndefined();
    expect(parseCardPosition("BEZEL")).toBe("BEZEL");
    expect(parseCardPosition("EJECT")).toBeUndefined();
    expect(parseBezelSensor("CARD")).toBe(true);
    expect(parseBezelSensor("NO CARD")).toBe(false);
    expect(parseBezelSensor("OK")).toBeUndefined();
  });

  it("track data: ISO charset and length, no sentinels", () => {
    expect(isEncodableTrack(2, "4111111111111111=25121010000000000000")).toBe(true);
    expect(isEncodableTrack(2, ";4111111111111111=2512?")).toBe(false);
    expect(isEncodableTrack(2, "4".repeat(38))).toBe(false);
    expect(isEncodableTrack(1, "B4111111111111111^DOE/JOHN^2512101")).toBe(true);
    expect(isEncodableTrack(1, "%B4111111111111111^DOE/JOHN^2512101")).toBe(false);
    expect(isEncodableTrack(3, "")).toBe(false);
  });
});

describe("ReplySplitter", () => {
  it("reassembles lines cut anywhere", () => {
    const splitter = new ReplySplitter();
    expect(splitter.push(hex("4F"))).toEqual([]); // "O"
    expect(splitter.push(hex("4B 0D 35 2C"))).toEqual(["OK"]); // "K" CR "5,"
    expect(splitter.push(Buffer.from("00 Volts\r"))).toEqual(["5,00 Volts"]);
    expect(splitter.droppedFrames).toBe(0);
  });

  it("drops a line of noise, counts it, and takes the next line clean", () => {
    const splitter = new ReplySplitter();
    // High bytes then CR (noise), then "OK" CR.
    expect(splitter.push(hex("9F E3 00 41 0D 4F 4B 0D"))).toEqual(["OK"]);
    expect(splitter.droppedFrames).toBe(1);
  });

  it("drops an overlong line without buffering it all", () => {
    const splitter = new ReplySplitter({ maxLineLength: 8 });
    expect(splitter.push(Buffer.from("ABCDEFGHIJKLMNOP"))).toEqual([]);
    expect(splitter.push(Buffer.from("QRS\rCARD\r"))).toEqual(["CARD"]);
    expect(splitter.droppedFrames).toBe(1);
  });

  it("tolerates CR LF line ends and ignores empty lines", () => {
    const splitter = new ReplySplitter();
    expect(splitter.push(Buffer.from("OK\r\nCARD\r\n\r"))).toEqual(["OK", "CARD"]);
    expect(splitter.droppedFrames).toBe(0);
  });

  it("reset() forgets a half line", () => {
    const splitter = new ReplySplitter();
    splitter.push(Buffer.from("GARB"));
    splitter.reset();
    expect(splitter.push(Buffer.from("OK\r"))).toEqual(["OK"]);
  });
});
