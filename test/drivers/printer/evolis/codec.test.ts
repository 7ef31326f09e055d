import { describe, expect, it } from "vitest";
import {
  classifyReply,
  ERROR_PREFIXES,
  encodeCommand,
  encodeCompressedPanel,
  errorFaultOf,
  formatVolts,
  parseBoxFullReply,
  parseCleaningReply,
  parseCount,
  parseInsidePosition,
  parseVolts,
} from "../../../../drivers/printer/evolis/codec.js";
import { hex } from "./rig.js";

describe("Evolis codec: framing (guide §3)", () => {
  it("ESC command ; parameters CR", () => {
    expect(encodeCommand("Si")).toEqual(hex("1B 53 69 0D"));
    expect(encodeCommand("Pneab", ["A", "1"])).toEqual(hex("1B 50 6E 65 61 62 3B 41 3B 31 0D"));
    expect(encodeCommand("Rse", ["b"])).toEqual(hex("1B 52 73 65 3B 62 0D"));
  });

  it("Dbc;k;2;<n>;<payload>CR, as the Windows driver sends it", () => {
    expect(encodeCompressedPanel(hex("00 FF 01 AA"))).toEqual(
      Buffer.concat([Buffer.from("\x1bDbc;k;2;4;", "latin1"), hex("00 FF 01 AA 0D")]),
    );
  });

  it("refuses parameters that would break the framing, naming the command only", () => {
    expect(() => encodeCommand("Dm", ["2", "41\r11"])).toThrow("Dm: parameter 2 is not encodable");
    expect(() => encodeCommand("Pbc", ["A;B", "D"])).toThrow("Pbc: parameter 1 is not encodable");
    // Only the last parameter may hold `;` (track 1 data can).
    expect(encodeCommand("Dm", ["1", "B4^A;B^2"]).toString("latin1")).toBe("\x1bDm;1;B4^A;B^2\r");
  });
});

describe("Evolis codec: replies", () => {
  it("recognises every error text of the public record at once, by prefix (libevolis EVOLIS_REPLY_IS_ERR)", () => {
    const cases: Array<[string, string]> = [
      ["ERROR CDE", "COMMAND_REJECTED"],
      ["ERROR PARAMETRES", "COMMAND_REJECTED"],
      ["ERROR PARAMETERS", "COMMAND_REJECTED"],
      ["OPT NOT AVAILABLE", "COMMAND_REJECTED"],
      ["ERROR TIME OUT", "MECHANICAL_ERROR"],
      ["ERR TIME", "MECHANICAL_ERROR"],
      ["ERROR HEAD", "MECHANICAL_ERROR"],
      ["ERROR HOPPER", "MECHANICAL_ERROR"],
      ["HOPPER FULL", "REJECT_BOX_FULL"],
      ["HOPPER DOOR", "COVER_OPEN"],
      ["COVER OPEN", "COVER_OPEN"],
      ["FEEDER EMPTY", "FEEDER_EMPTY"],
      ["CARD JAM", "CARD_JAM"],
      ["ERROR RIBBON", "RIBBON_OUT"],
      ["ERR RIBBON", "RIBBON_OUT"],
      ["ERR RIB DETECTION", "RIBBON_OUT"],
      ["ERROR MAG", "MAG_WRITE"],
      ["ERROR MAGN", "MAG_WRITE"],
      ["ERROR MAG DATA", "MAG_WRITE"],
      ["ERROR MAGN DATA", "MAG_WRITE"],
      ["ERR WRITE", "MAG_WRITE"],
      ["ERROR MAG CHECKSUM", "MAG_READ"],
      ["ERROR MAGN CHECKSUM", "MAG_READ"],
      ["ERR READ", "MAG_READ"],
      ["ERR NEED CLEANING", "CLEANING_REQUIRED"],
      ["NEED CLEANING", "CLEANING_REQUIRED"],
      ["NO CARD", "NO_CARD"],
      ["ERR CARD", "CARD_IN_PATH"],
      ["ERROR UNKNOW", "PRINTER_ERROR"],
      ["ERROR FLASH UNKNOW", "PRINTER_ERROR"],
      ["ERROR", "PRINTER_ERROR"],
      ["ERR 42 SOMETHING NEW", "PRINTER_ERROR"],
    ];
    for (const [text, fault] of cases) {
      expect(classifyReply(text), text).toEqual({ kind: "error", fault, text });
    }
    // Longer wording from another firmware still lands on its row.
    expect(errorFaultOf("ERROR MAGN DATA TRACK 2")).toBe("MAG_WRITE");
    expect(errorFaultOf("COVER OPEN (REAR)")).toBe("COVER_OPEN");
  });

  it("longer prefixes win over shorter ones", () => {
    const prefixes = ERROR_PREFIXES.map(([p]) => p);
    for (let i = 1; i < prefixes.length; i++)
      expect(prefixes[i]!.length).toBeLessThanOrEqual(prefixes[i - 1]!.length);
  });

  it("OK is OK; anything else is a value", () => {
    expect(classifyReply("OK")).toEqual({ kind: "ok" });
    expect(classifyReply("5,00 Volts")).toEqual({ kind: "value", text: "5,00 Volts" });
    expect(classifyReply("CARD")).toEqual({ kind: "value", text: "CARD" });
  });

  it("sensor voltages with a decimal comma (kiosk driver: `0,2x Volts`, `4,9x Volts`)", () => {
    expect(parseVolts("5,00 Volts")).toBe(5);
    expect(parseVolts("0,21 Volts")).toBe(0.21);
    expect(parseVolts("3,92 Volts")).toBe(3.92);
    expect(parseVolts("4.95V")).toBe(4.95);
    expect(parseVolts("OK")).toBeUndefined();
    expect(parseVolts("12 Volts")).toBeUndefined();
    expect(formatVolts(4.95)).toBe("4,95 Volts");
    expect(formatVolts(0)).toBe("0,00 Volts");
  });

  it("Rlr;p in both dialects: the kiosk driver's (OK / CARD / SMART CARD / CONTACTLESS CARD) and the guide's", () => {
    expect(parseInsidePosition("OK")).toBe("NONE");
    expect(parseInsidePosition("CARD")).toBe("INSIDE");
    expect(parseInsidePosition("SMART CARD")).toBe("CONTACT");
    expect(parseInsidePosition("CONTACTLESS CARD")).toBe("CONTACTLESS");
    expect(parseInsidePosition("NO CARD")).toBe("NONE");
    expect(parseInsidePosition("ERR CARD")).toBe("INSIDE");
    expect(parseInsidePosition("5,00 Volts")).toBeUndefined();
  });

  it("Rlr;r, Rlr;h and counters", () => {
    expect(parseCleaningReply("ERR NEED CLEANING")).toBe(true);
    expect(parseCleaningReply("OK")).toBe(false);
    expect(parseCleaningReply("CARD")).toBeUndefined();
    expect(parseBoxFullReply("CARD")).toBe(true);
    expect(parseBoxFullReply("NO CARD")).toBe(false);
    expect(parseCount("148")).toBe(148);
    expect(parseCount("OK")).toBeUndefined();
    expect(parseCount("-3")).toBeUndefined();
  });
});
