import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { Operation } from "../../../agent/d1/operation.js";
import { D1Emulator, type D1EmulatorOptions } from "../../../simulator/d1-emulator/emulator.js";

/**
 * The emulator driven by a bare `ws` client that plays the agent. No sleeps: every step awaits a
 * frame, a socket event or an emulator condition.
 */

const TOKEN = "test-token-123456";
const STATION = "KIOSK-PS-101";
const OP_ID = "01c5a05e-e197-11ec-8fea-0242ac120002";
const START = "2025-01-17T06:28:03.000Z";

// The example job of shared/production-job.md (test card data, not a real card).
const JOB = {
  operationId: OP_ID,
  operation: "PRODUCE",
  cardId: "271b-6e47-8ec3-7f3f",
  distributionChannel: "INSTANT",
  persoStation: STATION,
  productionData: {
    print: { front: [{ text: "5266 0922 0141 6174", xMm: 8, yMm: 30, sizePt: 14, sensitive: true }] },
    magstripe: {
      coercivity: "HICO",
      track1: "B5266092201416174^FATEHI/SUALEH^2804201000000000000",
      track2: "5266092201416174=2804201000000000000",
    },
  },
};

function op(status: string, extra: Partial<Operation> = {}): Operation {
  const top =
    status === "CARD_PROD_DONE" ? "SUCCESSFUL" : status === "CARD_PROD_READY" ? "PENDING" : "FAILED";
  return {
    operationId: OP_ID,
    operation: "PRODUCE",
    status: top,
    startTime: START,
    ...(top === "PENDING" ? {} : { endTime: "2025-01-17T06:29:00.000Z" }),
    cardId: "271b-6e47-8ec3-7f3f",
    details: { status },
    ...extra,
  };
}

/** The agent's side: a raw socket plus a queue of parsed frames. */
class FakeAgent {
  private readonly inbox: string[] = [];
  private readonly waiting: Array<(text: string) => void> = [];

  constructor(readonly ws: WebSocket) {
    ws.on("message", (data) => {
      const text = data.toString();
      const w = this.waiting.shift();
      if (w) w(text);
      else this.inbox.push(text);
    });
  }

  static async connect(url: string, token = TOKEN): Promise<FakeAgent> {
    const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } });
    const agent = new FakeAgent(ws);
    await once(ws, "open");
    return agent;
  }

  send(message: unknown): void {
    this.ws.send(typeof message === "string" ? message : JSON.stringify(message));
  }

  nextRaw(): Promise<string> {
    const text = this.inbox.shift();
    if (text !== undefined) return Promise.resolve(text);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  async next(): Promise<Record<string, unknown>> {
    return JSON.parse(await this.nextRaw()) as Record<string, unknown>;
  }

  async hello(): Promise<Record<string, unknown>> {
    this.send({ type: "hello", persoStation: STATION, agentVersion: "0.1.0-test", sessionId: "s-1" });
    return this.next();
  }
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(options: Partial<D1EmulatorOptions> = {}): Promise<{ d1: D1Emulator; url: string }> {
  const d1 = new D1Emulator({ token: TOKEN, ...options });
  const { url } = await d1.start();
  cleanups.push(() => d1.stop());
  return { d1, url };
}

async function connected(url: string): Promise<FakeAgent> {
  const agent = await FakeAgent.connect(url);
  cleanups.push(() => agent.ws.terminate());
  expect(await agent.hello()).toMatchObject({ type: "welcome" });
  return agent;
}

describe("D1Emulator", () => {
  it("refuses the upgrade with 401 on a wrong or missing bearer token", async () => {
    const { d1, url } = await setup();
    for (const headers of [{ Authorization: "Bearer wrong-token" }, {}]) {
      const ws = new WebSocket(url, { headers });
      const closed = new Promise((resolve) => ws.once("close", resolve));
      // Without an 'unexpected-response' listener, ws reports the HTTP status as an error, then closes.
      const [err] = (await once(ws, "error")) as [Error];
      expect(err.message).toBe("Unexpected server response: 401");
      await closed;
    }
    expect(d1.stats.authFailures).toBe(2);
    expect(d1.stats.connections).toBe(0);
  });

  it("answers hello with welcome and tracks the station", async () => {
    const { d1, url } = await setup();
    const waiting = d1.waitForConnection(STATION);
    const agent = await FakeAgent.connect(url);
    cleanups.push(() => agent.ws.terminate());
    const welcome = await agent.hello();
    expect(welcome["type"]).toBe("welcome");
    expect(typeof welcome["serverTime"]).toBe("string");
    const info = await waiting;
    expect(info).toMatchObject({ persoStation: STATION, agentVersion: "0.1.0-test", sessionId: "s-1" });
    expect(d1.connectedStations()).toEqual([STATION]);
  });

  it("push → push-result round trip; the accepted set is what D1 was told", async () => {
    const { d1, url } = await setup();
    const agent = await connected(url);
    const answered = d1.push(JOB);
    const push = await agent.next();
    expect(push).toMatchObject({ type: "push", job: JOB });
    const requestId = push["requestId"] as string;
    agent.send({ type: "push-result", requestId, operationId: OP_ID, result: "accepted" });
    await expect(answered).resolves.toEqual({
      type: "push-result",
      requestId,
      operationId: OP_ID,
      result: "accepted",
    });
    expect([...d1.accepted]).toEqual([OP_ID]);
    expect(d1.pushes).toHaveLength(1);
    expect(d1.pushes[0]).toMatchObject({
      requestId,
      operationId: OP_ID,
      station: STATION,
      answer: { result: "accepted" },
    });

    // A re-push answered "refused" after "accepted" breaks the duplicate rule.
    const again = d1.push(JOB, { requestId: "re-push" });
    await agent.next();
    agent.send({
      type: "push-result",
      requestId: "re-push",
      operationId: OP_ID,
      result: "refused",
      errorCode: "X",
    });
    await again;
    expect(d1.violations.map((v) => v.kind)).toEqual(["push-result-mismatch"]);
  });

  it("rejects a push when no station is connected, and on timeout", async () => {
    const { d1, url } = await setup();
    await expect(d1.push(JOB)).rejects.toMatchObject({ code: "NO_STATION" });
    const agent = await connected(url);
    const answer = d1.push(JOB, { timeoutMs: 50 });
    await agent.next(); // the push arrives; the fake agent never answers
    await expect(answer).rejects.toMatchObject({ code: "TIMEOUT" });
    expect(d1.pushes[0]?.failure).toBe("timeout");
  });

  it("acks a notify in auto mode; a re-sent eventId is marked duplicate and not recorded twice", async () => {
    const { d1, url } = await setup();
    const agent = await connected(url);
    const seen: Operation[] = [];
    d1.on("operation", (o) => seen.push(o));
    const ready = op("CARD_PROD_READY");
    const done = op("CARD_PROD_DONE");

    agent.send({ type: "notify", operations: [ready, done], eventIds: ["e1", "e2"] });
    expect(await agent.next()).toEqual({ type: "ack", eventIds: ["e1", "e2"] });

    agent.send({ type: "notify", operations: [done], eventIds: ["e2"] });
    expect(await agent.next()).toEqual({ type: "ack", eventIds: ["e2"] });

    expect(d1.received.map((r) => [r.eventId, r.duplicate])).toEqual([
      ["e1", false],
      ["e2", false],
      ["e2", true],
    ]);
    expect(d1.operations(OP_ID)).toEqual([ready, done]);
    expect(seen).toEqual([ready, done]);
    expect(d1.latest(OP_ID)).toEqual(done);
    expect(d1.terminalCount(OP_ID)).toBe(1);
    expect(d1.stats).toMatchObject({ newEvents: 2, duplicateEvents: 1, protocolViolations: 0 });
  });

  it("manual ack mode: nothing is acked until ack(); dropUnacked() forgets", async () => {
    const { d1, url } = await setup({ ackMode: "manual" });
    const agent = await connected(url);
    agent.send({ type: "notify", operations: [op("CARD_PROD_READY")], eventIds: ["e1"] });
    await d1.waitFor(() => d1.unackedEventIds().length === 1);
    expect(d1.dropUnacked()).toEqual(["e1"]);
    agent.send({ type: "notify", operations: [op("CARD_PROD_READY")], eventIds: ["e1"] });
    await d1.waitFor(() => d1.unackedEventIds().length === 1);
    d1.ack();
    expect(await agent.next()).toEqual({ type: "ack", eventIds: ["e1"] });
    expect(d1.stats.acksSent).toBe(1);
  });

  it("writes each new operation to the record file as exactly the D1 object", async () => {
    const dir = mkdtempSync(join(tmpdir(), "d1-emulator-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const recordFile = join(dir, "d1.jsonl");
    const { d1, url } = await setup({ recordFile });
    const agent = await connected(url);
    const ready = op("CARD_PROD_READY", { issuerRequestId: "req-1" });
    const failed = op("CARD_PROD_EXCEPTION", { errorCode: "CB_TIME", error: "collect" });
    failed.details.reason = "CB_TIME";

    agent.send({ type: "notify", operations: [ready], eventIds: ["e1"] });
    await agent.next();
    // Re-sent (duplicate) and an extra, non-D1 field: neither reaches the record.
    agent.send({ type: "notify", operations: [ready, { ...failed, internal: 1 }], eventIds: ["e1", "e2"] });
    await agent.next();

    const lines = readFileSync(recordFile, "utf8").trimEnd().split("\n");
    expect(lines.map((l) => JSON.parse(l))).toEqual([ready, failed]);
    expect(lines[0]).toBe(JSON.stringify(ready));
    expect(d1.violations.map((v) => v.kind)).toEqual(["extra-fields"]);
  });

  it("counts invalid frames as violations, answers nothing and keeps the link up", async () => {
    const { d1, url } = await setup();
    const agent = await connected(url);
    agent.send("{not json");
    agent.send({ type: "bogus" });
    agent.send({ type: "notify", operations: [{ operationId: OP_ID }], eventIds: ["e1"] });
    agent.send({ type: "notify", operations: [op("CARD_PROD_READY")], eventIds: ["e1", "e2"] });
    agent.send({
      type: "notify",
      operations: [op("CARD_PROD_DONE", { status: "FAILED" })],
      eventIds: ["e3"],
    });
    agent.ws.send(Buffer.from([1, 2, 3]));
    await d1.waitFor(() => d1.stats.protocolViolations === 6);
    expect(d1.violations.map((v) => v.kind)).toEqual([
      "malformed-json",
      "invalid-message",
      "invalid-message",
      "invalid-message",
      "status-mismatch",
      "binary-frame",
    ]);
    // The status-mismatch notify is still a valid message and is acked; then the link still works.
    expect(await agent.next()).toEqual({ type: "ack", eventIds: ["e3"] });
    agent.send({ type: "notify", operations: [op("CARD_PROD_READY")], eventIds: ["e4"] });
    expect(await agent.next()).toEqual({ type: "ack", eventIds: ["e4"] });
    expect(agent.ws.readyState).toBe(WebSocket.OPEN);
  });

  it("flags card data of a pushed job coming back in an agent frame", async () => {
    const { d1, url } = await setup();
    const agent = await connected(url);
    const answered = d1.push(JOB);
    const { requestId } = (await agent.next()) as { requestId: string };
    agent.send({ type: "push-result", requestId, result: "refused", error: "bad pan 5266092201416174" });
    await answered;
    expect(d1.violations.map((v) => v.kind)).toEqual(["card-data-leak"]);
    expect(JSON.stringify(d1.violations)).not.toContain("5266092201416174");
  });

  it("cancel, status query, sendRaw and nextMessage round trips", async () => {
    const { d1, url } = await setup();
    const agent = await connected(url);
    const canceled = d1.cancel(OP_ID);
    const cancel = await agent.next();
    expect(cancel).toMatchObject({ type: "cancel", operationId: OP_ID });
    agent.send({
      type: "cancel-result",
      requestId: cancel["requestId"],
      operationId: OP_ID,
      result: "refused",
    });
    await expect(canceled).resolves.toMatchObject({ result: "refused" });

    const status = d1.queryStatus({ operationIds: [OP_ID] });
    const query = await agent.next();
    expect(query).toEqual({ type: "status-query", requestId: query["requestId"], operationIds: [OP_ID] });
    agent.send({ type: "status-result", requestId: query["requestId"], operations: [op("CARD_PROD_READY")] });
    await expect(status).resolves.toMatchObject({ operations: [{ operationId: OP_ID }] });

    const error = d1.nextMessage((m) => m.type === "error");
    d1.sendRaw("{oops");
    expect(await agent.nextRaw()).toBe("{oops");
    agent.send({ type: "error", code: "MALFORMED_JSON", message: "frame is not a JSON text message" });
    await expect(error).resolves.toMatchObject({ code: "MALFORMED_JSON" });
    expect(d1.agentErrors).toHaveLength(1);
    expect(d1.stats.protocolViolations).toBe(0);
  });

  it("dropLink() closes the client's socket abruptly and forgets the station", async () => {
    const { d1, url } = await setup();
    const agent = await connected(url);
    const closed = once(agent.ws, "close");
    await d1.dropLink();
    const [code] = (await closed) as [number];
    expect(code).toBe(1006);
    expect(d1.connectedStations()).toEqual([]);
  });

  it("blackhole() keeps the link open but silent; a new hello from the station replaces it", async () => {
    const { d1, url } = await setup();
    const first = await connected(url);
    d1.blackhole(STATION);
    await expect(d1.push(JOB, { timeoutMs: 1 })).rejects.toMatchObject({ code: "LINK_CLOSED" });
    const firstClosed = new Promise((resolve) => first.ws.once("close", resolve));
    await connected(url);
    expect(await firstClosed).toBe(1006);
    expect(d1.connectedStations()).toEqual([STATION]);
    expect(d1.hellos).toHaveLength(2);
  });
});
