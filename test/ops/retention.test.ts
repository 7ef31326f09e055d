import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { JobStore } from "../../agent/store/job-store.js";
import { loadOrCreateKey, SealedBox } from "../../agent/store/sealed-box.js";
import { ManualClock } from "../../agent/util/clock.js";
import { type Rig, startRig } from "../support/e2e.js";

/**
 * Issue 14, finding 7: `store.retentionDays` (default 90) is applied by the running agent, when it
 * starts and every 24 hours after, on its clock (a ManualClock here). Unit tests of the sweeper:
 * test/store/retention.test.ts.
 */
const DAY = 24 * 60 * 60 * 1000;
const JOB_JSON = JSON.stringify({ productionData: { note: "sealed" } });

/** A store with one finished job per entry, each ended `daysAgo` before `now` (wall), its events acked or not. */
function seed(
  file: string,
  now: number,
  jobs: Array<{ id: string; daysAgo: number; acked?: boolean; state?: "DONE" | "READY" }>,
): void {
  const clock = new ManualClock(now);
  const dir = join(file, "..");
  const store = new JobStore(file, new SealedBox(loadOrCreateKey(join(dir, "data.key"))), clock);
  // Each job at its own time: ended_at is the wall clock of its terminal move.
  for (const job of [...jobs].sort((a, b) => b.daysAgo - a.daysAgo)) {
    clock.stepWall(now - job.daysAgo * DAY - clock.wallNow());
    store.accept({ kind: "valid", operationId: job.id, cardId: `card-${job.id}`, jobJson: JOB_JSON });
    if (job.state !== "READY") {
      store.transition(job.id, "READY", "PRODUCING");
      store.transition(job.id, "PRODUCING", "PRESENTED");
      store.transition(job.id, "PRESENTED", "DONE");
    }
    if (job.acked !== false) {
      store.ack(
        store
          .unackedEvents(0, 100)
          .filter((e) => e.operationId === job.id)
          .map((e) => e.eventId),
      );
    }
  }
  store.close();
}

describe("the agent applies store.retentionDays (ManualClock)", () => {
  let rig: Rig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  it("at start and every 24 hours after", async () => {
    const clock = new ManualClock(Date.parse("2026-01-01T00:00:00.000Z"));
    rig = await startRig({
      clock,
      config: { d1: { pingIntervalMs: 300_000 } } as never,
      prepare: async ({ dataDir }) => {
        seed(join(dataDir, "jobs.sqlite"), clock.wallNow(), [
          { id: "old", daysAgo: 91 },
          { id: "day-short", daysAgo: 89.75 },
          { id: "new", daysAgo: 1 },
        ]);
      },
    });
    const present = () =>
      (
        rig!.agent.store.db.prepare("SELECT operation_id FROM jobs").all() as Array<{ operation_id: string }>
      ).map((r) => r.operation_id);
    // The default 90 days, applied when the agent started.
    expect(present().sort()).toEqual(["day-short", "new"]);
    const lines = rig.logs.lines.map((l) => JSON.parse(l) as { msg?: string; deleted?: number });
    expect(lines.some((l) => l.msg === "retention: finished jobs deleted" && l.deleted === 1)).toBe(true);
    clock.advance(DAY);
    expect(present()).toEqual(["new"]);
  });
});
