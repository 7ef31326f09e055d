import { afterEach, describe, expect, it } from "vitest";
import { job, type Rig, STATION, startRig, statusesAtD1, until } from "../support/e2e.js";

describe("cancel from D1", () => {
  let rig: Rig;
  afterEach(async () => {
    await rig.close();
  });

  const pushOne = async (overrides: Record<string, unknown> = {}) => {
    const j = job(overrides);
    expect(await rig.emulator.push(j, { station: STATION })).toMatchObject({ result: "accepted" });
    return j.operationId as string;
  };
  const terminal = (id: string) => rig.emulator.waitFor(() => rig.emulator.terminalCount(id) > 0, 10_000);

  it("not yet started → CARD_PROD_CANCELED at once, no card", async () => {
    rig = await startRig({ latency: { printMs: 100 } });
    const first = await pushOne();
    const second = await pushOne();
    const answer = await rig.emulator.cancel(second);
    expect(answer).toMatchObject({ result: "canceled", operationId: second });
    expect(answer.operation?.details).toEqual({ status: "CARD_PROD_CANCELED", reason: "ISSUER_CANCEL" });
    await terminal(first);
    await terminal(second);
    expect(statusesAtD1(rig.emulator, second)).toEqual(["CARD_PROD_READY", "CARD_PROD_CANCELED"]);
    expect(rig.printer.record).toHaveLength(1);
  });

  it("in production before presentation → stops, rejects the card, CARD_PROD_CANCELED", async () => {
    rig = await startRig({ latency: { printMs: 50 } });
    const canceled = new Promise<unknown>((resolve) => {
      rig.printer.once("card-inserted", () => resolve(rig.emulator.cancel(id)));
    });
    const id = await pushOne();
    expect(await canceled).toMatchObject({ result: "canceled" });
    expect(statusesAtD1(rig.emulator, id)).toEqual(["CARD_PROD_READY", "CARD_PROD_CANCELED"]);
    await until(() => rig.printer.record[0]?.outcome === "rejected");
    // The printer is free again: the next job is produced.
    const next = await pushOne();
    await terminal(next);
    expect(rig.emulator.latest(next)?.details.status).toBe("CARD_PROD_DONE");
  });

  it("already presented → refused, status unchanged; the card is still delivered", async () => {
    rig = await startRig({ takeAfterMs: null });
    const presented = new Promise<void>((resolve) => rig.printer.once("card-presented", () => resolve()));
    const id = await pushOne();
    await presented;
    await until(() => rig.agent.store.get(id)?.state === "PRESENTED");
    expect(await rig.emulator.cancel(id)).toMatchObject({ result: "refused", reason: "ALREADY_PRESENTED" });
    rig.printer.takeCardNow();
    await terminal(id);
    expect(statusesAtD1(rig.emulator, id)).toEqual(["CARD_PROD_READY", "CARD_PROD_DONE"]);
  });

  it("a cancel racing the presentation is answered once, and the job ends exactly once", async () => {
    rig = await startRig({ latency: { commandMs: 5 } });
    let answer: Promise<unknown> | undefined;
    rig.agent.pipeline.on("step", (opId, step) => {
      if (step === "present" && !answer) answer = rig.emulator.cancel(opId);
    });
    const id = await pushOne();
    await terminal(id);
    await until(() => answer !== undefined);
    expect(await answer).toMatchObject({ result: "refused", reason: "ALREADY_PRESENTED" });
    expect(rig.emulator.terminalCount(id)).toBe(1);
    expect(statusesAtD1(rig.emulator, id)).toEqual(["CARD_PROD_READY", "CARD_PROD_DONE"]);
  });

  it("finished → refused; unknown → unknown-operation; a duplicate cancel → canceled again, one event", async () => {
    rig = await startRig({ latency: { printMs: 100 } });
    const done = await pushOne();
    const queued = await pushOne();
    expect(await rig.emulator.cancel(queued)).toMatchObject({ result: "canceled" });
    expect(await rig.emulator.cancel(queued)).toMatchObject({
      result: "canceled",
      reason: "ALREADY_CANCELED",
    });
    await terminal(done);
    expect(await rig.emulator.cancel(done)).toMatchObject({ result: "refused", reason: "ALREADY_FINISHED" });
    expect(await rig.emulator.cancel("no-such-operation")).toMatchObject({ result: "unknown-operation" });
    await until(() => rig.agent.store.outboxDepth() === 0);
    expect(rig.agent.store.eventStatuses(queued)).toEqual(["CARD_PROD_READY", "CARD_PROD_CANCELED"]);
    expect(rig.agent.store.eventStatuses(done)).toEqual(["CARD_PROD_READY", "CARD_PROD_DONE"]);
  });

  it("status query since a time returns the latest operation of every job changed since", async () => {
    rig = await startRig();
    const since = new Date(Date.now() - 1000).toISOString().replace("Z", "+00:00");
    const a = await pushOne();
    const b = await pushOne({ persoStation: "OTHER-STATION" });
    await terminal(a);
    await terminal(b);
    const answer = await rig.emulator.queryStatus({ since });
    const byId = new Map(answer.operations.map((o) => [o.operationId, o.details.status]));
    expect(byId.get(a)).toBe("CARD_PROD_DONE");
    expect(byId.get(b)).toBe("DATA_EXCEPTION");
  });
});
