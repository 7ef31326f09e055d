import { afterEach, describe, expect, it } from "vitest";
import { D1Link } from "../../agent/d1/link.js";
import { D1ToAgent } from "../../agent/d1/messages.js";
import { systemClock } from "../../agent/util/clock.js";
import { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import { until } from "../support/e2e.js";
import { captureLogs } from "../support/log-capture.js";

/**
 * Issue 14: finding 5 (a frame of any size was read: `ws` allows 100 MiB, and a 50 MB push took the
 * agent from ~100 to ~300 MB RSS) and finding 10c (the retry line after a 401 must carry
 * `cause.code: HTTP_401`, as docs/operations.md says).
 */
/** docs/protocol.md: the frame limit and the status-query cap (literals: the contract, not the code). */
const MAX_FRAME_BYTES = 1024 * 1024;

describe("D1 link limits", () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0)) await c();
  });

  async function connected(token = "tok-limits-12345") {
    const logs = captureLogs();
    const d1 = new D1Emulator({ token: "tok-limits-12345" });
    cleanup.push(() => d1.stop());
    const { url } = await d1.start();
    const link = new D1Link({
      url,
      token,
      station: "KIOSK-PS-101",
      agentVersion: "test",
      clock: systemClock,
      logger: logs.logger,
      backoff: { initialMs: 1, maxMs: 1, random: () => 0 },
      pingIntervalMs: 60_000,
    });
    cleanup.push(() => link.stop());
    const messages: unknown[] = [];
    const downs: string[] = [];
    link.on("message", (m) => messages.push(m));
    link.on("down", (reason) => downs.push(reason));
    link.start();
    return { d1, link, logs, messages, downs };
  }

  it("reads a frame up to 1 MiB; a larger one is dropped unread, the link closes and reconnects", async () => {
    const { d1, link, logs, messages, downs } = await connected();
    await until(() => link.isUp);
    // The largest legitimate frame: a push whose productionData is a JWE of 1 000 000 characters.
    const big = { type: "push", requestId: "push-big", job: { productionData: "a".repeat(1_000_000) } };
    d1.sendRaw(JSON.stringify(big));
    await until(() => messages.length === 1, 5_000, "the 1 MB push read");
    expect(link.stats.sessions).toBe(1);

    const huge = {
      type: "push",
      requestId: "push-huge",
      job: { productionData: "a".repeat(MAX_FRAME_BYTES) },
    };
    d1.sendRaw(JSON.stringify(huge));
    await until(() => downs.length === 1, 5_000, "link down after the oversized frame");
    await until(() => link.isUp && link.stats.sessions === 2, 5_000, "reconnected");
    expect(messages).toHaveLength(1);
    expect(downs).toEqual(["closed (1009: frame too large)"]);
    expect(link.stats.oversized).toBe(1);
    const warn = logs.lines.map((l) => JSON.parse(l)).find((l) => /over the size limit/.test(l.msg));
    expect(warn).toMatchObject({ level: 40, limitBytes: MAX_FRAME_BYTES, closeCode: 1009 });
    const retry = logs.lines.map((l) => JSON.parse(l)).find((l) => l.msg === "D1 unreachable, retrying");
    expect(retry?.cause?.code).toBe("FRAME_TOO_LARGE");
    // The link still works after the reconnect.
    d1.sendRaw(JSON.stringify({ type: "status-query", requestId: "q-1", operationIds: ["x"] }));
    await until(() => messages.length === 2, 5_000, "a message after the reconnect");
  });

  it("the reviewer's 50 MB push is not read: the link closes at the frame's header", async () => {
    const { d1, link, downs, messages } = await connected();
    await until(() => link.isUp);
    const framesBefore = link.stats.received; // the welcome
    d1.sendRaw(JSON.stringify({ type: "push", requestId: "p", job: { productionData: "a".repeat(50e6) } }));
    await until(() => downs.length === 1, 10_000, "link down");
    expect(link.stats.received).toBe(framesBefore);
    expect(messages).toHaveLength(0);
    await until(() => link.isUp, 5_000, "reconnected");
  });

  it("a status-query asks for at most 1000 operations; more is INVALID_MESSAGE", async () => {
    const ids = (n: number) => Array.from({ length: n }, (_, i) => `op-${i}`);
    const query = (n: number) => ({ type: "status-query", requestId: "q", operationIds: ids(n) });
    expect(D1ToAgent.safeParse(query(1000)).success).toBe(true);
    const over = D1ToAgent.safeParse(query(1001));
    expect(over.success).toBe(false);
    expect(over.error?.issues[0]?.path).toEqual(["operationIds"]);

    const { d1, link, messages } = await connected();
    await until(() => link.isUp);
    const answer = d1.nextMessage((m) => m.type === "error", 5_000);
    d1.sendRaw(JSON.stringify(query(1001)));
    expect(await answer).toMatchObject({
      code: "INVALID_MESSAGE",
      requestId: "q",
      message: "invalid status-query message at operationIds",
    });
    expect(messages).toHaveLength(0);
  });

  it("documented corners: non-object JSON is UNKNOWN_TYPE; a second welcome changes nothing", async () => {
    const { d1, link } = await connected();
    await until(() => link.isUp);
    for (const frame of ["42", "[]", "null", '"push"', '{"requestId":"r-1"}']) {
      const answer = d1.nextMessage((m) => m.type === "error", 5_000);
      d1.sendRaw(frame);
      expect(await answer, frame).toMatchObject({ type: "error", code: "UNKNOWN_TYPE" });
    }
    let ups = 0;
    link.on("up", () => ups++);
    d1.sendRaw(JSON.stringify({ type: "welcome" }));
    const answer = d1.nextMessage((m) => m.type === "error", 5_000);
    d1.sendRaw("not json");
    expect(await answer).toMatchObject({ code: "MALFORMED_JSON" });
    expect(ups).toBe(0);
    expect(link.stats.sessions).toBe(1);
  });

  it("a refused upgrade (401) is retried, and the retry line says cause.code HTTP_401", async () => {
    const { link, logs } = await connected("wrong-token-123456");
    const retries = () =>
      logs.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === "D1 unreachable, retrying");
    await until(() => retries().length >= 1, 5_000, "a retry line");
    expect(retries()[0]).toMatchObject({ cause: { code: "HTTP_401" } });
    expect(link.isUp).toBe(false);
    expect(logs.text()).not.toContain("wrong-token-123456");
  });
});
