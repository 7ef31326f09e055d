import { createHash } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import type { DeviceFault } from "../../../drivers/device-fault.js";
import { ERROR_REPLIES, encodeCommand, encodeCompressedBitmap } from "../../../drivers/printer/codec.js";
import { compressPanel } from "../../../drivers/printer/raster/compress.js";
import { blankPanel } from "../../../drivers/printer/raster/geometry.js";
import type { CardRecord } from "../../../simulator/printer/virtual-printer.js";
import { captureLogs, findSecrets } from "../../support/log-capture.js";
import { driveClock, hex, PATH, printerStack, scriptedStack, settle } from "./rig.js";

const TRACK1 = "B4111111111111111^DOE/JOHN^25121010000000000000";
const TRACK2 = "4111111111111111=25121010000000000000";

/** A panel with ink in a recognisable block: 10 lines fully black = 10 × 648 dots. */
function inkedPanel(lines: number): Buffer {
  const panel = blankPanel();
  panel.fill(0xff, 0, lines * 81);
  return panel;
}

let closeAfter: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closeAfter) await close();
  closeAfter = [];
});

async function openStack(options: Parameters<typeof printerStack>[0] = {}) {
  const stack = printerStack(options);
  await stack.driver.open();
  stack.wire(); // drop Pem;2 so each test sees its own bytes
  closeAfter.push(() => stack.driver.close());
  return stack;
}

describe("PrinterDriver on the simulated printer (real SerialPortStream path)", () => {
  it("open() sends Pem;2", async () => {
    const stack = printerStack();
    await stack.driver.open();
    // ESC "Pem;2" CR
    expect(stack.wire()).toEqual(hex("1B 50 65 6D 3B 32 0D"));
    await stack.driver.close();
  });

  it("insertCard() writes exactly ESC Si CR", async () => {
    const { driver, wire, printer } = await openStack();
    await driver.insertCard();
    expect(wire()).toEqual(hex("1B 53 69 0D"));
    expect(printer.state.position).toBe("INSERT");
    expect(driver.stats).toMatchObject({ commands: 2, droppedFrames: 0, unexpectedReplies: 0 });
  });

  it("printPanels() runs Pr;k Ss Sr Dbc Sv Dbc Se and the printer prints what was sent", async () => {
    const { driver, wire, printer } = await openStack();
    await driver.insertCard();
    wire();
    const front = inkedPanel(10);
    const back = inkedPanel(3);
    await driver.printPanels({ front, back });
    expect(wire()).toEqual(
      Buffer.concat([
        encodeCommand("Pr", ["k"]),
        encodeCommand("Ss"),
        encodeCommand("Sr"),
        encodeCompressedBitmap(compressPanel(front)),
        encodeCommand("Sv"),
        encodeCompressedBitmap(compressPanel(back)),
        encodeCommand("Se"),
      ]),
    );
    const card = printer.record[0]!;
    expect(card.front?.equals(front)).toBe(true);
    expect(card.back?.equals(back)).toBe(true);
    expect(card.frontInkDots).toBe(10 * 648);
    expect(card.backInkDots).toBe(3 * 648);
    // Inside a sequence Se prints and keeps the card.
    expect(printer.state.position).toBe("PRINT");
  });

  it("encodeMagstripe() loads, writes and reads back each track", async () => {
    const { driver, wire } = await openStack();
    await driver.insertCard();
    wire();
    await driver.encodeMagstripe({ track1: TRACK1, track2: TRACK2 }, "HICO");
    expect(wire()).toEqual(
      Buffer.concat([
        hex("1B 50 6D 63 3B 68 0D"), // ESC "Pmc;h" CR
        encodeCommand("Dm", ["1", TRACK1]),
        encodeCommand("Dm", ["2", TRACK2]),
        hex("1B 53 6D 77 0D"), // ESC "Smw" CR
        hex("1B 53 6D 72 3B 31 0D"), // ESC "Smr;1" CR
        hex("1B 53 6D 72 3B 32 0D"), // ESC "Smr;2" CR
      ]),
    );
  });

  it("refuses track data the encoder cannot take before sending anything", async () => {
    const { driver, wire } = await openStack();
    await expect(driver.encodeMagstripe({ track2: `;${TRACK2}?` }, "LOCO")).rejects.toMatchObject({
      code: "COMMAND_REJECTED",
      command: "Dm",
    });
    expect(wire().length).toBe(0);
  });

  it("a full card: insert → print → encode → present → taken, and the simulator's record", async () => {
    const logs = captureLogs("debug");
    const { driver, printer, clock } = await openStack({ logger: logs.logger });
    const events: string[] = [];
    for (const e of ["card-inserted", "card-presented", "card-taken"] as const)
      printer.on(e, () => events.push(e));

    await driver.insertCard();
    await driver.printPanels({ front: inkedPanel(20) });
    await driver.encodeMagstripe({ track1: TRACK1, track2: TRACK2 }, "HICO");
    await driver.presentCard();
    expect(await driver.isCardInMouth()).toBe(true);
    clock.advance(200); // the simulated cardholder's default reaction time
    expect(await driver.isCardInMouth()).toBe(false);

    expect(events).toEqual(["card-inserted", "card-presented", "card-taken"]);
    const sha = (s: string) => createHash("sha256").update(s).digest("hex");
    expect(printer.record).toEqual([
      {
        serial: 1,
        insertedAt: expect.any(Number),
        frontInkDots: 20 * 648,
        backInkDots: 0,
        front: inkedPanel(20),
        tracks: [
          { n: 1, sha256: sha(TRACK1), maskedPan: "411111******1111" },
          { n: 2, sha256: sha(TRACK2), maskedPan: "411111******1111" },
        ],
        outcome: "taken",
        endedAt: expect.any(Number),
      } satisfies CardRecord,
    ]);
    expect(printer.record[0]!.endedAt! - printer.record[0]!.insertedAt).toBe(200);
    expect(JSON.stringify(printer.cardsForRecord())).not.toContain("4111111111111111");
    // Command names are logged; card data never is.
    expect(logs.text()).toContain('"command":"Dm"');
    expect(findSecrets(logs.text(), [TRACK1, TRACK2, "4111111111111111"])).toEqual([]);
  });

  it("waitForCardTaken() long-polls the bezel (Wbz); a card not taken is then retracted to the capture bin", async () => {
    const { driver, printer, clock } = await openStack();
    printer.injectFault("not-taken");
    await driver.insertCard();
    await driver.presentCard();
    const started = clock.now();
    let taken: boolean | undefined;
    const waiting = driver.waitForCardTaken(1000).then((t) => {
      taken = t;
    });
    await driveClock(clock, () => taken !== undefined, 10);
    await waiting;
    expect(taken).toBe(false);
    expect(clock.now() - started).toBe(1000);
    await driver.retractToCaptureBin();
    expect(printer.record[0]!.outcome).toBe("captured");
    expect(printer.state.captureBin.count).toBe(1);
  });

  it("waitForCardTaken() resolves true as soon as the card is gone", async () => {
    const { driver, printer, clock } = await openStack({ printer: { takeAfterMs: null } });
    await driver.insertCard();
    await driver.presentCard();
    const started = clock.now();
    let taken: boolean | undefined;
    const waiting = driver.waitForCardTaken(10_000).then((t) => {
      taken = t;
    });
    await driveClock(clock, () => clock.now() - started >= 600, 50);
    expect(taken).toBeUndefined();
    printer.takeCardNow();
    await driveClock(clock, () => taken !== undefined, 50);
    await waiting;
    expect(taken).toBe(true);
    expect(clock.now() - started).toBeLessThanOrEqual(600 + 250);
  });

  it("rejectCard() and ejectCard() (Se outside a sequence)", async () => {
    const { driver, printer, wire } = await openStack();
    await driver.insertCard();
    await driver.rejectCard();
    await driver.insertCard();
    wire();
    await driver.ejectCard();
    expect(wire()).toEqual(hex("1B 53 65 0D")); // ESC "Se" CR
    expect(printer.record.map((c) => c.outcome)).toEqual(["rejected", "ejected"]);
  });

  it("readStatus() reads feeder, ribbon, cover and card position", async () => {
    const { driver, printer } = await openStack({ printer: { ribbonPanels: 42 } });
    expect(await driver.readStatus()).toEqual({
      feederEmpty: false,
      ribbonOut: false,
      ribbonRemaining: 42,
      coverOpen: false,
      cardPosition: "NONE",
    });
    await driver.insertCard();
    printer.injectFault("feeder-empty", { persistent: true });
    printer.injectFault("ribbon-out", { persistent: true });
    printer.injectFault("cover-open", { persistent: true });
    expect(await driver.readStatus()).toEqual({
      feederEmpty: true,
      ribbonOut: true,
      coverOpen: true,
      cardPosition: "INSERT",
    });
  });

  it("garbage before a reply is dropped and counted; the driver resynchronises", async () => {
    const { driver, printer } = await openStack();
    printer.injectFault("garbage", { at: "Si", thenReply: true });
    await driver.insertCard();
    expect(driver.stats.droppedFrames).toBe(1);
    await driver.moveToContactStation();
    expect(printer.state.position).toBe("CONTACT");
    expect(driver.stats.droppedFrames).toBe(1);
  });

  it("DEVICE_TIMEOUT names the command, on the injected clock", async () => {
    const { driver, printer, clock } = await openStack();
    printer.injectFault("timeout", { at: "Si" });
    let settled = false;
    const insert = driver.insertCard().finally(() => {
      settled = true;
    });
    await settle(() => clock.pendingTimers() > 0);
    clock.advance(4_999);
    await settle();
    expect(settled).toBe(false);
    clock.advance(1);
    await expect(insert).rejects.toMatchObject({ code: "DEVICE_TIMEOUT", command: "Si", device: "printer" });
    await expect(insert).rejects.toThrow("Si: no reply within 5000 ms");
  });

  it("a reply with no command in flight is ignored and counted (a late answer after a timeout)", async () => {
    const { driver, printer, clock } = await openStack({ timeouts: { defaultMs: 5_000 } });
    printer.setLatency({ commandMs: 7_000 });
    const insert = driver.insertCard();
    await settle(() => clock.pendingTimers() >= 2);
    clock.advance(5_000);
    await expect(insert).rejects.toMatchObject({ code: "DEVICE_TIMEOUT" });
    clock.advance(2_000); // the printer's OK arrives now
    await settle(() => driver.stats.unexpectedReplies > 0);
    expect(driver.stats.unexpectedReplies).toBe(1);
    expect(printer.state.position).toBe("INSERT");
  });

  it("unplug mid-command → DEVICE_DISCONNECTED, no crash; after replug the card is found inside", async () => {
    const { driver, printer, clock, transport, binding } = await openStack();
    printer.injectFault("unplug", { at: "Smw", replugAfterMs: 1_000 });
    await driver.insertCard();
    await expect(driver.encodeMagstripe({ track2: TRACK2 }, "HICO")).rejects.toMatchObject({
      code: "DEVICE_DISCONNECTED",
      command: "Smw",
    });
    expect(transport.isOpen).toBe(false);
    await expect(driver.insertCard()).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED", command: "Si" });
    await expect(driver.open()).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
    clock.advance(1_000);
    expect(binding.isPlugged(PATH)).toBe(true);
    await driver.open();
    expect((await driver.readStatus()).cardPosition).toBe("INSERT");
    await driver.rejectCard();
    expect(printer.record[0]!.outcome).toBe("rejected");
  });

  it("MAG_VERIFY when a track reads back different", async () => {
    const { driver, printer } = await openStack();
    printer.injectFault("mag-verify");
    await driver.insertCard();
    const error = await driver.encodeMagstripe({ track2: TRACK2 }, "HICO").catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "MAG_VERIFY", command: "Smr" });
    expect(String((error as Error).message)).not.toContain("4111");
  });

  it("device faults from the simulator arrive as the matching DeviceError", async () => {
    const { driver, printer } = await openStack();
    printer.injectFault("feeder-empty");
    await expect(driver.insertCard()).rejects.toMatchObject({ code: "FEEDER_EMPTY", command: "Si" });
    printer.injectFault("mag-write");
    await driver.insertCard();
    await expect(driver.encodeMagstripe({ track2: TRACK2 }, "HICO")).rejects.toMatchObject({
      code: "MAG_WRITE",
    });
    printer.injectFault("ribbon-out");
    await expect(driver.printPanels({ front: inkedPanel(1) })).rejects.toMatchObject({
      code: "RIBBON_OUT",
      command: "Se",
    });
  });

  it("one operation at a time: a status read cannot land inside a print sequence", async () => {
    const { driver, wire } = await openStack();
    await driver.insertCard();
    wire();
    const front = inkedPanel(2);
    await Promise.all([driver.printPanels({ front }), driver.readStatus()]);
    const bytes = wire().toString("latin1");
    const names = [...bytes.matchAll(/\x1b([A-Za-z]+)/g)].map((m) => m[1]);
    // Dbc's payload may itself contain ESC + letters; only the framing order matters here.
    expect(names.slice(0, 3)).toEqual(["Pr", "Ss", "Sr"]);
    expect(names.slice(-4)).toEqual(["Rse", "Rrt", "Rcv", "Rpos"]);
    expect(bytes.indexOf("\x1bSe\r")).toBeLessThan(bytes.indexOf("\x1bRse;f\r"));
  });
});

describe("PrinterDriver against scripted replies", () => {
  const cases = Object.entries(ERROR_REPLIES) as Array<[string, DeviceFault]>;

  it.each(cases)("%s → DeviceError %s", async (text, fault) => {
    const { driver } = scriptedStack(["OK", text]);
    await driver.open();
    await expect(driver.insertCard()).rejects.toMatchObject({
      code: fault,
      command: "Si",
      device: "printer",
    });
    await driver.close();
  });

  it("a value command drops replies it cannot give and keeps waiting", async () => {
    const { driver, device } = scriptedStack(["OK", "HELLO"]);
    await driver.open();
    const answer = driver.isCardInMouth();
    await settle(() => driver.stats.droppedFrames > 0);
    device.say("CARD");
    expect(await answer).toBe(true);
    expect(driver.stats.droppedFrames).toBe(1);
    await driver.close();
  });

  it("NO CARD is the mouth-empty answer to Rbz", async () => {
    const { driver } = scriptedStack(["OK", "NO CARD"]);
    await driver.open();
    expect(await driver.isCardInMouth()).toBe(false);
    await driver.close();
  });

  it("a line volunteered by the device while idle is counted, not taken as the next reply", async () => {
    const { driver, device } = scriptedStack(["OK", "OK"]);
    await driver.open();
    device.say("OK");
    await settle(() => driver.stats.unexpectedReplies > 0);
    expect(driver.stats.unexpectedReplies).toBe(1);
    await driver.insertCard();
    await driver.close();
  });
});
