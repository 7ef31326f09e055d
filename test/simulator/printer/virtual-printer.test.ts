import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../../agent/util/clock.js";
import { encodeCommand, encodeRawBitmap, ReplySplitter } from "../../../drivers/printer/codec.js";
import { compressPanel } from "../../../drivers/printer/raster/compress.js";
import { blankPanel } from "../../../drivers/printer/raster/geometry.js";
import { FAULT_RULES } from "../../../simulator/printer/faults.js";
import { VirtualPrinter, type VirtualPrinterOptions } from "../../../simulator/printer/virtual-printer.js";
import type { VirtualSerialLink } from "../../../simulator/serial/virtual-binding.js";

const TRACK2 = "5266092201416174=16042010000056700100";

const turn = () => new Promise<void>((r) => setImmediate(r));

/** The printer on a bare link: the test plays the host, byte for byte. */
function bench(options: VirtualPrinterOptions = {}) {
  const clock = new ManualClock();
  const printer = new VirtualPrinter({ clock, ...options });
  const raw: Buffer[] = [];
  const splitter = new ReplySplitter();
  const lines: string[] = [];
  const link = {
    path: "/dev/test",
    plugged: true,
    unplugs: 0,
    send(bytes: Buffer) {
      raw.push(bytes);
      lines.push(...splitter.push(bytes));
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
  /** Sends one command and returns the reply line, or undefined when none came. */
  const ask = async (name: string, params: string[] = [], binary?: Buffer): Promise<string | undefined> => {
    const before = lines.length;
    printer.receive(encodeCommand(name, params, binary));
    for (let i = 0; i < 5 && lines.length === before; i++) await turn();
    return lines[before];
  };
  return { clock, printer, link, ask, lines, raw, splitter };
}

const panel = (lines: number) => {
  const p = blankPanel();
  p.fill(0xff, 0, lines * 81);
  return p;
};

describe("VirtualPrinter: physical model", () => {
  it("feeds cards until the feeder is empty, and its sensor says so", async () => {
    const { ask } = bench({ feederCards: 1 });
    expect(await ask("Rse", ["f"])).toBe("5,00 Volts");
    expect(await ask("Si")).toBe("OK");
    expect(await ask("Si")).toBe("ERROR CDE"); // a card is already inside
    expect(await ask("Ser")).toBe("OK");
    expect(await ask("Si")).toBe("FEEDER EMPTY");
    expect(await ask("Rse", ["f"])).toBe("0,00 Volts");
  });

  it("moves the card and reports where it is", async () => {
    const { ask } = bench();
    expect(await ask("Rpos")).toBe("NONE");
    expect(await ask("Sis")).toBe("NO CARD");
    await ask("Si");
    expect(await ask("Rpos")).toBe("INSERT");
    await ask("Sis");
    expect(await ask("Rpos")).toBe("CONTACT");
    await ask("Seb");
    expect(await ask("Rpos")).toBe("BEZEL");
    expect(await ask("Rbz")).toBe("CARD");
  });

  it("Se prints inside a sequence (the card stays) and ejects outside one", async () => {
    const { ask, printer } = bench({ ribbonPanels: 10 });
    await ask("Si");
    expect(await ask("Ss")).toBe("OK");
    expect(await ask("Sr")).toBe("OK");
    expect(await ask("Db", ["k", "2"], panel(4))).toBe("OK");
    expect(await ask("Sv")).toBe("OK");
    expect(
      await ask("Dbc", ["k", "2", String(compressPanel(panel(2)).length)], compressPanel(panel(2))),
    ).toBe("OK");
    expect(await ask("Se")).toBe("OK");
    expect(await ask("Rpos")).toBe("PRINT");
    expect(await ask("Rrt", ["count"])).toBe("8");
    expect(await ask("Se")).toBe("OK");
    expect(await ask("Rpos")).toBe("NONE");
    const [card] = printer.record;
    expect(card).toMatchObject({ frontInkDots: 4 * 648, backInkDots: 2 * 648, outcome: "ejected" });
    expect(card!.front!.equals(panel(4))).toBe(true);
  });

  it("keeps only the last keepRecords finished cards, so a long-running simulator stays small", async () => {
    const { ask, printer } = bench({ keepRecords: 2 });
    const inserted: number[] = [];
    printer.on("card-inserted", (card: { serial: number }) => inserted.push(card.serial));
    for (let i = 0; i < 5; i++) {
      await ask("Si");
      await ask("Se");
    }
    await ask("Si"); // one card still inside: it is never dropped
    expect(printer.record.map((c) => c.outcome)).toEqual(["ejected", "ejected", "in-printer"]);
    expect(printer.record.map((c) => c.serial)).toEqual(inserted.slice(3));
    expect(printer.commandLog.length).toBeLessThanOrEqual(20);
  });

  it("refuses bitmaps outside a sequence, with bad parameters or a payload that does not decode", async () => {
    const { ask, printer } = bench();
    await ask("Si");
    const payload = compressPanel(panel(1));
    expect(await ask("Dbc", ["k", "2", String(payload.length)], payload)).toBe("ERROR CDE");
    await ask("Ss");
    await ask("Sr");
    expect(await ask("Dbc", ["y", "2", String(payload.length)], payload)).toBe("ERROR PARAMETRES");
    const junk = Buffer.from("not a panel");
    expect(await ask("Dbc", ["k", "2", String(junk.length)], junk)).toBe("ERROR PARAMETRES");
    expect(await ask("Se")).toBe("ERROR CDE"); // nothing loaded
    expect(printer.record[0]!.frontInkDots).toBe(0);
  });

  it("answers ERROR CDE to unknown commands and ignores noise before an ESC", async () => {
    const { ask, printer } = bench();
    expect(await ask("Zz")).toBe("ERROR CDE");
    printer.receive(Buffer.from([0xff, 0x00, 0x41]));
    expect(await ask("Rcv")).toBe("CLOSED");
    expect(printer.parserStats.droppedBytes).toBe(3);
  });

  it("capture bin and reject box fill up", async () => {
    const { ask, printer } = bench({ captureBinCapacity: 1, rejectBoxCapacity: 1, takeAfterMs: null });
    await ask("Si");
    await ask("Seb");
    expect(await ask("Scb")).toBe("OK");
    await ask("Si");
    await ask("Seb");
    expect(await ask("Scb")).toBe("CAPTURE BIN FULL");
    expect(await ask("Ser")).toBe("OK");
    await ask("Si");
    expect(await ask("Ser")).toBe("REJECT BOX FULL");
    expect(printer.emptyCaptureBin()).toBe(1);
    expect(await ask("Scb")).toBe("OK");
    expect(printer.record.map((c) => c.outcome)).toEqual(["captured", "rejected", "captured"]);
  });

  it("writes tracks, keeps only their hash and masked PAN, and reads them back", async () => {
    const { ask, printer } = bench();
    await ask("Si");
    expect(await ask("Pmc", ["h"])).toBe("OK");
    expect(await ask("Dm", ["2", TRACK2])).toBe("OK");
    expect(await ask("Dm", ["2", `;${TRACK2}?`])).toBe("ERROR MAG DATA");
    expect(await ask("Smw")).toBe("OK");
    expect(await ask("Smr", ["2"])).toBe(TRACK2);
    expect(await ask("Smr", ["1"])).toBe("ERR READ");
    // The write consumed the encoder's buffers: nothing left to write.
    expect(await ask("Smw")).toBe("ERROR MAG DATA");
    expect(printer.record[0]!.tracks).toEqual([
      { n: 2, sha256: createHash("sha256").update(TRACK2).digest("hex"), maskedPan: "526609******6174" },
    ]);
    expect(JSON.stringify(printer.cardsForRecord())).not.toContain("5266092201416174");
  });

  it("the cardholder takes a presented card after takeAfterMs, with events", async () => {
    const { ask, printer, clock } = bench({ takeAfterMs: 300 });
    const events: string[] = [];
    for (const e of ["card-inserted", "card-presented", "card-taken"] as const)
      printer.on(e, (c) => events.push(`${e}#${c.serial}`));
    await ask("Si");
    await ask("Seb");
    clock.advance(299);
    expect(await ask("Rbz")).toBe("CARD");
    clock.advance(1);
    expect(await ask("Rbz")).toBe("NO CARD");
    expect(events).toEqual(["card-inserted#1", "card-presented#1", "card-taken#1"]);
    expect(printer.record[0]).toMatchObject({
      outcome: "taken",
      endedAt: printer.record[0]!.insertedAt + 300,
    });
  });

  it("takeCardNow() is the test's own hand", async () => {
    const { ask, printer } = bench({ takeAfterMs: null });
    expect(printer.takeCardNow()).toBe(false);
    await ask("Si");
    await ask("Seb");
    expect(printer.takeCardNow()).toBe(true);
    expect(await ask("Rbz")).toBe("NO CARD");
  });

  it("answers after the configured latency on the injected clock", async () => {
    const { ask, printer, clock, lines } = bench({ latency: { commandMs: 100, magMs: 1000 } });
    printer.receive(encodeCommand("Si"));
    await turn();
    expect(lines).toEqual([]);
    clock.advance(100);
    expect(lines).toEqual(["OK"]);
    printer.setLatency({ commandMs: 0 });
    expect(await ask("Rpos")).toBe("INSERT");
  });

  it("handles commands one at a time, in order", async () => {
    const { printer, clock, lines } = bench({ latency: { commandMs: 10 } });
    printer.receive(Buffer.concat([encodeCommand("Si"), encodeCommand("Rpos"), encodeCommand("Sis")]));
    clock.advance(10);
    expect(lines).toEqual(["OK"]);
    clock.advance(20);
    expect(lines).toEqual(["OK", "INSERT", "OK"]);
  });

  it("a raw Db panel whose bytes hold CR is framed by length", async () => {
    const { ask, printer } = bench();
    await ask("Si");
    await ask("Ss");
    await ask("Sr");
    const p = Buffer.alloc(blankPanel().length, 0x0d);
    printer.receive(encodeRawBitmap(p).subarray(0, 1000));
    expect(await ask("Pr", ["k"])).toBe(undefined); // still inside the bitmap: no reply yet
  });
});

describe("VirtualPrinter: fault injection", () => {
  it("the fault table: every fault hits the step it says", () => {
    expect(
      Object.fromEntries(Object.entries(FAULT_RULES).map(([name, rule]) => [name, rule.hits.join(",")])),
    ).toEqual({
      "feeder-empty": "Si",
      "card-jam": "Si",
      "ribbon-out": "print",
      "cover-open": "print",
      "mag-write": "Smw",
      "mag-verify": "Smr",
      "not-taken": "Seb",
      timeout: "Si",
      garbage: "Si",
      unplug: "Si",
      slow: "*",
    });
  });

  it("feeder-empty: the next card only, and no card is used", async () => {
    const { ask, printer } = bench({ feederCards: 5 });
    printer.injectFault("feeder-empty");
    expect(await ask("Si")).toBe("FEEDER EMPTY");
    expect(printer.state.feederCards).toBe(5);
    expect(await ask("Si")).toBe("OK");
  });

  it("count: N fires on the next N cards; persistent until clearFaults()", async () => {
    const { ask, printer } = bench();
    printer.injectFault("card-jam", { count: 2 });
    expect(await ask("Si")).toBe("CARD JAM");
    expect(await ask("Rpos")).toBe("INSERT"); // the jammed card can be rejected
    await ask("Ser");
    expect(await ask("Si")).toBe("CARD JAM");
    await ask("Ser");
    expect(await ask("Si")).toBe("OK");
    await ask("Ser");
    printer.injectFault("feeder-empty", { persistent: true });
    for (let i = 0; i < 3; i++) expect(await ask("Si")).toBe("FEEDER EMPTY");
    expect(await ask("Rse", ["f"])).toBe("0,00 Volts");
    printer.clearFaults();
    expect(await ask("Si")).toBe("OK");
  });

  it("ribbon-out and cover-open hit the print and abort the sequence", async () => {
    const { ask, printer } = bench();
    const payload = compressPanel(panel(1));
    const printOnce = async () => {
      await ask("Ss");
      await ask("Sr");
      await ask("Dbc", ["k", "2", String(payload.length)], payload);
      return ask("Se");
    };
    await ask("Si");
    printer.injectFault("ribbon-out");
    expect(await printOnce()).toBe("ERR RIBBON");
    printer.injectFault("cover-open");
    expect(await printOnce()).toBe("COVER OPEN");
    expect(await printOnce()).toBe("OK");
    expect(printer.record[0]!.frontInkDots).toBe(648);
  });

  it("mag-write fails the write; mag-verify corrupts the read-back", async () => {
    const { ask, printer } = bench();
    await ask("Si");
    printer.injectFault("mag-write");
    await ask("Dm", ["2", TRACK2]);
    expect(await ask("Smw")).toBe("ERR WRITE");
    expect(printer.record[0]!.tracks).toEqual([]);
    printer.injectFault("mag-verify");
    await ask("Dm", ["2", TRACK2]);
    expect(await ask("Smw")).toBe("OK");
    const readBack = await ask("Smr", ["2"]);
    expect(readBack).not.toBe(TRACK2);
    expect(readBack).toHaveLength(TRACK2.length);
    expect(await ask("Smr", ["2"])).toBe(TRACK2);
  });

  it("not-taken: the card stays in the mouth", async () => {
    const { ask, printer, clock } = bench({ takeAfterMs: 10 });
    printer.injectFault("not-taken");
    await ask("Si");
    await ask("Seb");
    clock.advance(60_000);
    expect(await ask("Rbz")).toBe("CARD");
  });

  it("timeout swallows the command: no reply, nothing done", async () => {
    const { ask, printer } = bench();
    printer.injectFault("timeout", { at: "Sis" });
    await ask("Si");
    expect(await ask("Sis")).toBeUndefined();
    expect(await ask("Rpos")).toBe("INSERT");
  });

  it("garbage sends a line of noise before the real reply", async () => {
    const { ask, printer, splitter, raw } = bench({ seed: 7 });
    printer.injectFault("garbage", { thenReply: true });
    expect(await ask("Si")).toBe("OK");
    expect(splitter.droppedFrames).toBe(1);
    expect(raw[0]!.at(-1)).toBe(0x0d);
    expect([...raw[0]!.subarray(0, -1)].every((b) => b >= 0x80)).toBe(true);
  });

  it("unplug pulls the cable instead of answering, and plugs it back after replugAfterMs", async () => {
    const { ask, printer, link, clock } = bench();
    printer.injectFault("unplug", { at: "Smw", replugAfterMs: 500 });
    await ask("Si");
    await ask("Dm", ["2", TRACK2]);
    expect(await ask("Smw")).toBeUndefined();
    expect(link.plugged).toBe(false);
    clock.advance(500);
    expect(link.plugged).toBe(true);
    expect(await ask("Rpos")).toBe("INSERT");
  });

  it("slow multiplies the latency", async () => {
    const { printer, clock, lines } = bench({ latency: { commandMs: 10 } });
    printer.injectFault("slow", { factor: 5 });
    printer.receive(encodeCommand("Si"));
    clock.advance(49);
    expect(lines).toEqual([]);
    clock.advance(1);
    expect(lines).toEqual(["OK"]);
  });

  it("records survive as JSON without panels", async () => {
    const { ask, printer } = bench();
    await ask("Si");
    await ask("Ss");
    await ask("Sr");
    const payload = compressPanel(panel(1));
    await ask("Dbc", ["k", "2", String(payload.length)], payload);
    await ask("Se");
    const [card] = printer.cardsForRecord();
    expect(card).not.toHaveProperty("front");
    expect(card).toMatchObject({ serial: 1, frontInkDots: 648, outcome: "in-printer" });
  });
});
