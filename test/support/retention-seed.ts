import { join } from "node:path";
import { JobStore } from "../../agent/store/job-store.js";
import { loadOrCreateKey, SealedBox } from "../../agent/store/sealed-box.js";
import { ManualClock } from "../../agent/util/clock.js";

/** Retention tests (test/store/retention.test.ts, test/ops/retention.test.ts): a store of aged jobs. */
export const DAY = 24 * 60 * 60 * 1000;
const JOB_JSON = JSON.stringify({ productionData: { note: "sealed" } });

/** A store with one finished job per entry, each ended `daysAgo` before `now` (wall), its events acked or not. */
export function seedFinishedJobs(
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
