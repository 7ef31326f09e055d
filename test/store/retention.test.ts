import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { parseConfig } from "../../agent/config/load.js";
import { JobStore } from "../../agent/store/job-store.js";
import { RETENTION_PERIOD_MS, RetentionSweeper } from "../../agent/store/retention.js";
import { loadOrCreateKey, SealedBox } from "../../agent/store/sealed-box.js";
import { ManualClock } from "../../agent/util/clock.js";
import { captureLogs } from "../support/log-capture.js";
import { DAY, seedFinishedJobs } from "../support/retention-seed.js";

/**
 * Issue 14, finding 7: `store.retentionDays` was documented but never applied. Finished jobs (and
 * their events, once all were acknowledged) older than that go at start and once a day after, on
 * the agent's clock; the audit trail stays.
 */

const ids = (store: JobStore) =>
  (
    store.db.prepare("SELECT operation_id FROM jobs ORDER BY operation_id").all() as Array<{
      operation_id: string;
    }>
  ).map((r) => r.operation_id);
const auditRows = (store: JobStore) =>
  (store.db.prepare("SELECT COUNT(*) AS n FROM audit_log").get() as { n: number }).n;

describe("store.retentionDays", () => {
  let dir = "";
  let store: JobStore | undefined;
  afterEach(() => {
    store?.close();
    store = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("is 90 days by default and runs daily", () => {
    const config = parseConfig({
      station: { id: "S" },
      d1: { url: "wss://d1.example/x", token: "0123456789" },
      dataDir: "/tmp/x",
      printer: { path: "/dev/null" },
    });
    expect(config.store.retentionDays).toBe(90);
    expect(RETENTION_PERIOD_MS).toBe(DAY);
  });

  it("deletes finished, fully acknowledged jobs older than retentionDays at start, then once a day", () => {
    dir = mkdtempSync(join(tmpdir(), "retention-"));
    const file = join(dir, "jobs.sqlite");
    const now = Date.parse("2026-01-01T00:00:00.000Z");
    seedFinishedJobs(file, now, [
      { id: "a-old", daysAgo: 120 },
      { id: "b-unacked", daysAgo: 120, acked: false },
      { id: "c-waiting", daysAgo: 120, state: "READY" },
      { id: "d-soon", daysAgo: 89.5 },
      { id: "e-recent", daysAgo: 10 },
    ]);
    const clock = new ManualClock(now);
    store = new JobStore(file, new SealedBox(loadOrCreateKey(join(dir, "data.key"))), clock);
    const auditBefore = auditRows(store);
    const logs = captureLogs("debug");
    const retention = new RetentionSweeper({ store, clock, retentionDays: 90, logger: logs.logger });

    retention.start();
    // At start: only the old job whose every status D1 acknowledged; a job still waiting and one
    // with an unacknowledged status stay, whatever their age.
    expect(ids(store)).toEqual(["b-unacked", "c-waiting", "d-soon", "e-recent"]);
    expect(retention.last).toMatchObject({ deleted: 1, before: "2025-10-03T00:00:00.000Z" });
    expect(store.eventStatuses("a-old")).toEqual([]);

    // Half a day on: not yet (d-soon is 90 days old only after 12 h, the next run is at 24 h).
    clock.advance(DAY / 2);
    expect(ids(store)).toContain("d-soon");
    clock.advance(DAY / 2);
    expect(ids(store)).toEqual(["b-unacked", "c-waiting", "e-recent"]);
    expect(retention.last?.deleted).toBe(1);
    // The audit trail is never touched by retention.
    expect(auditRows(store)).toBe(auditBefore);
    // One timer, re-armed each day; stop() ends it.
    expect(clock.pendingTimers()).toBe(1);
    retention.stop();
    expect(clock.pendingTimers()).toBe(0);
  });

  it("a stepped wall clock neither skips nor repeats a run: the period is monotonic", () => {
    dir = mkdtempSync(join(tmpdir(), "retention-"));
    const file = join(dir, "jobs.sqlite");
    const now = Date.parse("2026-01-01T00:00:00.000Z");
    seedFinishedJobs(file, now, [{ id: "x", daysAgo: 1 }]);
    const clock = new ManualClock(now);
    store = new JobStore(file, new SealedBox(loadOrCreateKey(join(dir, "data.key"))), clock);
    const logs = captureLogs("debug");
    let runs = 0;
    const counting = {
      purgeFinishedBefore: (before: string) => {
        runs++;
        return store!.purgeFinishedBefore(before);
      },
    };
    const retention = new RetentionSweeper({ store: counting, clock, retentionDays: 1, logger: logs.logger });
    retention.start();
    expect(runs).toBe(1);
    clock.stepWall(3 * DAY); // NTP jumps ahead: no extra run
    expect(runs).toBe(1);
    clock.advance(DAY);
    expect(runs).toBe(2);
    expect(ids(store)).toEqual([]);
    retention.stop();
  });
});
