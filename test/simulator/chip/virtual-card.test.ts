import { describe, expect, it } from "vitest";
import { ChipError, runApduScript } from "../../../drivers/chip/apdu-runner.js";
import {
  CardRemovedError,
  InProcessApduTransport,
  VirtualCard,
} from "../../../simulator/chip/virtual-card.js";

const h = (hex: string) => Buffer.from(hex, "hex");
const SELECT = "00A4040007A000000004101000";
const STORE = "80E2800003010100";
const SCRIPT = [
  { command: SELECT, expectSw: "9000" },
  { command: STORE, expectSw: "9000" },
];
const sw = (r: Buffer) =>
  r
    .subarray(r.length - 2)
    .toString("hex")
    .toUpperCase();

async function failure(p: Promise<unknown>): Promise<ChipError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ChipError);
  return err as ChipError;
}

describe("VirtualCard: the model", () => {
  it("keeps its original behaviour: SELECT by AID, 6A82 unknown AID, 6985 before SELECT, stats", () => {
    const card = new VirtualCard();
    expect(card.reset().toString("hex")).toBe("3b8f8001804f0ca000000306030001000000006a");
    expect(sw(card.process(h(STORE)))).toBe("6985");
    expect(sw(card.process(h("00A4040007A000000099999900")))).toBe("6A82");
    expect(sw(card.process(h(SELECT)))).toBe("9000");
    expect(sw(card.process(h(STORE)))).toBe("9000");
    expect(sw(card.process(h("00")))).toBe("6700");
    card.forceStatusWord("6581", 1);
    expect(sw(card.process(h(STORE)))).toBe("6581");
    expect(sw(card.process(h(STORE)))).toBe("9000");
    expect(card.stats).toEqual({ sessions: 1, apdus: 7 });
  });

  it("records per card the APDU count and status words, never the commands", () => {
    const card = new VirtualCard();
    card.insert();
    card.process(h(SELECT));
    card.process(h(STORE));
    card.insert();
    card.process(h(STORE));
    expect(card.records).toEqual([
      { serial: 1, apdus: 2, statusWords: ["9000", "9000"] },
      { serial: 2, apdus: 1, statusWords: ["6985"] },
    ]);
    expect(JSON.stringify(card.records)).not.toContain("A0000000041010");
  });

  it("wrong-sw: answers the given status word at the given command, on the first N cards only", () => {
    const card = new VirtualCard();
    card.armFault("wrong-sw", { cards: 2, sw: "6A80" });
    for (let i = 0; i < 3; i++) {
      card.insert();
      card.process(h(SELECT));
      card.process(h(STORE));
    }
    expect(card.records.map((r) => [r.fault, r.statusWords])).toEqual([
      ["wrong-sw", ["9000", "6A80"]],
      ["wrong-sw", ["9000", "6A80"]],
      [undefined, ["9000", "9000"]],
    ]);
  });

  it("faults armed one after another hit consecutive cards", () => {
    const card = new VirtualCard();
    card.armFault("slow", { delayMs: 25 });
    card.armFault("no-atr");
    card.insert();
    expect(card.answerDelayMs).toBe(25);
    expect(card.currentAtr).toBeDefined();
    card.insert();
    expect(card.answerDelayMs).toBe(0);
    expect(card.currentAtr).toBeUndefined();
    card.insert();
    expect(card.currentAtr).toBeDefined();
    expect(card.records.map((r) => r.fault)).toEqual(["slow", "no-atr", undefined]);
    expect(() => card.armFault("slow", { cards: 0 })).toThrow(RangeError);
  });

  it("removed: the card throws CardRemovedError at the command and records it", () => {
    const card = new VirtualCard();
    card.armFault("removed", { atCommand: 0 });
    card.insert();
    expect(() => card.process(h(SELECT))).toThrow(CardRemovedError);
    expect(card.records[0]).toMatchObject({
      fault: "removed",
      apdus: 1,
      statusWords: [],
      removedMidScript: true,
    });
  });

  it("T=0 answers: SELECT with Le gets 61xx, GET RESPONSE with the wrong Le 6Cxx, the right one the FCI", () => {
    const card = new VirtualCard({ t0Responses: true });
    card.insert();
    const first = card.process(h(SELECT));
    expect(first[0]).toBe(0x61);
    const len = first[1]!;
    expect(sw(card.process(h("00C0000000")))).toBe(`6C${len.toString(16).toUpperCase().padStart(2, "0")}`);
    const fci = card.process(Buffer.from([0x00, 0xc0, 0x00, 0x00, len]));
    expect(fci.length).toBe(len + 2);
    expect(fci[0]).toBe(0x6f);
    expect(sw(fci)).toBe("9000");
    expect(sw(card.process(Buffer.from([0x00, 0xc0, 0x00, 0x00, len])))).toBe("6985");
  });

  it("a power cycle forgets the selected application; reading the ATR does not", () => {
    const card = new VirtualCard();
    card.insert();
    card.process(h(SELECT));
    expect(card.currentAtr).toBeDefined();
    expect(sw(card.process(h(STORE)))).toBe("9000");
    card.powerCycle();
    expect(sw(card.process(h(STORE)))).toBe("6985");
  });
});

describe("VirtualCard through the in-process transport and the runner", () => {
  it("runs the script: DONE path", async () => {
    const card = new VirtualCard();
    await runApduScript(new InProcessApduTransport(card), SCRIPT);
    expect(card.records).toEqual([{ serial: 1, apdus: 2, statusWords: ["9000", "9000"] }]);
  });

  it("wrong-sw → CHIP_SW_MISMATCH naming APDU #1", async () => {
    const card = new VirtualCard();
    card.armFault("wrong-sw");
    const err = await failure(runApduScript(new InProcessApduTransport(card), SCRIPT));
    expect(err).toMatchObject({ code: "CHIP_SW_MISMATCH", index: 1 });
    expect(err.message).not.toMatch(/80E2|A0000000/i);
  });

  it("removed → CHIP_IO_ERROR naming the APDU", async () => {
    const card = new VirtualCard();
    card.armFault("removed", { atCommand: 1 });
    const err = await failure(runApduScript(new InProcessApduTransport(card), SCRIPT));
    expect(err).toMatchObject({ code: "CHIP_IO_ERROR", index: 1 });
  });

  it("no-atr → CHIP_NO_ATR before any APDU", async () => {
    const card = new VirtualCard();
    card.armFault("no-atr");
    const err = await failure(runApduScript(new InProcessApduTransport(card), SCRIPT));
    expect(err).toMatchObject({ code: "CHIP_NO_ATR", index: undefined });
    expect(card.records[0]!.apdus).toBe(0);
  });

  it("slow → the script still passes, each answer delayed", async () => {
    const card = new VirtualCard();
    card.armFault("slow", { delayMs: 30 });
    const started = Date.now();
    await runApduScript(new InProcessApduTransport(card), SCRIPT);
    expect(Date.now() - started).toBeGreaterThanOrEqual(55);
  });

  it("T=0 card: the runner's GET RESPONSE makes SELECT end in 9000", async () => {
    const card = new VirtualCard({ t0Responses: true });
    await runApduScript(new InProcessApduTransport(card), SCRIPT);
    expect(card.records[0]!.statusWords[0]).toMatch(/^61/);
    expect(card.records[0]!.statusWords.slice(1)).toEqual(["9000", "9000"]);
  });
});
