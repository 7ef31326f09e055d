import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../../agent/util/clock.js";
import { blankImage, sameImage, setPixel } from "../../../drivers/printer/card-image.js";
import { encodeCommand, encodeRawPanel } from "../../../drivers/printer/evolis/codec.js";
import type { EvolisCommandName } from "../../../drivers/printer/evolis/commands.js";
import { compressKO } from "../../../drivers/printer/evolis/ko-compression.js";
import { EVOLIS_PRINT_AREA, panelFromImage } from "../../../drivers/printer/evolis/panel.js";
import { ReplyReader } from "../../../drivers/printer/evolis/reply-reader.js";
import { FAULT_RULES } from "../../../simulator/printer/faults.js";
import {
  POWER_ON_SETTINGS,
  VirtualEvolisPrinter,
  type VirtualPrinterOptions,
} from "../../../simulator/printer/virtual-evolis-printer.js";
import type { VirtualSerialLink } from "../../../simulator/serial/virtual-binding.js";

const TRACK2 = "5266092201416174=16042010000056700100";

const turn = () => new Promise<void>((r) => setImmediate(r));

/** The printer on a bare link: the test plays the host, byte for byte. */
function bench(options: VirtualPrinterOptions = {}) {
  const clock = new ManualClock();
  const printer = new VirtualEvolisPrinter({ clock, ...options });
  const raw: Buffer[] = [];
  const replies: string[] = [];
  const reader = new ReplyReader({ clock, onReply: (t) => replies.push(t) });
  const link = {
    path: "/dev/test",
    plugged: true,
    unplugs: 0,
    send(bytes: Buffer) {
      raw.push(bytes);
      reader.push(bytes);
    },
    unplug() {
      this.plugged = false;
      this.unplugs++;
    },
    replug() {
      this.plugged = true;
    },
  };
  printer.attach(link satisfies VirtualSerialLink);
  /** Sends one command and returns the reply, or undefined when none came. */
  const ask = async (name: EvolisCommandName | string, params: string[] = [], binary?: Buffer) => {
    const before = replies.length;
    const frame =
      binary === undefined
        ? Buffer.from(`\x1b${[name, ...params].join(";")}\r`, "latin1")
        : encodeCommand(name as EvolisCommandName, params, binary);
    printer.receive(frame);
    for (let i = 0; i < 5 && replies.length === before; i++) await turn();
    return replies[before];
  };
  /** The kiosk start-up settings, as the adapter sends them. */
  const kiosk = async () => {
    for (const c of ["Pem;2", "Pcim;F", "Pcem;I", "Psmgr;2", "Pneab;E", "Pcrm;D", "Pbc;A;D"]) {
      const [name, ...params] = c.split(";");
      expect(await ask(name!, params)).toBe("OK");
    }
  };
  return { clock, printer, link, ask, kiosk, replies, raw };
}

const image = (width: number) => {
  const i = blankImage(EVOLIS_PRINT_AREA);
  for (let x = 0; x < width; x++) for (let y = 0; y < 648; y++) setPixel(i, x, y);
  return i;
};
const payload = (width: number) => compressKO(panelFromImage(image(width)));

describe("VirtualEvolisPrinter: the physical model", () => {
  it("feeds cards until the feeder is empty, and its sensors say so in volts", async () => {
    const { ask } = bench({ feederCards: 1, feederNearEmptyAt: 1 });
    expect(await ask("Rse", ["f"])).toBe("5,00 Volts");
    expect(await ask("Rse", ["n"])).toBe("3,92 Volts"); // near empty: one card left
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Si")).toBe("ERR CARD"); // a card is already inside
    expect(await ask("Ser")).toBe("OK");
    expect(await ask("Si")).toBe("FEEDER EMPTY");
    expect(await ask("Rse", ["f"])).toBe("0,00 Volts");
  });

  it("Rlr;p says where the card is inside (kiosk driver replies); Rse;b reads the mouth", async () => {
    const { ask, kiosk } = bench({ takeAfterMs: null });
    await kiosk();
    expect(await ask("Rlr", ["p"])).toBe("OK");
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Rlr", ["p"])).toBe("CARD");
    expect(await ask("Sis")).toBe("OK");
    expect(await ask("Rlr", ["p"])).toBe("SMART CARD");
    expect(await ask("Rse", ["b"])).toBe("0,21 Volts");
    expect(await ask("Pneab", ["A", "1"])).toBe("OK");
    expect(await ask("Se")).toBe("OK");
    expect(await ask("Rlr", ["p"])).toBe("OK"); // out of the printer…
    expect(await ask("Rse", ["b"])).toBe("4,95 Volts"); // …and in the mouth
  });

  it("Sis with no card inserts one and parks it at the contact station (guide p.59)", async () => {
    const { ask, printer } = bench();
    expect(await ask("Sis")).toBe("OK");
    expect(printer.state.position).toBe("CONTACT");
    expect(printer.state.counters.cardsInserted).toBe(1);
  });

  it("Pneab: the printing Se ejects only with Pneab;D and Pneab;A;1; an empty Se ejects when Pneab;A allows", async () => {
    const { ask, printer } = bench({ takeAfterMs: null });
    expect(printer.state.settings).toEqual(POWER_ON_SETTINGS);
    // Power-on: the Windows driver's job prints and ejects.
    for (const c of ["Ss", "Sr"]) expect(await ask(c)).toBe("OK");
    expect(await ask("Dbc", ["k", "2", String(payload(4).length)], payload(4))).toBe("OK");
    expect(await ask("Se")).toBe("OK");
    expect(printer.state.position).toBe("MOUTH");
    printer.takeCardNow();
    // The kiosk way: no ejection at the end of printing…
    expect(await ask("Pneab", ["E"])).toBe("OK");
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Ss")).toBe("OK");
    expect(await ask("Dbc", ["k", "2", String(payload(4).length)], payload(4))).toBe("OK");
    expect(await ask("Se")).toBe("OK");
    expect(printer.state.position).toBe("INSIDE");
    // …nor any ejection while Pneab;A;0…
    expect(await ask("Pneab", ["A", "0"])).toBe("OK");
    expect(await ask("Se")).toBe("OK");
    expect(printer.state.position).toBe("INSIDE");
    // …until Pneab;A;1: then Se presents it.
    expect(await ask("Pneab", ["A", "1"])).toBe("OK");
    expect(await ask("Se")).toBe("OK");
    expect(printer.state.position).toBe("MOUTH");
    expect(printer.commandLog.slice(-2)).toEqual(["Pneab;A;1", "Se>mouth"]);
  });

  it("Pcem;N sends an ejected card to the reject box instead of the mouth", async () => {
    const { ask, printer } = bench();
    expect(await ask("Pcem", ["N"])).toBe("OK");
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Se")).toBe("OK");
    expect(printer.record[0]!.outcome).toBe("rejected");
    expect(printer.state.rejectBox.count).toBe(1);
  });

  it("Pbc: after the bezel delay the printer rejects (R, power-on), re-inserts (N) or leaves (D) an untaken card", async () => {
    for (const [action, position, outcome] of [
      ["R", "NONE", "captured"],
      ["N", "INSIDE", "in-printer"],
      ["D", "MOUTH", "in-printer"],
    ] as const) {
      const { ask, printer, clock } = bench({ takeAfterMs: null });
      expect(await ask("Pbc", ["A", action])).toBe("OK");
      expect(await ask("Pbc", ["D", "10"])).toBe("OK");
      expect(await ask("Si")).toBe("OK");
      expect(await ask("Se")).toBe("OK");
      clock.advance(9_999);
      expect(printer.state.position).toBe("MOUTH");
      clock.advance(1);
      expect(printer.state.position, action).toBe(position);
      expect(printer.record[0]!.outcome, action).toBe(outcome);
    }
  });

  it("Sib takes a card in the mouth back in; with nothing there it is the printer's own timeout", async () => {
    const { ask, printer, kiosk } = bench({ takeAfterMs: null });
    await kiosk();
    expect(await ask("Sib")).toBe("ERROR TIME OUT");
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Pneab", ["A", "1"])).toBe("OK");
    expect(await ask("Se")).toBe("OK");
    expect(await ask("Sib")).toBe("OK");
    expect(printer.state.position).toBe("INSIDE");
    expect(await ask("Ser")).toBe("OK");
    // It had been presented: the reject box holds a captured card, not a spoiled one.
    expect(printer.record[0]!.outcome).toBe("captured");
  });

  it("the reject box fills up: Rlr;h reads CARD and Ser answers HOPPER FULL", async () => {
    const { ask, printer } = bench({ rejectBoxCapacity: 1 });
    expect(await ask("Rlr", ["h"])).toBe("NO CARD");
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Ser")).toBe("OK");
    expect(await ask("Rlr", ["h"])).toBe("CARD");
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Ser")).toBe("HOPPER FULL");
    expect(printer.emptyRejectBox()).toBe(1);
    expect(await ask("Ser")).toBe("OK");
  });

  it("prints what it is sent, K/O or raw, and decodes it the way the cardholder sees it", async () => {
    const { ask, printer } = bench({ takeAfterMs: null });
    expect(await ask("Pneab", ["E"])).toBe("OK");
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Ss")).toBe("OK");
    expect(await ask("Sr")).toBe("OK");
    expect(await ask("Dbc", ["k", "2", String(payload(10).length)], payload(10))).toBe("OK");
    expect(await ask("Sv")).toBe("OK");
    expect(await ask("Db", ["k", "2"], panelFromImage(image(3)))).toBe("OK");
    expect(await ask("Se")).toBe("OK");
    const card = printer.record[0]!;
    expect(sameImage(card.front!, image(10))).toBe(true);
    expect(sameImage(card.back!, image(3))).toBe(true);
    expect([card.frontInkDots, card.backInkDots]).toEqual([10 * 648, 3 * 648]);
    expect(printer.state.ribbonPanels).toBe(998);
    expect(await ask("Rco", ["p"])).toBe("2");
    expect(await ask("Rco", ["c"])).toBe("1");
  });

  it("refuses panels outside a sequence, with bad parameters or a payload that does not decode", async () => {
    const { ask } = bench();
    expect(await ask("Dbc", ["k", "2", String(payload(1).length)], payload(1))).toBe("ERROR CDE");
    expect(await ask("Ss")).toBe("OK");
    expect(await ask("Dbc", ["k", "2", "3"], Buffer.from([5, 1, 2]))).toBe("ERROR PARAMETRES");
    expect(await ask("Dbc", ["o", "2", String(payload(1).length)], payload(1))).toBe("ERROR PARAMETRES");
  });

  it("a raw Db panel whose bytes hold CR, ESC and NUL is framed by length", async () => {
    const { ask } = bench();
    const panel = Buffer.alloc(82_296);
    panel.fill(0x0d, 0, 100);
    panel.fill(0x1b, 100, 200);
    expect(await ask("Ss")).toBe("OK");
    expect(await ask("Db", ["k", "2"], panel)).toBe("OK");
    expect(encodeRawPanel(panel).length).toBe(82_296 + 9);
  });

  it("answers ERROR CDE to anything outside the record, ERROR PARAMETRES to bad parameters", async () => {
    const { ask } = bench();
    for (const invented of ["Rcv", "Rpos", "Rbz", "Scb", "Xyz"])
      expect(await ask(invented)).toBe("ERROR CDE");
    expect(await ask("Wbz", ["500"])).toBe("ERROR CDE");
    expect(await ask("Pem", ["x"])).toBe("ERROR PARAMETRES");
    expect(await ask("Rse", ["z"])).toBe("ERROR PARAMETRES");
    expect(await ask("Pneab", ["A", "7"])).toBe("ERROR PARAMETRES");
  });

  it("writes tracks, keeps only their hash and masked PAN, and reads them back through Rmb (or Smr directly)", async () => {
    for (const magReadBack of ["rmb", "direct"] as const) {
      const { ask, printer } = bench({ magReadBack });
      expect(await ask("Si")).toBe("OK");
      expect(await ask("Smw")).toBe("ERROR MAGN DATA"); // nothing loaded
      expect(await ask("Dm", ["2", TRACK2])).toBe("OK");
      expect(await ask("Smw")).toBe("OK");
      if (magReadBack === "rmb") {
        expect(await ask("Smr", ["2"])).toBe("OK");
        expect(await ask("Rmb", ["2"])).toBe(TRACK2);
      } else {
        expect(await ask("Smr", ["2"])).toBe(TRACK2);
      }
      expect(await ask("Smr", ["1"])).toBe("ERROR MAGN CHECKSUM"); // never written
      expect(printer.record[0]!.tracks).toEqual([
        { n: 2, sha256: createHash("sha256").update(TRACK2).digest("hex"), maskedPan: "526609******6174" },
      ]);
      expect(JSON.stringify(printer.cardsForRecord())).not.toContain("5266092201416174");
    }
  });

  it("the cardholder takes a presented card after takeAfterMs", async () => {
    const { ask, printer, clock } = bench({ takeAfterMs: 300 });
    const events: string[] = [];
    printer.on("card-presented", () => events.push("presented"));
    printer.on("card-taken", () => events.push("taken"));
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Se")).toBe("OK");
    clock.advance(299);
    expect(printer.state.position).toBe("MOUTH");
    clock.advance(1);
    expect(printer.state.position).toBe("NONE");
    expect(events).toEqual(["presented", "taken"]);
  });

  it("ends replies with NUL by default, or CR, CR LF, or nothing at all", async () => {
    for (const [replyTerminator, bytes] of [
      ["NUL", "OK\0"],
      ["CR", "OK\r"],
      ["CRLF", "OK\r\n"],
      ["none", "OK"],
    ] as const) {
      const { printer, raw, clock } = bench({ replyTerminator });
      printer.receive(Buffer.from("\x1bPem;2\r"));
      await turn();
      clock.advance(100);
      expect(Buffer.concat(raw).toString("latin1")).toBe(bytes);
    }
  });

  it("answers after the configured latency, one command at a time, in order", async () => {
    const { printer, replies, clock } = bench({ latency: { commandMs: 20 } });
    printer.receive(Buffer.from("\x1bRse;f\r\x1bRsn\r\x1bRlr;p\r"));
    clock.advance(19);
    await turn();
    expect(replies).toEqual([]);
    clock.advance(1);
    await turn();
    expect(replies).toEqual(["5,00 Volts"]);
    clock.advance(40);
    await turn();
    await turn();
    expect(replies).toEqual(["5,00 Volts", "SIM0000001", "OK"]);
  });

  it("keeps only the last keepRecords finished cards", async () => {
    const { ask, printer } = bench({ keepRecords: 2 });
    for (let i = 0; i < 5; i++) {
      expect(await ask("Si")).toBe("OK");
      expect(await ask("Ser")).toBe("OK");
    }
    expect(printer.record.map((c) => c.serial)).toEqual([4, 5]);
  });
});

describe("VirtualEvolisPrinter: faults, each with a documented reply", () => {
  it("the fault table: every fault hits a step and answers with a text of the public record", () => {
    const documented = new Set([
      "FEEDER EMPTY",
      "CARD JAM",
      "ERROR RIBBON",
      "COVER OPEN",
      "ERROR MAGN DATA",
      "ERR NEED CLEANING",
      "HOPPER FULL",
      "ERROR FLASH UNKNOW",
      "OK",
    ]);
    for (const [name, rule] of Object.entries(FAULT_RULES)) {
      expect(rule.hits.length, name).toBeGreaterThan(0);
      if (rule.effect.kind === "refuse" || rule.effect.kind === "jam") {
        expect(documented.has(rule.effect.reply), name).toBe(true);
      }
    }
  });

  it("power-cycle: every setting back to its power-on value before the command runs", async () => {
    const { ask, printer, kiosk } = bench();
    await kiosk();
    printer.injectFault("power-cycle");
    expect(await ask("Si")).toBe("OK");
    expect(printer.state.settings).toEqual(POWER_ON_SETTINGS);
  });

  it("count: N fires on the next N cards; persistent until clearFaults()", async () => {
    const { ask, printer } = bench();
    printer.injectFault("feeder-empty", { count: 2 });
    expect(await ask("Si")).toBe("FEEDER EMPTY");
    expect(await ask("Si")).toBe("FEEDER EMPTY");
    expect(await ask("Si")).toBe("OK");
    printer.injectFault("cover-open", { persistent: true });
    expect(await ask("Rse", ["o"])).toBe("0,00 Volts");
    printer.clearFaults();
    expect(await ask("Rse", ["o"])).toBe("5,00 Volts");
  });

  it("ribbon-out, cover-open, needs-cleaning hit the printing Se and abort the sequence", async () => {
    for (const [fault, reply] of [
      ["ribbon-out", "ERROR RIBBON"],
      ["cover-open", "COVER OPEN"],
      ["needs-cleaning", "ERR NEED CLEANING"],
    ] as const) {
      const { ask, printer } = bench();
      expect(await ask("Si")).toBe("OK");
      printer.injectFault(fault);
      expect(await ask("Ss")).toBe("OK");
      expect(await ask("Dbc", ["k", "2", String(payload(2).length)], payload(2))).toBe("OK");
      expect(await ask("Se")).toBe(reply);
      expect(printer.record[0]!.front).toBeUndefined();
    }
    const { ask, printer } = bench();
    printer.injectFault("ribbon-out", { persistent: true });
    expect(await ask("Rrt", ["count"])).toBe("ERR RIB DETECTION");
    printer.clearFaults();
    printer.injectFault("needs-cleaning", { persistent: true });
    expect(await ask("Rlr", ["r"])).toBe("ERR NEED CLEANING");
  });

  it("cleaning: Rlr;r advises it after N cards, until a cleaning (Scp with no card in the path, or clean())", async () => {
    const { ask, printer } = bench({ cleaningAdvisedAfterCards: 2, cleaningRequiredAfterCards: 3 });
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Rlr", ["r"])).toBe("OK");
    expect(await ask("Ser")).toBe("OK");
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Rlr", ["r"])).toBe("ERR NEED CLEANING");
    expect(await ask("Ser")).toBe("OK");
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Scp")).toBe("ERR CARD");
    expect(await ask("Ser")).toBe("OK");
    expect(await ask("Scp")).toBe("OK");
    expect(await ask("Rlr", ["r"])).toBe("OK");
    expect(await ask("Rco", ["n"])).toBe("1");
    printer.injectFault("needs-cleaning", { persistent: true });
    expect(await ask("Rlr", ["r"])).toBe("ERR NEED CLEANING");
    printer.clearFaults();
    printer.clean();
    expect(await ask("Rlr", ["r"])).toBe("OK");
  });

  it("timeout swallows the command; garbage precedes or replaces the reply; slow multiplies the latency", async () => {
    const a = bench();
    a.printer.injectFault("timeout");
    expect(await a.ask("Si")).toBeUndefined();
    expect(a.printer.state.position).toBe("NONE");
    const b = bench();
    b.printer.injectFault("garbage", { thenReply: true });
    expect(await b.ask("Si")).toBe("OK");
    const c = bench({ latency: { commandMs: 10 } });
    c.printer.injectFault("slow", { factor: 5 });
    c.printer.receive(Buffer.from("\x1bRsn\r"));
    c.clock.advance(49);
    await turn();
    expect(c.replies).toEqual([]);
    c.clock.advance(1);
    await turn();
    expect(c.replies).toEqual(["SIM0000001"]);
  });

  it("unplug pulls the cable instead of answering, and plugs it back after replugAfterMs", async () => {
    const { ask, printer, link, clock } = bench();
    printer.injectFault("unplug", { replugAfterMs: 500 });
    expect(await ask("Si")).toBeUndefined();
    expect(link.unplugs).toBe(1);
    expect(link.plugged).toBe(false);
    clock.advance(500);
    expect(link.plugged).toBe(true);
  });
});
