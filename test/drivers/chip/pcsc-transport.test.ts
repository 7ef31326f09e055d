import { EventEmitter } from "node:events";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChipError } from "../../../drivers/chip/apdu-runner.js";
import {
  PcscApduTransport,
  type PcscContext,
  type PcscReader,
  type PcscTransportOptions,
} from "../../../drivers/chip/pcsc-transport.js";

const PRESENT = 0x20;
const EMPTY = 0x10;
const MUTE = 0x200;
const INUSE = 0x100;
/** pcsc-lite puts the reader's card event counter in the high 16 bits of the event state. */
const withEvents = (state: number, events: number) => (events << 16) | state;
const ATR = Buffer.from("3B8F8001804F0CA000000306030001000000006A", "hex");

type Cb<T> = (err: Error | null | undefined, value: T) => void;

class FakeReader extends EventEmitter implements PcscReader {
  closed = false;
  closedAfterStatus: boolean | undefined;
  statusSeen = false;
  connectOptions: { share_mode: number; protocol: number } | undefined;
  transmits: Array<{ resLen: number; protocol: number }> = [];
  dispositions: number[] = [];
  transmitAnswer: (data: Buffer) => Buffer | Error | "hang" = () => Buffer.from("9000", "hex");
  constructor(readonly name: string) {
    super();
  }
  status(state: number, atr?: Buffer): void {
    this.statusSeen = true;
    this.emit("status", atr ? { state, atr } : { state });
  }
  connect(options: { share_mode: number; protocol: number }, cb: Cb<number>): void {
    this.connectOptions = options;
    setImmediate(() => cb(null, 2));
  }
  transmit(data: Buffer, resLen: number, protocol: number, cb: Cb<Buffer>): void {
    this.transmits.push({ resLen, protocol });
    const answer = this.transmitAnswer(data);
    if (answer === "hang") return;
    setImmediate(() => (answer instanceof Error ? cb(answer, Buffer.alloc(0)) : cb(null, answer)));
  }
  disconnect(disposition: number, cb: (err: Error | null | undefined) => void): void {
    this.dispositions.push(disposition);
    setImmediate(() => cb(null));
  }
  close(): void {
    this.closed = true;
    this.closedAfterStatus = this.statusSeen;
  }
}

class FakeContext extends EventEmitter implements PcscContext {
  closed = false;
  readonly readers: FakeReader[] = [];
  addReader(name: string, state?: number, atr?: Buffer): FakeReader {
    const r = new FakeReader(name);
    this.readers.push(r);
    this.emit("reader", r);
    if (state !== undefined) r.status(state, atr);
    return r;
  }
  close(): void {
    this.closed = true;
  }
}

let socketDir: string;
let socketPath: string;
let server: Server;
beforeAll(async () => {
  socketDir = mkdtempSync(join(tmpdir(), "pcsc-test-"));
  socketPath = join(socketDir, "pcscd.comm");
  server = createServer((s) => s.destroy());
  await new Promise<void>((r) => server.listen(socketPath, r));
});
afterAll(async () => {
  await new Promise<void>((r) => server.close(() => r()));
});

function setup(options: Partial<PcscTransportOptions> = {}, onContext?: (ctx: FakeContext) => void) {
  const contexts: FakeContext[] = [];
  const transport = new PcscApduTransport({
    reader: "Virtual PCD 00 00",
    socketPath,
    cardTimeoutMs: 300,
    readerTimeoutMs: 200,
    createContext: () => {
      const ctx = new FakeContext();
      contexts.push(ctx);
      // pcsclite announces readers asynchronously, after the context exists.
      setImmediate(() => onContext?.(ctx));
      return ctx;
    },
    ...options,
  });
  return { transport, contexts };
}

async function failure(p: Promise<unknown>): Promise<ChipError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ChipError);
  return err as ChipError;
}

describe("PcscApduTransport", () => {
  it("takes the reader by its exact name only: a reader whose name merely starts the same is never used", async () => {
    const a = setup({ reader: "Virtual PCD 00 01" }, (ctx) => {
      ctx.addReader("Virtual PCD 00 00", EMPTY);
      ctx.addReader("Virtual PCD 00 01", EMPTY);
    });
    expect(await a.transport.resolveReader()).toBe("Virtual PCD 00 01");
    await a.transport.close();
    // Issue 14: a second reader plugged in (or a prefix in the configuration) must not get the card's APDUs.
    const b = setup({ reader: "Virtual" }, (ctx) => {
      ctx.addReader("Virtual PCD 00 01", EMPTY);
      ctx.addReader("Virtual PCD 00 00", EMPTY);
    });
    const err = await failure(b.transport.resolveReader());
    expect(err.code).toBe("CHIP_IO_ERROR");
    expect(err.message).toContain(
      'no PC/SC reader named "Virtual" (readers: Virtual PCD 00 01, Virtual PCD 00 00)',
    );
    await b.transport.close();
    // The simulator's own discovery of its vpcd reader may ask for a prefix match, explicitly.
    const c = setup({ reader: "Virtual", matchPrefix: true }, (ctx) => {
      ctx.addReader("Virtual PCD 00 01", EMPTY);
      ctx.addReader("Virtual PCD 00 00", EMPTY);
    });
    expect(await c.transport.resolveReader()).toBe("Virtual PCD 00 00");
    await c.transport.close();
  });

  it("no such reader → CHIP_IO_ERROR naming the readers it found", async () => {
    const { transport } = setup({ reader: "ACS ACR39U" }, (ctx) => ctx.addReader("Virtual PCD 00 00", EMPTY));
    const err = await failure(transport.connect());
    expect(err.code).toBe("CHIP_IO_ERROR");
    expect(err.message).toContain('no PC/SC reader named "ACS ACR39U" (readers: Virtual PCD 00 00)');
    await transport.close();
  });

  it("waits for a card, connects exclusive with T=0|T=1, returns the ATR, transmits with the negotiated protocol", async () => {
    let reader!: FakeReader;
    const { transport } = setup({ cardTimeoutMs: 2000 }, (ctx) => {
      reader = ctx.addReader("Virtual PCD 00 00", EMPTY);
    });
    const connecting = transport.connect();
    await new Promise((r) => setTimeout(r, 50));
    expect(reader.connectOptions).toBeUndefined();
    reader.status(withEvents(PRESENT, 1), ATR);
    const { atr } = await connecting;
    expect(atr).toEqual(ATR);
    // SCARD_SHARE_EXCLUSIVE (1): no other PC/SC client can reach the card while it is personalised.
    expect(reader.connectOptions).toEqual({ share_mode: 1, protocol: 3 });
    expect((await transport.transmit(Buffer.from("00A40400", "hex"))).toString("hex")).toBe("9000");
    expect(reader.transmits).toEqual([{ resLen: 65_538, protocol: 2 }]);
    await transport.disconnect();
    expect(reader.dispositions).toEqual([1]);
    await transport.close();
  });

  it("no card within the timeout → CHIP_NO_ATR; a mute card → CHIP_NO_ATR at once", async () => {
    const a = setup({ cardTimeoutMs: 100 }, (ctx) => ctx.addReader("Virtual PCD 00 00", EMPTY));
    const none = await failure(a.transport.connect());
    expect(none).toMatchObject({ code: "CHIP_NO_ATR", message: "no card in reader within 100 ms" });
    await a.transport.close();

    const b = setup({ cardTimeoutMs: 5000 }, (ctx) => ctx.addReader("Virtual PCD 00 00", PRESENT | MUTE));
    const started = Date.now();
    const mute = await failure(b.transport.connect());
    expect(mute).toMatchObject({ code: "CHIP_NO_ATR" });
    expect(mute.message).toContain("mute");
    expect(Date.now() - started).toBeLessThan(1000);
    await b.transport.close();
  });

  it("takes only a card that arrived after the last disconnect (a stale 'present' is not the next card)", async () => {
    let reader!: FakeReader;
    const { transport } = setup({ cardTimeoutMs: 150 }, (ctx) => {
      reader = ctx.addReader("Virtual PCD 00 00", withEvents(PRESENT, 3), ATR);
    });
    await transport.connect();
    reader.status(withEvents(PRESENT | INUSE, 3), ATR);
    await transport.disconnect();
    reader.status(withEvents(PRESENT, 3), ATR);
    // pcscd has not polled since the card left: same card event count, still "present".
    expect(await failure(transport.connect())).toMatchObject({ code: "CHIP_NO_ATR" });
    setTimeout(() => reader.status(withEvents(EMPTY, 4)), 20);
    setTimeout(() => reader.status(withEvents(PRESENT, 5), ATR), 40);
    await expect(transport.connect()).resolves.toEqual({ atr: ATR });
    await transport.close();
  });

  it("requireNewCard: false reconnects to the same card", async () => {
    const { transport } = setup({ requireNewCard: false, disposition: "leave" }, (ctx) =>
      ctx.addReader("Virtual PCD 00 00", withEvents(PRESENT, 1), ATR),
    );
    await transport.connect();
    await transport.disconnect();
    await expect(transport.connect()).resolves.toEqual({ atr: ATR });
    await transport.close();
  });

  it("a failed transmit → CHIP_IO_ERROR with the PC/SC reason named, never the bytes", async () => {
    let reader!: FakeReader;
    const { transport } = setup({}, (ctx) => {
      reader = ctx.addReader("Virtual PCD 00 00", withEvents(PRESENT, 1), ATR);
    });
    await transport.connect();
    reader.transmitAnswer = () => new Error("SCardTransmit error: Card was removed.(0x80100069)");
    const command = Buffer.from("80E2800003010100", "hex");
    const err = await failure(transport.transmit(command));
    expect(err.code).toBe("CHIP_IO_ERROR");
    expect(err.message).toBe("the reader failed: card removed (0x80100069)");
    expect(err.message).not.toMatch(/80E28000/i);
    await transport.close();
  });

  it("a reader that never answers → CHIP_IO_ERROR after commandTimeoutMs", async () => {
    let reader!: FakeReader;
    const { transport } = setup({ commandTimeoutMs: 80 }, (ctx) => {
      reader = ctx.addReader("Virtual PCD 00 00", withEvents(PRESENT, 1), ATR);
    });
    await transport.connect();
    reader.transmitAnswer = () => "hang";
    const err = await failure(transport.transmit(Buffer.from("00A40400", "hex")));
    expect(err.message).toBe("the reader failed: transmit got no answer within 80 ms");
    await transport.close();
  });

  it("transmit without a card → CHIP_IO_ERROR", async () => {
    const { transport } = setup();
    expect(await failure(transport.transmit(Buffer.from("00", "hex")))).toMatchObject({
      code: "CHIP_IO_ERROR",
    });
  });

  it("pcscd not running (no socket) → CHIP_IO_ERROR at once, pcsc-lite never asked", async () => {
    const { transport, contexts } = setup({ socketPath: join(socketDir, "missing.comm") });
    const started = Date.now();
    const err = await failure(transport.connect());
    expect(err).toMatchObject({ code: "CHIP_IO_ERROR" });
    expect(err.message).toContain("PC/SC service not running");
    expect(contexts).toHaveLength(0);
    expect(Date.now() - started).toBeLessThan(500);
  });

  it("a stale socket file nobody listens on → CHIP_IO_ERROR, not a hang", async () => {
    const stale = join(socketDir, "stale.comm");
    writeFileSync(stale, "");
    const { transport, contexts } = setup({ socketPath: stale });
    const err = await failure(transport.connect());
    expect(err.message).toMatch(/PC\/SC service not running \(E[A-Z]+ on .*stale\.comm\)/);
    expect(contexts).toHaveLength(0);
  });

  it("close() releases the readers (each only after its monitor reported) and the context", async () => {
    let late!: FakeReader;
    const { transport, contexts } = setup({}, (ctx) => {
      ctx.addReader("Virtual PCD 00 00", EMPTY);
      late = ctx.addReader("Virtual PCD 00 01");
    });
    await transport.resolveReader();
    setTimeout(() => late.status(EMPTY), 40);
    await transport.close();
    const [ctx] = contexts;
    expect(ctx!.closed).toBe(true);
    expect(ctx!.readers.map((r) => [r.closed, r.closedAfterStatus])).toEqual([
      [true, true],
      [true, true],
    ]);
    expect(await failure(transport.connect())).toMatchObject({ code: "CHIP_IO_ERROR" });
  });

  it("a context error (pcscd went away) drops the context; the next connect makes a new one", async () => {
    const { transport, contexts } = setup({}, (ctx) =>
      ctx.addReader("Virtual PCD 00 00", withEvents(PRESENT, 1), ATR),
    );
    await transport.resolveReader();
    contexts[0]!.emit("error", new Error("SCardListReaders error: Service was stopped.(0x8010001E)"));
    await new Promise((r) => setTimeout(r, 100));
    expect(contexts[0]!.closed).toBe(true);
    await expect(transport.connect()).resolves.toEqual({ atr: ATR });
    expect(contexts).toHaveLength(2);
    await transport.close();
  });
});
