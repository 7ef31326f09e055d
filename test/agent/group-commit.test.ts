import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { AgentToD1, PushMessage } from "../../agent/d1/messages.js";
import { job, type Rig, startRig, until } from "../support/e2e.js";

/**
 * Pushes that arrive in one socket read are accepted in one transaction (one fsync). The promise to
 * D1 stays the same: "accepted" is said only for a job on disk. These tests hand the agent's link a
 * turn's worth of messages synchronously, as ws does for frames of one read.
 */
describe("group commit of pushes", () => {
  let rig: Rig;
  let sent: AgentToD1[];
  beforeEach(async () => {
    // Feeder empty: jobs stay READY, so the only writes are the pushes under test.
    rig = await startRig({
      prepare: async ({ printer }) => {
        printer.loadFeeder(-printer.state.feederCards);
      },
      config: { production: { holdWhileStoppedSec: 3600 } },
    });
    sent = [];
    const link = rig.agent.link;
    const send = link.send.bind(link);
    vi.spyOn(link, "send").mockImplementation((message: AgentToD1) => {
      sent.push(message);
      return send(message);
    });
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await rig.close();
  });

  const pushes = (n: number): PushMessage[] =>
    Array.from({ length: n }, (_, i) => ({ type: "push", requestId: `gc-${i}`, job: job() }));
  const answersTo = (requestIds: string[]) =>
    sent.filter((m) => "requestId" in m && requestIds.includes(m.requestId as string));
  /** What a fresh connection to the file sees: only what was committed. */
  const onDisk = (operationId: string): unknown =>
    new Database(`${rig.dataDir}/jobs.sqlite`, { readonly: true })
      .prepare("SELECT state FROM jobs WHERE operation_id = ?")
      .get(operationId);

  it("accepts a turn's pushes with one commit, answers after it, and before a status answer of that turn", async () => {
    const exec = vi.spyOn(rig.agent.store.db, "exec");
    const batch = pushes(5);
    for (const message of batch) rig.agent.link.emit("message", message);
    // Nothing answered yet: the commit comes first.
    expect(answersTo(batch.map((m) => m.requestId))).toEqual([]);
    const ids = batch.map((m) => (m.job as { operationId: string }).operationId);
    rig.agent.link.emit("message", { type: "status-query", requestId: "gc-status", operationIds: ids });
    const answers = answersTo([...batch.map((m) => m.requestId), "gc-status"]);
    expect(answers.map((a) => a.type)).toEqual([...batch.map(() => "push-result"), "status-result"]);
    for (const a of answers.slice(0, 5)) expect(a).toMatchObject({ result: "accepted" });
    const status = answers[5] as { operations: Array<{ details: { status: string } }> };
    expect(status.operations.map((o) => o.details.status)).toEqual(ids.map(() => "CARD_PROD_READY"));
    expect(exec.mock.calls.map(([sql]) => sql)).toEqual(["BEGIN IMMEDIATE", "COMMIT"]);
    for (const id of ids) expect(onDisk(id)).toEqual({ state: "READY" });
  });

  it("answers every push of the turn in a microtask when nothing else comes", async () => {
    const batch = pushes(3);
    for (const message of batch) rig.agent.link.emit("message", message);
    await Promise.resolve();
    expect(answersTo(batch.map((m) => m.requestId)).map((a) => a.type)).toEqual([
      "push-result",
      "push-result",
      "push-result",
    ]);
    await until(() => rig.emulator.received.length >= 3, 5000, "READY events at D1");
  });

  it("a push the store cannot take gets a clear error; the rest of the turn is accepted", async () => {
    const batch = pushes(3);
    const store = rig.agent.store;
    const accept = store.accept.bind(store);
    const failing = (batch[1]!.job as { operationId: string }).operationId;
    vi.spyOn(store, "accept").mockImplementation((input) => {
      if (input.operationId === failing) throw new Error("SQLITE_FULL: database or disk is full");
      return accept(input);
    });
    for (const message of batch) rig.agent.link.emit("message", message);
    await Promise.resolve();
    const answers = answersTo(batch.map((m) => m.requestId));
    expect(answers[0]).toMatchObject({ type: "push-result", result: "accepted" });
    expect(answers[1]).toEqual({
      type: "error",
      requestId: "gc-1",
      code: "INTERNAL",
      message: "job could not be stored",
    });
    expect(answers[2]).toMatchObject({ type: "push-result", result: "accepted" });
    expect(onDisk(failing)).toBeUndefined();
  });

  it("a turn whose commit fails answers every push with an error and leaves none on disk", async () => {
    const db = rig.agent.store.db;
    const exec = db.exec.bind(db);
    const failingCommit = vi.spyOn(db, "exec").mockImplementation((sql: string) => {
      if (sql === "COMMIT") throw new Error("SQLITE_IOERR: disk I/O error");
      return exec(sql);
    });
    const batch = pushes(2);
    for (const message of batch) rig.agent.link.emit("message", message);
    await Promise.resolve();
    expect(answersTo(batch.map((m) => m.requestId))).toEqual(
      batch.map((m) => ({
        type: "error",
        requestId: m.requestId,
        code: "INTERNAL",
        message: "job could not be stored",
      })),
    );
    for (const m of batch) {
      const id = (m.job as { operationId: string }).operationId;
      expect(onDisk(id)).toBeUndefined();
      expect(rig.agent.store.get(id)).toBeUndefined();
    }
    failingCommit.mockRestore();
    // The agent goes on: D1's next push is accepted.
    const again = pushes(1);
    rig.agent.link.emit("message", again[0]!);
    await Promise.resolve();
    expect(sent.at(-1)).toMatchObject({ type: "push-result", result: "accepted" });
  });
});
