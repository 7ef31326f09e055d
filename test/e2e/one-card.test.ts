import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { job, type Rig, STATION, startRig, statusesAtD1, until } from "../support/e2e.js";
import { findSecrets, secretsOf } from "../support/log-capture.js";

/** Secrets of every job pushed in this file; no captured log line may contain any of them. */
const pushedSecrets = new Set<string>();
const allLogs: string[] = [];

describe("one card, end to end", () => {
  let rig: Rig;
  beforeEach(async () => {
    rig = await startRig({ takeAfterMs: 0 });
  });
  afterEach(async () => {
    await rig.close();
    allLogs.push(...rig.logs.lines);
  });
  afterAll(() => {
    expect(allLogs.length).toBeGreaterThan(0);
    const leaks = findSecrets(allLogs.join("\n"), [...pushedSecrets]);
    if (leaks.length) console.log(allLogs.filter((l) => leaks.some((s) => l.includes(s))).slice(0, 3));
    expect(leaks).toEqual([]);
  });

  const push = async (j: Record<string, unknown>) => {
    for (const s of secretsOf(j)) pushedSecrets.add(s);
    return rig.emulator.push(j, { station: STATION });
  };
  const terminal = (id: string) => rig.emulator.waitFor(() => rig.emulator.terminalCount(id) > 0, 10_000);

  it("D1 pushes a job, the card is produced and taken, D1 hears READY then DONE", async () => {
    const j = job();
    const id = j.operationId as string;
    expect(await push(j)).toMatchObject({ result: "accepted", operationId: id });
    await terminal(id);
    expect(statusesAtD1(rig.emulator, id)).toEqual(["CARD_PROD_READY", "CARD_PROD_DONE"]);
    const [ready, done] = rig.emulator.operations(id);
    expect(ready).toMatchObject({ operation: "PRODUCE", status: "PENDING", cardId: j.cardId });
    expect(ready!.endTime).toBeUndefined();
    expect(done).toMatchObject({ status: "SUCCESSFUL", startTime: ready!.startTime });
    expect(Date.parse(done!.endTime!)).toBeGreaterThanOrEqual(Date.parse(done!.startTime));
    const cards = rig.printer.record;
    expect(cards).toHaveLength(1);
    expect(cards[0]).toMatchObject({ outcome: "taken" });
    expect(cards[0]!.frontInkDots).toBeGreaterThan(0);
    expect(cards[0]!.tracks.map((t) => t.n)).toEqual([1, 2]);
    await until(() => rig.agent.store.outboxDepth() === 0);
  });

  it("the same operationId pushed twice gets the same answer and one card", async () => {
    const j = job();
    const id = j.operationId as string;
    const first = await push(j);
    const second = await push(j);
    expect(first).toMatchObject({ result: "accepted", operationId: id });
    expect(second).toMatchObject({ result: "accepted", operationId: id, duplicate: true });
    await terminal(id);
    const third = await push(j);
    expect(third).toMatchObject({ result: "accepted", duplicate: true });
    expect(rig.printer.record).toHaveLength(1);
    expect(statusesAtD1(rig.emulator, id)).toEqual(["CARD_PROD_READY", "CARD_PROD_DONE"]);
  });

  it("invalid production data ends as DATA_EXCEPTION with the field path, and the agent keeps serving", async () => {
    const bad = job();
    const pd = bad.productionData as { magstripe: { track2: string } };
    pd.magstripe.track2 = `${pd.magstripe.track2.slice(0, 5)}X${pd.magstripe.track2.slice(6)}`;
    const noStation = job();
    delete noStation.persoStation;
    const good = job();
    for (const j of [bad, noStation, good]) expect(await push(j)).toMatchObject({ result: "accepted" });
    await terminal(good.operationId as string);
    await terminal(bad.operationId as string);
    await terminal(noStation.operationId as string);
    expect(rig.emulator.latest(bad.operationId as string)).toMatchObject({
      status: "FAILED",
      details: { status: "DATA_EXCEPTION", reason: "FIELD_INVALID_FORMAT" },
      errorCode: "FIELD_INVALID_FORMAT",
      error: "productionData.magstripe.track2",
    });
    expect(rig.emulator.latest(noStation.operationId as string)).toMatchObject({
      details: { status: "DATA_EXCEPTION", reason: "MISSING_SATELLITEUID" },
      error: "persoStation",
    });
    expect(statusesAtD1(rig.emulator, good.operationId as string)).toEqual([
      "CARD_PROD_READY",
      "CARD_PROD_DONE",
    ]);
    expect(rig.printer.record).toHaveLength(1);
  });

  it("a push D1 cannot mean (wrong channel) is refused with a reason and stores nothing", async () => {
    const j = job({ distributionChannel: "CENTRAL" });
    const answer = await push(j);
    expect(answer).toMatchObject({ result: "refused", operationId: j.operationId });
    expect(answer.errorCode).toBeTruthy();
    expect(rig.agent.store.get(j.operationId as string)).toBeUndefined();
  });

  it("malformed JSON and unknown message types get a clear error back, and the link stays up", async () => {
    const malformed = rig.emulator.nextMessage((m) => m.type === "error", 5000);
    rig.emulator.sendRaw("{not json");
    expect(await malformed).toMatchObject({ type: "error", code: "MALFORMED_JSON" });
    const unknown = rig.emulator.nextMessage((m) => m.type === "error", 5000);
    rig.emulator.sendRaw(JSON.stringify({ type: "reboot", requestId: "r-9" }));
    expect(await unknown).toMatchObject({ type: "error", code: "UNKNOWN_TYPE", requestId: "r-9" });
    const invalid = rig.emulator.nextMessage((m) => m.type === "error", 5000);
    rig.emulator.sendRaw(JSON.stringify({ type: "ack", eventIds: "not-a-list" }));
    expect(await invalid).toMatchObject({ type: "error", code: "INVALID_MESSAGE" });
    const j = job();
    expect(await push(j)).toMatchObject({ result: "accepted" });
    await terminal(j.operationId as string);
  });

  it("link dropped mid-card: every status still reaches D1, once, and is acknowledged", async () => {
    const j = job();
    const id = j.operationId as string;
    rig.printer.once("card-presented", () => void rig.emulator.dropLink());
    await push(j);
    await terminal(id);
    expect(statusesAtD1(rig.emulator, id)).toEqual(["CARD_PROD_READY", "CARD_PROD_DONE"]);
    await until(() => rig.agent.store.outboxDepth() === 0);
    expect(rig.printer.record).toHaveLength(1);
  });

  it("answers an on-demand status query from the store", async () => {
    const j = job();
    const id = j.operationId as string;
    await push(j);
    await terminal(id);
    const answer = await rig.emulator.queryStatus({ operationIds: [id, "no-such-op"] });
    expect(answer.operations).toEqual([rig.emulator.latest(id)]);
    expect(answer.unknownOperationIds).toEqual(["no-such-op"]);
  });
});
