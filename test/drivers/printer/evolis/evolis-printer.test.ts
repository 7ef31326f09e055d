import { createHash } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { blankImage, type CardImage, sameImage, setPixel } from "../../../../drivers/printer/card-image.js";
import { encodeCommand, encodeCompressedPanel } from "../../../../drivers/printer/evolis/codec.js";
import { compressKO } from "../../../../drivers/printer/evolis/ko-compression.js";
import { EVOLIS_PRINT_AREA, panelFromImage } from "../../../../drivers/printer/evolis/panel.js";
import type { CardRecord } from "../../../../simulator/printer/virtual-evolis-printer.js";
import { captureLogs, findSecrets } from "../../../support/log-capture.js";
import { driveClock, hex, printerStack, settle } from "./rig.js";

const TRACK1 = "B4111111111111111^DOE/JOHN^25121010000000000000";
const TRACK2 = "4111111111111111=25121010000000000000";

/** An image with a block of ink in its top-left corner, as the cardholder sees it. */
function blockImage(width: number, height: number): CardImage {
  const image = blankImage(EVOLIS_PRINT_AREA);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) setPixel(image, x, y);
  return image;
}

const frames = (...list: Array<[Parameters<typeof encodeCommand>[0], string[]?]>) =>
  Buffer.concat(list.map(([name, params]) => encodeCommand(name, params ?? [])));

const SETTINGS = frames(
  ["Pem", ["2"]],
  ["Pcim", ["F"]],
  ["Pcem", ["I"]],
  ["Psmgr", ["2"]],
  ["Pneab", ["E"]],
  ["Pcrm", ["D"]],
  ["Pbc", ["A", "D"]],
);

let closeAfter: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closeAfter) await close();
  closeAfter = [];
});

async function openStack(options: Parameters<typeof printerStack>[0] = {}) {
  const stack = printerStack(options);
  await stack.driver.open();
  stack.wire(); // drop the start-up bytes so each test sees its own
  closeAfter.push(() => stack.driver.close());
  return stack;
}

describe("EvolisPrinter on the simulated Evolis (real SerialPortStream path)", () => {
  it("open() applies the kiosk start-up settings, then reads model, serial and firmware", async () => {
    const stack = printerStack();
    closeAfter.push(() => stack.driver.close());
    await stack.driver.open();
    // ESC "Pem;2" CR is the first frame on the wire.
    expect(stack.wire()).toEqual(
      Buffer.concat([hex("1B 50 65 6D 3B 32 0D"), SETTINGS.subarray(7), frames(["Rtp"], ["Rsn"], ["Rfv"])]),
    );
    expect(stack.driver.identity).toEqual({
      model: "Evolis KC200B (simulated)",
      serial: "SIM0000001",
      firmware: "SIM-1.0",
    });
    expect(stack.printer.state.settings).toMatchObject({
      errorMode: 2,
      ejectThrough: "I",
      ejectAfterPrint: false,
      bezelAction: "D",
    });
  });

  it("behind a serial link, insertCard() re-applies the settings first: a power cycle is undone before the card", async () => {
    const { driver, printer, wire } = await openStack();
    printer.powerCycle();
    expect(printer.state.settings.errorMode).toBe(0);
    await driver.insertCard();
    expect(wire()).toEqual(Buffer.concat([SETTINGS, hex("1B 53 69 0D")]));
    expect(printer.state.settings).toMatchObject({ errorMode: 2, ejectAfterPrint: false, bezelAction: "D" });
  });

  it("behind USB or TCP, insertCard() is Si alone: a power cycle drops those links and the reopen applies them", async () => {
    const { driver, wire, printer } = await openStack({ link: "usb" });
    await driver.insertCard();
    expect(wire()).toEqual(hex("1B 53 69 0D")); // ESC "Si" CR
    expect(printer.state.position).toBe("INSIDE");
  });

  it("printSides() sends Pneab;A;0 Pr;k Ss Sr Dbc Sv Dbc Se; the printer prints the images, upright", async () => {
    const { driver, wire, printer } = await openStack({ link: "usb" });
    await driver.insertCard();
    wire();
    const front = blockImage(30, 10);
    const back = blockImage(5, 5);
    await driver.printSides({ front, back });
    expect(wire()).toEqual(
      Buffer.concat([
        frames(["Pneab", ["A", "0"]], ["Pr", ["k"]], ["Ss"], ["Sr"]),
        encodeCompressedPanel(compressKO(panelFromImage(front))),
        frames(["Sv"]),
        encodeCompressedPanel(compressKO(panelFromImage(back))),
        frames(["Se"]),
      ]),
    );
    const card = printer.record[0]!;
    expect(sameImage(card.front!, front)).toBe(true);
    expect(sameImage(card.back!, back)).toBe(true);
    expect(card.frontInkDots).toBe(300);
    // Ejection is forbidden while printing: the card stays in for the magstripe and the mouth.
    expect(printer.state.position).toBe("INSIDE");
    expect(printer.state.counters.panelsPrinted).toBe(2);
  });

  it("encodeMagstripe() writes, then reads each track back with Smr;n and Rmb;n", async () => {
    const { driver, wire } = await openStack({ link: "usb" });
    await driver.insertCard();
    wire();
    await driver.encodeMagstripe({ track1: TRACK1, track2: TRACK2 }, "HICO");
    expect(wire()).toEqual(
      Buffer.concat([
        hex("1B 50 6D 63 3B 68 0D"), // ESC "Pmc;h" CR
        encodeCommand("Dm", ["1", TRACK1]),
        encodeCommand("Dm", ["2", TRACK2]),
        hex("1B 53 6D 77 0D"), // ESC "Smw" CR
        hex("1B 53 6D 72 3B 31 0D"), // ESC "Smr;1" CR → OK
        hex("1B 52 6D 62 3B 31 0D"), // ESC "Rmb;1" CR → the data
        hex("1B 53 6D 72 3B 32 0D"),
        hex("1B 52 6D 62 3B 32 0D"),
      ]),
    );
  });

  it("encodeMagstripe() takes the data straight from Smr;n when the printer answers it there", async () => {
    const { driver, wire } = await openStack({ link: "usb", printer: { magReadBack: "direct" } });
    await driver.insertCard();
    wire();
    await driver.encodeMagstripe({ track2: TRACK2 }, "LOCO");
    expect(wire()).toEqual(frames(["Pmc", ["l"]], ["Dm", ["2", TRACK2]], ["Smw"], ["Smr", ["2"]]));
  });

  it.each(["rmb", "direct"] as const)(
    "a track that reads back different is MAG_VERIFY (%s)",
    async (magReadBack) => {
      const { driver, printer } = await openStack({ printer: { magReadBack } });
      printer.injectFault("mag-verify");
      await driver.insertCard();
      await expect(driver.encodeMagstripe({ track2: TRACK2 }, "HICO")).rejects.toMatchObject({
        code: "MAG_VERIFY",
      });
    },
  );

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
    const { driver, printer, clock, wire } = await openStack({
      logger: logs.logger,
      printer: { takeAfterMs: 500 },
    });
    const events: string[] = [];
    for (const e of ["card-inserted", "card-presented", "card-taken"] as const)
      printer.on(e, () => events.push(e));

    await driver.insertCard();
    await driver.printSides({ front: blockImage(20, 648) });
    await driver.encodeMagstripe({ track1: TRACK1, track2: TRACK2 }, "HICO");
    wire();
    await driver.presentCard();
    // Ejection allowed, Se, and a check that the card really left the inside.
    expect(wire()).toEqual(frames(["Pneab", ["A", "1"]], ["Se"], ["Rlr", ["p"]]));
    expect(printer.state.position).toBe("MOUTH");
    let taken: boolean | undefined;
    void driver.waitForCardTaken(10_000).then((t) => {
      taken = t;
    });
    await driveClock(clock, () => taken !== undefined, 50);
    expect(taken).toBe(true);

    expect(events).toEqual(["card-inserted", "card-presented", "card-taken"]);
    const sha = (s: string) => createHash("sha256").update(s).digest("hex");
    expect(printer.cardsForRecord()).toEqual([
      {
        serial: 1,
        insertedAt: expect.any(Number),
        frontInkDots: 20 * 648,
        backInkDots: 0,
        tracks: [
          { n: 1, sha256: sha(TRACK1), maskedPan: "411111******1111" },
          { n: 2, sha256: sha(TRACK2), maskedPan: "411111******1111" },
        ],
        feeder: "1",
        outcome: "taken",
        endedAt: expect.any(Number),
      } satisfies Omit<CardRecord, "front" | "back">,
    ]);
    expect(JSON.stringify(printer.cardsForRecord())).not.toContain("4111111111111111");
    // Command names are logged; card data never is.
    expect(logs.text()).toContain('"command":"Dm"');
    expect(findSecrets(logs.text(), [TRACK1, TRACK2, "4111111111111111"])).toEqual([]);
  });

  it("waitForCardTaken() reads the mouth sensor (Rse;b) every takePollMs and answers at the first empty reading", async () => {
    const { driver, printer, clock, wire } = await openStack({
      link: "usb",
      printer: { takeAfterMs: null },
      takePollMs: 200,
    });
    await driver.insertCard();
    await driver.presentCard();
    wire();
    const started = clock.now();
    let taken: boolean | undefined;
    void driver.waitForCardTaken(10_000).then((t) => {
      taken = t;
    });
    await driveClock(clock, () => clock.now() - started >= 600, 50);
    expect(taken).toBeUndefined();
    printer.takeCardNow();
    await driveClock(clock, () => taken !== undefined, 50);
    expect(taken).toBe(true);
    expect(clock.now() - started).toBeLessThanOrEqual(800);
    const polls = wire().toString("latin1").split("\x1bRse;b\r").length - 1;
    expect(polls).toBeGreaterThanOrEqual(4);
  });

  it("a card not taken in time is captured the kiosk driver's way: Rse;b, Sib, Ser into the reject box", async () => {
    const { driver, printer, clock, wire } = await openStack({ link: "usb" });
    printer.injectFault("not-taken");
    await driver.insertCard();
    await driver.presentCard();
    const started = clock.now();
    let taken: boolean | undefined;
    void driver.waitForCardTaken(1000).then((t) => {
      taken = t;
    });
    await driveClock(clock, () => taken !== undefined, 50);
    expect(taken).toBe(false);
    expect(clock.now() - started).toBe(1000);
    wire();
    await driver.captureCard();
    expect(wire()).toEqual(frames(["Rse", ["b"]], ["Sib"], ["Ser"]));
    expect(printer.record[0]!.outcome).toBe("captured");
    expect(printer.state.rejectBox.count).toBe(1);
  });

  it("captureCard() with the mouth already empty is NO_CARD and moves nothing", async () => {
    const { driver, wire } = await openStack();
    await expect(driver.captureCard()).rejects.toMatchObject({ code: "NO_CARD" });
    expect(wire()).toEqual(frames(["Rse", ["b"]]));
  });

  it("rejectCard() drops a card from inside into the reject box (Ser)", async () => {
    const { driver, printer, wire } = await openStack({ link: "usb" });
    await driver.insertCard();
    wire();
    await driver.rejectCard();
    expect(wire()).toEqual(frames(["Ser"]));
    expect(printer.record[0]!.outcome).toBe("rejected");
  });

  it("readStatus() reads position, cover, feeder, ribbon, reject box and cleaning from the real reads", async () => {
    const { driver, wire } = await openStack({ printer: { ribbonPanels: 42, ribbonCapacity: 500 } });
    expect(await driver.readStatus()).toEqual({
      cardPosition: "NONE",
      stopReasons: [],
      warnings: [],
      feeders: [{ id: "1", empty: false, nearEmpty: false }],
      cleaning: "none",
      ribbon: { remaining: 42, capacity: 500 },
    });
    expect(wire()).toEqual(
      frames(
        ["Rlr", ["p"]],
        ["Rse", ["b"]],
        ["Rse", ["o"]],
        ["Rse", ["f"]],
        ["Rse", ["n"]],
        ["Rrt", ["count"]],
        ["Rrt", ["qty"]],
        ["Rlr", ["h"]],
        ["Rlr", ["r"]],
      ),
    );
  });

  it("readStatus() names every condition that stops the printer, and the warnings that do not (a due cleaning is one)", async () => {
    const { driver, printer } = await openStack({ printer: { feederCards: 3, ribbonPanels: 15 } });
    expect(await driver.readStatus()).toMatchObject({
      stopReasons: [],
      warnings: ["FEEDER_NEAR_EMPTY", "RIBBON_LOW"],
    });
    printer.injectFault("cover-open", { persistent: true });
    printer.injectFault("feeder-empty", { persistent: true });
    printer.injectFault("ribbon-out", { persistent: true });
    printer.injectFault("needs-cleaning", { persistent: true });
    expect(await driver.readStatus()).toEqual({
      cardPosition: "NONE",
      stopReasons: ["COVER_OPEN", "FEEDER_EMPTY", "RIBBON_OUT"],
      warnings: ["CLEANING_ADVISED"],
      feeders: [{ id: "1", empty: true, nearEmpty: false }],
      cleaning: "advised",
    });
  });

  it("two feeders: Piem picks the feeder, Sk reads them, and one empty feeder is not a stop", async () => {
    const { driver, printer, wire } = await openStack({
      feeders: ["1", "2"],
      printer: { feeders: { "1": 20, "2": 4 } },
    });
    expect(driver.capabilities.feeders).toEqual(["1", "2"]);
    expect(await driver.readStatus()).toMatchObject({
      stopReasons: [],
      warnings: ["FEEDER_NEAR_EMPTY"],
      feeders: [
        { id: "1", empty: false, nearEmpty: false },
        { id: "2", empty: false, nearEmpty: true },
      ],
    });
    wire();
    await driver.insertCard("2");
    expect(wire()).toEqual(Buffer.concat([SETTINGS, frames(["Piem", ["2", "0"]], ["Si"])]));
    await driver.rejectCard();
    expect(printer.record.at(-1)).toMatchObject({ feeder: "2", outcome: "rejected" });
    printer.injectFault("feeder-empty", { persistent: true, feeder: "2" });
    expect(await driver.readStatus()).toMatchObject({
      stopReasons: [],
      feeders: [
        { id: "1", empty: false },
        { id: "2", empty: true },
      ],
    });
    await expect(driver.insertCard("2")).rejects.toMatchObject({ code: "FEEDER_EMPTY" });
    await driver.insertCard("1");
    expect(printer.record.at(-1)).toMatchObject({ feeder: "1" });
    await expect(driver.insertCard("3")).rejects.toThrow(/feeder 3/);
    printer.injectFault("feeder-empty", { persistent: true });
    expect((await driver.readStatus()).stopReasons).toContain("FEEDER_EMPTY");
  });

  it("an Evolis with two feeders only knows feeders 1 and 2", () => {
    expect(() => printerStack({ feeders: ["left", "right"] })).toThrow(RangeError);
  });

  it("readStatus() finds the card inside, at the contact station and in the mouth", async () => {
    const { driver, printer } = await openStack({
      link: "usb",
      printer: { takeAfterMs: null, rejectBoxCapacity: 1 },
    });
    await driver.insertCard();
    expect((await driver.readStatus()).cardPosition).toBe("INSIDE");
    await driver.moveToContactStation();
    expect((await driver.readStatus()).cardPosition).toBe("CONTACT");
    await driver.presentCard();
    expect((await driver.readStatus()).cardPosition).toBe("MOUTH");
    await driver.captureCard();
    expect(printer.state.rejectBox).toEqual({ count: 1, capacity: 1 });
    expect(await driver.readStatus()).toMatchObject({
      cardPosition: "NONE",
      stopReasons: ["REJECT_BOX_FULL"],
    });
  });

  it("a spurious OK to Rrt is retried 100 ms later (kiosk driver GetRibbonStatus)", async () => {
    const { driver, printer, clock } = await openStack({ printer: { ribbonPanels: 77 } });
    printer.injectFault("spurious-ok", { count: 2 });
    let status: Awaited<ReturnType<typeof driver.readStatus>> | undefined;
    void driver.readStatus().then((s) => {
      status = s;
    });
    await driveClock(clock, () => status !== undefined, 100);
    expect(status?.ribbon?.remaining).toBe(77);
  });

  it("presentCard() fails CARD_IN_PATH when the card did not leave (never taken for a taken card)", async () => {
    const { driver, printer } = await openStack({ link: "usb" });
    await driver.insertCard();
    printer.injectFault("spurious-ok", { at: "present" }); // the Se answers OK but does nothing
    await expect(driver.presentCard()).rejects.toMatchObject({ code: "CARD_IN_PATH", command: "Se" });
    expect(printer.state.position).toBe("INSIDE");
  });

  it("garbage before a reply is dropped and counted; the driver resynchronises", async () => {
    const { driver, printer } = await openStack({ link: "usb" });
    printer.injectFault("garbage", { at: "Si", thenReply: true });
    await driver.insertCard();
    expect(driver.stats.droppedFrames).toBe(1);
    await driver.moveToContactStation();
    expect(printer.state.position).toBe("CONTACT");
    expect(driver.stats.droppedFrames).toBe(1);
  });

  it("DEVICE_TIMEOUT names the command, on the injected clock", async () => {
    const { driver, printer, clock } = await openStack({ link: "usb" });
    printer.injectFault("timeout", { at: "Si" });
    let settled = false;
    const insert = driver.insertCard().finally(() => {
      settled = true;
    });
    insert.catch(() => undefined);
    await settle(() => false, 20);
    clock.advance(4_999);
    await settle(() => settled, 20);
    expect(settled).toBe(false);
    clock.advance(1);
    await expect(insert).rejects.toMatchObject({ code: "DEVICE_TIMEOUT", command: "Si" });
  });

  it("only garbage until the timeout is PROTOCOL_ERROR, not a silent printer", async () => {
    const { driver, printer, clock } = await openStack({ link: "usb" });
    printer.injectFault("garbage", { at: "Si" });
    const insert = driver.insertCard();
    insert.catch(() => undefined);
    await settle(() => false, 20);
    clock.advance(5_000);
    await expect(insert).rejects.toMatchObject({ code: "PROTOCOL_ERROR", command: "Si" });
  });

  it("the link going away mid-command is DEVICE_DISCONNECTED; the driver opens again after the replug", async () => {
    const { driver, printer, clock } = await openStack();
    printer.injectFault("unplug", { at: "Si", replugAfterMs: 1_000 });
    await expect(driver.insertCard()).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
    expect(driver.isOpen).toBe(false);
    await expect(driver.open()).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
    clock.advance(1_000);
    // Cut mid-command: the reopen resyncs first, then waits for the printer to fall quiet.
    let opened = false;
    void driver.open().then(() => {
      opened = true;
    });
    await driveClock(clock, () => opened, 100);
    await driver.insertCard();
    expect(printer.state.position).toBe("INSIDE");
  });

  it.each([
    ["feeder-empty", "FEEDER_EMPTY"],
    ["card-jam", "CARD_JAM"],
    ["unknown-error", "PRINTER_ERROR"],
  ] as const)("%s at Si is %s, answered at once", async (fault, code) => {
    const { driver, printer } = await openStack({ link: "usb" });
    printer.injectFault(fault);
    await expect(driver.insertCard()).rejects.toMatchObject({ code, command: "Si" });
  });

  it.each([
    ["ribbon-out", "RIBBON_OUT"],
    ["cover-open", "COVER_OPEN"],
    ["needs-cleaning", "CLEANING_REQUIRED"],
  ] as const)("%s at the printing Se is %s", async (fault, code) => {
    const { driver, printer } = await openStack({ link: "usb" });
    await driver.insertCard();
    printer.injectFault(fault);
    await expect(driver.printSides({ front: blockImage(3, 3) })).rejects.toMatchObject({
      code,
      command: "Se",
    });
  });

  it("a full reject box answers HOPPER FULL: REJECT_BOX_FULL, and the card stays", async () => {
    const { driver, printer } = await openStack({ link: "usb" });
    await driver.insertCard();
    printer.injectFault("hopper-full");
    await expect(driver.rejectCard()).rejects.toMatchObject({ code: "REJECT_BOX_FULL", command: "Ser" });
    expect(printer.state.position).toBe("INSIDE");
  });

  it("resync: a printer left inside a half-sent Dbc by a killed agent reads commands again", async () => {
    // The previous agent died 4 KB into a 22 KB front panel: the printer waits for 18 KB more.
    const cut = () => Buffer.concat([Buffer.from("\x1bDbc;k;2;22000;", "latin1"), Buffer.alloc(4096, 0x55)]);
    const stuck = printerStack({ timeouts: { defaultMs: 500 } });
    closeAfter.push(() => stuck.driver.close());
    stuck.printer.receive(cut());
    const open = stuck.driver.open();
    open.catch(() => undefined);
    await settle(() => false, 20);
    stuck.clock.advance(500);
    // Without the resync the first setting vanishes into the panel.
    await expect(open).rejects.toMatchObject({ code: "DEVICE_TIMEOUT", command: "Pem" });
    // A command that timed out may have left the printer inside a frame: the next open (or
    // operation) resyncs by itself, so a deaf printer does not stay deaf (docs/crash-harness.md, 6).
    let reopened = false;
    void stuck.driver.open().then(() => {
      reopened = true;
    });
    await driveClock(stuck.clock, () => reopened, 100);
    expect(reopened).toBe(true);
    expect(stuck.printer.state.settings.errorMode).toBe(2);

    const { driver, printer, clock } = printerStack();
    closeAfter.push(() => driver.close());
    printer.receive(cut());
    let opened = false;
    void driver.open({ resync: true }).then(() => {
      opened = true;
    });
    await driveClock(clock, () => opened, 100);
    expect(opened).toBe(true);
    expect(printer.state.settings.errorMode).toBe(2);
    await driver.insertCard();
    expect(printer.state.position).toBe("INSIDE");
    // The cut frame was refused as a whole, never printed.
    expect(printer.commandLog.slice(0, 2)).toEqual(["Dbc", "Pem;2"]);
  });

  it("a link that closes in the middle of a command makes the next open resync by itself", async () => {
    const { driver, printer, clock, wire } = await openStack();
    printer.injectFault("unplug", { at: "Si", replugAfterMs: 100 });
    await expect(driver.insertCard()).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
    clock.advance(100);
    wire();
    let opened = false;
    void driver.open().then(() => {
      opened = true;
    });
    await driveClock(clock, () => opened, 100);
    const sent = wire();
    expect(sent.subarray(0, 83_313)).toEqual(Buffer.alloc(83_313, 0));
    expect(sent[83_313]).toBe(0x0d);
    expect(sent.subarray(83_314, 83_321)).toEqual(hex("1B 50 65 6D 3B 32 0D"));
  });

  it("a command the simulated Evolis does not know is answered ERROR CDE", async () => {
    const { printer } = await openStack();
    const replies: string[] = [];
    printer.attach({
      path: "t",
      plugged: true,
      send: (b) => replies.push(b.toString("latin1")),
      unplug: () => undefined,
      replug: () => undefined,
    });
    printer.receive(Buffer.from("\x1bRcv\r\x1bRpos\r\x1bWbz;100\r\x1bScb\r\x1bRbz\r", "latin1"));
    await settle(() => replies.length >= 5);
    expect(replies).toEqual(Array(5).fill("ERROR CDE\0"));
  });
});
