import { EventEmitter } from "node:events";
import { createServer, type Server, type Socket } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { VirtualCard } from "../../../simulator/chip/virtual-card.js";
import { VpcdCard } from "../../../simulator/chip/vpcd-card.js";
import { encodeVpcdFrame, VpcdFrameParser } from "../../../simulator/chip/vpcd-protocol.js";
import type { VirtualEvolisPrinter } from "../../../simulator/printer/virtual-evolis-printer.js";

/** Plays vpcd's side: accepts the card, sends frames, collects the card's answers. */
class FakeVpcd {
  readonly server: Server;
  port = 0;
  socket: Socket | undefined;
  readonly answers: Buffer[] = [];
  closed = false;
  private readonly parser = new VpcdFrameParser();
  private waiters: Array<() => void> = [];

  constructor() {
    this.server = createServer((s) => {
      this.socket = s;
      this.closed = false;
      s.on("data", (chunk) => {
        for (const m of this.parser.push(chunk)) {
          this.answers.push(
            m.kind === "apdu" ? m.apdu : m.kind === "empty" ? Buffer.alloc(0) : Buffer.from([m.code]),
          );
          // vpcd's vicc_eject(): an empty answer means "no card", and it closes the link.
          if (m.kind === "empty") s.destroy();
        }
        this.wake();
      });
      s.on("close", () => {
        this.closed = true;
        this.wake();
      });
      this.wake();
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.port = (this.server.address() as { port: number }).port;
  }

  send(...payloadHex: string[]): void {
    this.socket!.write(Buffer.concat(payloadHex.map((p) => encodeVpcdFrame(Buffer.from(p, "hex")))));
  }

  async until(check: () => boolean, ms = 2000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check()) {
      if (Date.now() > deadline) throw new Error("fake vpcd: condition not met");
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 20);
      });
    }
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  async close(): Promise<void> {
    this.socket?.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const hex = (b: Buffer | undefined) => b?.toString("hex").toUpperCase();
const SELECT = "00A4040007A000000004101000";
const STORE = "80E2800003010100";

describe("VpcdCard against a fake vpcd", () => {
  let vpcd: FakeVpcd;
  let card: VirtualCard;
  let vcard: VpcdCard;
  beforeEach(async () => {
    vpcd = new FakeVpcd();
    await vpcd.listen();
    card = new VirtualCard();
    vcard = new VpcdCard({ card, port: vpcd.port });
  });
  afterEach(async () => {
    await vcard.close();
    await vpcd.close();
  });

  it("inserting connects; only GET ATR among the control codes is answered; APDUs get responses", async () => {
    const record = await vcard.insert();
    expect(record.serial).toBe(1);
    expect(vcard.present).toBe(true);
    await vpcd.until(() => vpcd.socket !== undefined);
    vpcd.send("01", "04", "02", "00", "04");
    await vpcd.until(() => vpcd.answers.length === 2);
    expect(vpcd.answers.map(hex)).toEqual([hex(card.atr), hex(card.atr)]);
    vpcd.send(SELECT, STORE);
    await vpcd.until(() => vpcd.answers.length === 4);
    expect(vpcd.answers.slice(2).map(hex)).toEqual(["9000", "9000"]);
    expect(card.records[0]).toMatchObject({ apdus: 2, statusWords: ["9000", "9000"] });
  });

  it("an APDU split over several TCP writes is answered once it is whole", async () => {
    await vcard.insert();
    await vpcd.until(() => vpcd.socket !== undefined);
    const frame = encodeVpcdFrame(Buffer.from(SELECT, "hex"));
    vpcd.socket!.write(frame.subarray(0, 1));
    await new Promise((r) => setTimeout(r, 20));
    vpcd.socket!.write(frame.subarray(1, 6));
    await new Promise((r) => setTimeout(r, 20));
    expect(vpcd.answers).toHaveLength(0);
    vpcd.socket!.write(frame.subarray(6));
    await vpcd.until(() => vpcd.answers.length === 1);
    expect(hex(vpcd.answers[0])).toBe("9000");
  });

  it("no-atr: GET ATR is answered with an empty message (vpcd then drops the card)", async () => {
    card.armFault("no-atr");
    await vcard.insert();
    await vpcd.until(() => vpcd.socket !== undefined);
    vpcd.send("04");
    await vpcd.until(() => vpcd.answers.length === 1);
    expect(vpcd.answers[0]!.length).toBe(0);
  });

  it("removed: the connection drops at the faulty command, nothing is answered", async () => {
    card.armFault("removed", { atCommand: 1 });
    const removed = new Promise((r) => vcard.once("removed", r));
    await vcard.insert();
    await vpcd.until(() => vpcd.socket !== undefined);
    vpcd.send(SELECT, STORE);
    await vpcd.until(() => vpcd.closed);
    expect(vpcd.answers.map(hex)).toEqual(["9000"]);
    await removed;
    expect(vcard.present).toBe(false);
    expect(card.records[0]).toMatchObject({ removedMidScript: true, apdus: 2 });
  });

  it("slow: answers come after the delay, still in order", async () => {
    card.armFault("slow", { delayMs: 60 });
    await vcard.insert();
    await vpcd.until(() => vpcd.socket !== undefined);
    const started = Date.now();
    vpcd.send(SELECT, "04", STORE);
    await vpcd.until(() => vpcd.answers.length === 3);
    expect(Date.now() - started).toBeGreaterThanOrEqual(110);
    expect(vpcd.answers.map(hex)).toEqual(["9000", hex(card.atr), "9000"]);
  });

  it("remove() answers the next presence poll with 'no card' and ends when vpcd drops the link", async () => {
    await vcard.insert();
    await vpcd.until(() => vpcd.socket !== undefined);
    vpcd.send("04");
    await vpcd.until(() => vpcd.answers.length === 1);
    const removing = vcard.remove();
    await new Promise((r) => setTimeout(r, 30));
    expect(vcard.present).toBe(true);
    vpcd.send("00", "04");
    await removing;
    expect(vpcd.answers.map((a) => a.length)).toEqual([card.atr.length, 0]);
    expect(vpcd.closed).toBe(true);
    expect(vcard.present).toBe(false);
    const started = Date.now();
    await vcard.insert();
    expect(Date.now() - started).toBeLessThan(200);
    expect(card.records.map((r) => r.serial)).toEqual([1, 2]);
  });

  it("remove() without a poll hangs up after removeTimeoutMs; the next card then waits abruptGapMs", async () => {
    const quick = new VpcdCard({ card, port: vpcd.port, removeTimeoutMs: 50, abruptGapMs: 150 });
    await quick.insert();
    await quick.remove();
    expect(quick.present).toBe(false);
    await vpcd.until(() => vpcd.closed);
    const started = Date.now();
    await quick.insert();
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    await quick.close();
  });

  it("a leaving card does not answer an APDU: the link drops", async () => {
    await vcard.insert();
    await vpcd.until(() => vpcd.socket !== undefined);
    const removing = vcard.remove();
    vpcd.send(SELECT);
    await removing;
    expect(vpcd.answers).toEqual([]);
    expect(vcard.present).toBe(false);
  });

  it("follows the printer: a fed card is inserted, a card leaving the printer is removed", async () => {
    const printer = new EventEmitter();
    const detach = vcard.followPrinter(printer as unknown as VirtualEvolisPrinter);
    const inserted = new Promise((r) => vcard.once("inserted", r));
    printer.emit("card-inserted", {});
    await inserted;
    expect(vcard.present).toBe(true);
    const removed = new Promise((r) => vcard.once("removed", r));
    printer.emit("card-rejected", {});
    await vpcd.until(() => vpcd.socket !== undefined);
    vpcd.send("04");
    await removed;
    expect(vcard.present).toBe(false);
    detach();
    expect(printer.listenerCount("card-inserted")).toBe(0);
  });

  it("insert() fails with a clear message when vpcd does not listen", async () => {
    const lonely = new VpcdCard({ card: new VirtualCard(), port: 1 });
    await expect(lonely.insert()).rejects.toThrow(/vpcd is not reachable on 127\.0\.0\.1:1/);
    expect(lonely.present).toBe(false);
  });
});
