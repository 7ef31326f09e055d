import { describe, expect, it } from "vitest";
import { ChipError, runApduScript } from "../../../drivers/chip/apdu-runner.js";
import type { ApduTransport } from "../../../drivers/chip/apdu-transport.js";

const ATR = Buffer.from("3B8F8001804F0CA000000306030001000000006A", "hex");

/** Answers each transmit from a list (hex, or an Error to throw), and records what was sent. */
class ScriptedTransport implements ApduTransport {
  readonly sent: string[] = [];
  connects = 0;
  disconnects = 0;
  constructor(
    private readonly answers: Array<string | Error>,
    private readonly atr: Buffer | Error = ATR,
  ) {}
  async connect(): Promise<{ atr: Buffer }> {
    this.connects++;
    if (this.atr instanceof Error) throw this.atr;
    return { atr: this.atr };
  }
  async transmit(command: Buffer): Promise<Buffer> {
    this.sent.push(command.toString("hex").toUpperCase());
    const next = this.answers.shift();
    if (next === undefined) throw new Error("script exhausted");
    if (next instanceof Error) throw next;
    return Buffer.from(next, "hex");
  }
  async disconnect(): Promise<void> {
    this.disconnects++;
  }
}

async function failure(p: Promise<unknown>): Promise<ChipError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ChipError);
  return err as ChipError;
}

const SELECT = "00A4040007A000000004101000";
const GET_DATA = "80CA9F7F00";
const STORE = "80E2800003010100";

describe("runApduScript", () => {
  it("runs every APDU in order, compares the final SW case-insensitively, disconnects", async () => {
    const t = new ScriptedTransport(["9000", "6F009000"]);
    const { atr } = await runApduScript(t, [
      { command: SELECT, expectSw: "9000" },
      { command: STORE, expectSw: "9000" },
    ]);
    expect(atr).toEqual(ATR);
    expect(t.sent).toEqual([SELECT, STORE]);
    expect(t.disconnects).toBe(1);
  });

  it("61xx: fetches the rest with GET RESPONSE (Le = xx), and only the final SW counts", async () => {
    const t = new ScriptedTransport(["6110", "6F0E840700000000000000A5035001419000"]);
    await runApduScript(t, [{ command: SELECT, expectSw: "9000" }]);
    expect(t.sent).toEqual([SELECT, "00C0000010"]);
  });

  it("61xx repeatedly: keeps fetching until a final SW", async () => {
    const t = new ScriptedTransport(["6102", "AAAA6102", "BBBB9000"]);
    await runApduScript(t, [{ command: SELECT, expectSw: "9000" }]);
    expect(t.sent).toEqual([SELECT, "00C0000002", "00C0000002"]);
  });

  it("6Cxx on a case-2 command: re-sends it with Le = xx", async () => {
    const t = new ScriptedTransport(["6C05", "01020304059000"]);
    await runApduScript(t, [{ command: GET_DATA, expectSw: "9000" }]);
    expect(t.sent).toEqual([GET_DATA, "80CA9F7F05"]);
  });

  it("6Cxx on a header-only command: appends Le = xx", async () => {
    const t = new ScriptedTransport(["6C08", "01020304050607089000"]);
    await runApduScript(t, [{ command: "80CA9F7F", expectSw: "9000" }]);
    expect(t.sent).toEqual(["80CA9F7F", "80CA9F7F08"]);
  });

  it("6Cxx on a case-3 command (no Le): appends Le instead of overwriting a data byte", async () => {
    const t = new ScriptedTransport(["6C02", "AABB9000"]);
    await runApduScript(t, [{ command: STORE, expectSw: "9000" }]);
    expect(t.sent).toEqual([STORE, `${STORE}02`]);
  });

  it("6Cxx after 61xx: corrects the GET RESPONSE, not the original command", async () => {
    const t = new ScriptedTransport(["6114", "6C12", `${"AB".repeat(18)}9000`]);
    await runApduScript(t, [{ command: SELECT, expectSw: "9000" }]);
    expect(t.sent).toEqual([SELECT, "00C0000014", "00C0000012"]);
  });

  it("endless chaining stops with CHIP_IO_ERROR for that APDU", async () => {
    const t = new ScriptedTransport(Array.from({ length: 40 }, () => "6101"));
    const err = await failure(runApduScript(t, [{ command: SELECT, expectSw: "9000" }]));
    expect(err).toMatchObject({ code: "CHIP_IO_ERROR", index: 0 });
    expect(t.disconnects).toBe(1);
  });

  it("a wrong status word → CHIP_SW_MISMATCH with the APDU's index, never its bytes", async () => {
    const t = new ScriptedTransport(["9000", "6A80"]);
    const err = await failure(
      runApduScript(t, [
        { command: SELECT, expectSw: "9000" },
        { command: STORE, expectSw: "9000" },
      ]),
    );
    expect(err).toMatchObject({ code: "CHIP_SW_MISMATCH", index: 1 });
    expect(err.message).toBe("APDU #1 answered an unexpected status word");
    expect(t.disconnects).toBe(1);
  });

  it("a reader failure → CHIP_IO_ERROR with the index; the cause's text is not in the message", async () => {
    const t = new ScriptedTransport(["9000", new Error(`card removed while sending ${STORE}`)]);
    const err = await failure(
      runApduScript(t, [
        { command: SELECT, expectSw: "9000" },
        { command: STORE, expectSw: "9000" },
      ]),
    );
    expect(err).toMatchObject({ code: "CHIP_IO_ERROR", index: 1 });
    expect(err.message).not.toContain(STORE);
  });

  it("a response shorter than a status word → CHIP_IO_ERROR", async () => {
    const t = new ScriptedTransport([""]);
    const err = await failure(runApduScript(t, [{ command: SELECT, expectSw: "9000" }]));
    expect(err).toMatchObject({ code: "CHIP_IO_ERROR", index: 0 });
  });

  it("a ChipError from the transport keeps its code and gains the index", async () => {
    const t = new ScriptedTransport([new ChipError("CHIP_NO_ATR", undefined, "card mute")]);
    const err = await failure(runApduScript(t, [{ command: SELECT, expectSw: "9000" }]));
    expect(err).toMatchObject({ code: "CHIP_NO_ATR", index: 0 });
  });

  it("connect failing → CHIP_NO_ATR; a ChipError from connect (e.g. no PC/SC service) is kept", async () => {
    const plain = await failure(runApduScript(new ScriptedTransport([], new Error("x")), []));
    expect(plain).toMatchObject({ code: "CHIP_NO_ATR", index: undefined });
    const typed = new ChipError("CHIP_IO_ERROR", undefined, "PC/SC service not running");
    const kept = await failure(runApduScript(new ScriptedTransport([], typed), []));
    expect(kept).toBe(typed);
  });

  it("an empty ATR → CHIP_NO_ATR, and the card is still disconnected", async () => {
    const t = new ScriptedTransport([], Buffer.alloc(0));
    const err = await failure(runApduScript(t, [{ command: SELECT, expectSw: "9000" }]));
    expect(err).toMatchObject({ code: "CHIP_NO_ATR" });
    expect(t.sent).toEqual([]);
    expect(t.disconnects).toBe(1);
  });
});
