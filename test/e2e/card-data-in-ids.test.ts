import { once } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AgentErrorRecord } from "../../simulator/d1-emulator/emulator.js";
import { job, type Rig, STATION, startRig, until } from "../support/e2e.js";

/**
 * Issue 14, finding 1, through the whole product: a PAN or a track sent in an id is refused at the
 * door and lands nowhere — not in the job table, the audit trail, the log or an answer to D1.
 */

const PAN = "5266092201416174";
const fw = (s: string): string => s.replace(/[0-9]/g, (c) => String.fromCharCode(0xff10 + Number(c)));
/** Every form the PAN is sent in below. */
const FORMS = [
  PAN,
  "5266 0922 0141 6174",
  "5266-0922-0141-6174",
  "5266.0922.0141.6174",
  fw(PAN),
  "0922 0141",
];

describe("card data in ids, end to end", () => {
  let rig: Rig;
  const frames: string[] = [];
  beforeEach(async () => {
    rig = await startRig({ takeAfterMs: 0 });
    rig.emulator.on("message", (m) => frames.push(JSON.stringify(m)));
    rig.emulator.on("agent-error", (e) => frames.push(JSON.stringify(e.message)));
  });
  afterEach(async () => {
    await rig.close();
    frames.length = 0;
  });

  /** The data directory's files, the audit rows, the log and D1's frames: none holds the PAN in any form. */
  function expectNowhere(): void {
    const db = rig.agent.store.db;
    const tables = JSON.stringify({
      audit: db.prepare("SELECT * FROM audit_log").all(),
      jobs: db.prepare("SELECT * FROM jobs").all(),
    });
    const files = readdirSync(rig.dataDir)
      .filter((f) => f.startsWith("jobs.sqlite"))
      .map((f) => readFileSync(join(rig.dataDir, f)).toString("latin1"));
    const logs = rig.logs.text();
    for (const [where, text] of Object.entries({ tables, logs, frames: frames.join("\n") })) {
      for (const form of FORMS) expect(text.includes(form), `${form} in ${where}`).toBe(false);
    }
    for (const file of files) for (const form of FORMS.slice(0, 4)) expect(file.includes(form)).toBe(false);
    expect(rig.emulator.violations).toEqual([]);
  }

  async function agentError(raw: Record<string, unknown>): Promise<AgentErrorRecord> {
    const answered = once(rig.emulator, "agent-error") as Promise<[AgentErrorRecord]>;
    rig.emulator.sendRaw(JSON.stringify(raw), STATION);
    return (await answered)[0];
  }

  it("a push whose requestId holds a PAN is refused as a message, its requestId never echoed or kept", async () => {
    for (const requestId of [PAN, "push 5266 0922 0141 6174", `;${PAN}=2804201?`, fw(PAN)]) {
      const e = await agentError({ type: "push", requestId, job: job() });
      expect(e.message).toEqual({
        type: "error",
        code: "INVALID_MESSAGE",
        message: "invalid push message at requestId",
      });
    }
    expect(rig.agent.store.db.prepare("SELECT COUNT(*) AS n FROM jobs").get()).toEqual({ n: 0 });
    expect(rig.agent.store.db.prepare("SELECT COUNT(*) AS n FROM audit_log").get()).toEqual({ n: 0 });
    expectNowhere();
  });

  it("requestId is bounded to 128 characters like the other ids", async () => {
    const e = await agentError({ type: "push", requestId: "r".repeat(129), job: job() });
    expect(e.message).toMatchObject({
      code: "INVALID_MESSAGE",
      message: "invalid push message at requestId",
    });
    expect(e.message.requestId).toBeUndefined();
    const j = job();
    const ok = await rig.emulator.push(j, { station: STATION, requestId: "r".repeat(128) });
    expect(ok).toMatchObject({ result: "accepted", requestId: "r".repeat(128) });
  });

  it("cardId or operationId holding a PAN: push refused FIELD_CARD_DATA, the field named, nothing stored", async () => {
    const byCard = job({ cardId: "5266 0922 0141 6174" });
    expect(await rig.emulator.push(byCard, { station: STATION })).toEqual({
      type: "push-result",
      requestId: expect.any(String),
      operationId: byCard.operationId,
      result: "refused",
      errorCode: "FIELD_CARD_DATA",
      error: "cardId",
    });
    const byOp = job({ operationId: `op-${PAN}` });
    expect(await rig.emulator.push(byOp, { station: STATION })).toEqual({
      type: "push-result",
      requestId: expect.any(String),
      result: "refused",
      errorCode: "FIELD_CARD_DATA",
      error: "operationId",
    });
    const audit = rig.agent.store.db
      .prepare("SELECT event, operation_id, card_id, error_code, error FROM audit_log ORDER BY rowid")
      .all();
    expect(audit).toEqual([
      {
        event: "REFUSED",
        operation_id: byCard.operationId,
        card_id: null,
        error_code: "FIELD_CARD_DATA",
        error: "cardId",
      },
      {
        event: "REFUSED",
        operation_id: null,
        card_id: null,
        error_code: "FIELD_CARD_DATA",
        error: "operationId",
      },
    ]);
    expect(rig.agent.store.db.prepare("SELECT COUNT(*) AS n FROM jobs").get()).toEqual({ n: 0 });
    expectNowhere();
  });

  it("issuerRequestId or a label holding card data: DATA_EXCEPTION FIELD_CARD_DATA, the value never kept", async () => {
    const byRequest = job({ issuerRequestId: `;${PAN}=2804201000?` });
    const id = byRequest.operationId as string;
    expect(await rig.emulator.push(byRequest, { station: STATION })).toMatchObject({ result: "accepted" });
    const byStock = job();
    (byStock.productionData as Record<string, unknown>).cardStock = `STOCK ${fw(PAN)}`;
    expect(await rig.emulator.push(byStock, { station: STATION })).toMatchObject({ result: "accepted" });
    await until(
      () =>
        rig.emulator.terminalCount(id) > 0 && rig.emulator.terminalCount(byStock.operationId as string) > 0,
    );
    const op = rig.emulator.latest(id);
    expect(op).toMatchObject({
      status: "FAILED",
      details: { status: "DATA_EXCEPTION", reason: "FIELD_CARD_DATA" },
      errorCode: "FIELD_CARD_DATA",
      error: "issuerRequestId",
    });
    expect(op?.issuerRequestId).toBeUndefined();
    expect(rig.emulator.latest(byStock.operationId as string)).toMatchObject({
      details: { status: "DATA_EXCEPTION", reason: "FIELD_CARD_DATA" },
      error: "productionData.cardStock",
    });
    expectNowhere();
  });
});
