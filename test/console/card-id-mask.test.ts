import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ConsoleSnapshot } from "../../agent/console/types.js";
import { maskCardId } from "../../agent/log/mask.js";
import { job, STATION } from "../support/e2e.js";
import { CONSOLE_TOKEN, type ConsoleRig, http, StatusStream, startConsoleRig } from "./support.js";

/** Issue 14, finding 1: the console shows a card id's last 4 characters, never the whole id. */

const BEARER = { Authorization: `Bearer ${CONSOLE_TOKEN}` };

describe("console: card ids are masked", () => {
  let c: ConsoleRig;
  beforeEach(async () => {
    c = await startConsoleRig({ makeJob: () => job() });
  });
  afterEach(async () => {
    await c.close();
  });

  it("maskCardId keeps an ellipsis and the last 4 characters", () => {
    expect(maskCardId("271b-6e47-8ec3-7f3f")).toBe("…7f3f");
    expect(maskCardId("abc")).toBe("…abc");
    expect(maskCardId("カード番号一二三四五")).toBe("…二三四五");
  });

  it("/api/status and the SSE stream carry the masked card id only", async () => {
    await c.rig.agent.ready();
    const stream = await StatusStream.open(c.url, BEARER);
    const j = job();
    const cardId = j.cardId as string;
    await c.rig.emulator.push(j, { station: STATION });
    await c.rig.emulator.waitFor(() => c.rig.emulator.terminalCount(j.operationId as string) > 0);
    const answer = await http(`${c.url}/api/status`, { headers: BEARER });
    // http() reads the body as latin1; the ellipsis is UTF-8.
    const s = JSON.parse(Buffer.from(answer.body, "latin1").toString("utf8")) as ConsoleSnapshot;
    const row = s.recentJobs.find((r) => r.operationId === j.operationId);
    expect(row?.cardId).toBe(`…${cardId.slice(-4)}`);
    expect(answer.body).not.toContain(cardId);
    await stream.next((snap) => snap.recentJobs.some((r) => r.operationId === j.operationId));
    expect(stream.raw).not.toContain(cardId);
    stream.close();
  });
});
