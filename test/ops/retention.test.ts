import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../agent/util/clock.js";
import { type Rig, startRig } from "../support/e2e.js";
import { DAY, seedFinishedJobs } from "../support/retention-seed.js";

/**
 * Issue 14, finding 7: `store.retentionDays` (default 90) is applied by the running agent, when it
 * starts and every 24 hours after, on its clock (a ManualClock here). Unit tests of the sweeper:
 * test/store/retention.test.ts.
 */

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
        seedFinishedJobs(join(dataDir, "jobs.sqlite"), clock.wallNow(), [
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
