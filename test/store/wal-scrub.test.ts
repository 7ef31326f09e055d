import { EventEmitter } from "node:events";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createMetrics, type MetricsSource } from "../../agent/health/metrics.js";
import type { PipelineEvents } from "../../agent/pipeline/pipeline.js";
import { JobStore } from "../../agent/store/job-store.js";
import { loadOrCreateKey, SealedBox } from "../../agent/store/sealed-box.js";
import { ManualClock } from "../../agent/util/clock.js";
import { parseExposition } from "../ops/scrape.js";

/**
 * Issue 14, finding 4: "the purge fails while another process reads the database". With a reader
 * open (an audit export, a backup, an sqlite3 shell) the WAL cannot be truncated after a purge and
 * keeps the sealed payload of the finished job. The scrub must see that, retry on the agent's clock
 * until the WAL is truncated, and say so meanwhile (a metric at once, the store warning
 * WAL_NOT_SCRUBBED once it has failed for a minute). A real second connection holds the read.
 */
const JOB_JSON = JSON.stringify({
  productionData: { magstripe: { track2: "5266092201416174=2804201000000000000" } },
});

describe("the WAL scrub after a purge, with another connection reading", () => {
  let dir: string;
  let file: string;
  let clock: ManualClock;
  let store: JobStore;
  let reader: Database.Database | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "wal-scrub-"));
    file = join(dir, "jobs.sqlite");
    clock = new ManualClock();
    store = new JobStore(file, new SealedBox(loadOrCreateKey(join(dir, "data.key"))), clock);
  });
  afterEach(() => {
    if (reader?.open) reader.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const sealedOf = (id: string) =>
    (store.db.prepare("SELECT sealed_job FROM jobs WHERE operation_id = ?").get(id) as { sealed_job: Buffer })
      .sealed_job;
  const onDisk = (bytes: Buffer) =>
    ["", "-wal"].filter((suffix) => {
      try {
        return readFileSync(`${file}${suffix}`).includes(bytes);
      } catch {
        return false;
      }
    });
  const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

  function metricsOf(s: JobStore) {
    const source: MetricsSource = {
      store: s,
      outbox: { stats: { sent: 0, resent: 0, acked: 0 } },
      link: { isUp: true, stats: { sessions: 1, malformed: 0 } },
      supervisor: { status: { state: "idle", since: "2026-01-01T00:00:00.000Z" } },
      pipeline: new EventEmitter<PipelineEvents>(),
      supplies: () => ({
        readAt: undefined,
        ribbon: { remaining: null, capacity: null },
        feeders: [],
        bins: [],
        cleaning: "none",
        counter: { cardsInserted: null, mismatch: null },
        warnings: [],
      }),
      config: { printer: { feeders: [{ id: "1", nearEmptyAt: 10 }], bins: {} as never } },
    } as unknown as MetricsSource;
    const { registry, dispose } = createMetrics(source, {
      clock,
      station: "S",
      version: "0",
      defaultMetrics: false,
    });
    const value = async (name: string, labels: Record<string, string> = {}) =>
      parseExposition(await registry.metrics()).find(
        (m) => m.name === name && Object.entries(labels).every(([k, v]) => m.labels[k] === v),
      )?.value;
    return { value, dispose };
  }

  it("retries until the reader is gone, then the WAL is empty and no copy of the sealed payload is left", async () => {
    store.accept({ kind: "valid", operationId: "op-1", cardId: "c-1", jobJson: JOB_JSON });
    const sealed = sealedOf("op-1");
    expect(onDisk(sealed).length).toBeGreaterThan(0);

    // An `audit export` or an sqlite3 shell: a read transaction on its own connection.
    reader = new Database(file, { readonly: true });
    reader.exec("BEGIN");
    reader.prepare("SELECT COUNT(*) FROM audit_log").get();

    const metrics = metricsOf(store);
    store.transition("op-1", "READY", "FAILED", { reason: "FEEDER_EMPTY", errorCode: "FEEDER_EMPTY" });
    await turn(); // the scrub runs in a microtask after the terminal move
    expect(store.walScrub).toMatchObject({ pending: true, attempts: 1 });
    expect(statSync(`${file}-wal`).size).toBeGreaterThan(0);
    expect(onDisk(sealed)).toContain("-wal"); // what the issue found: the purged payload is still there
    expect(await metrics.value("kiosk_agent_wal_scrub_pending")).toBe(1);
    // Not a warning yet: an export holds the database for a moment.
    expect(store.health.warnings()).toEqual([]);
    expect(await metrics.value("kiosk_agent_store_warning", { warning: "WAL_NOT_SCRUBBED" })).toBe(0);

    // Retried with backoff on the agent's clock (1 s, 2 s, 4 s …) while the reader stays.
    clock.advance(1_000);
    expect(store.walScrub.attempts).toBe(2);
    clock.advance(2_000);
    expect(store.walScrub.attempts).toBe(3);

    // Still failing a minute on: the store warning (status, console, metrics).
    const raised: string[] = [];
    store.health.on("warning", (keyword, on) => raised.push(`${keyword}:${on}`));
    clock.advance(60_000); // WAL_SCRUB_WARN_MS
    expect(store.health.warnings()).toEqual([
      expect.objectContaining({
        keyword: "WAL_NOT_SCRUBBED",
        detail: expect.stringMatching(/jobs\.sqlite-wal/),
      }),
    ]);
    expect(raised).toEqual(["WAL_NOT_SCRUBBED:true"]);
    expect(await metrics.value("kiosk_agent_store_warning", { warning: "WAL_NOT_SCRUBBED" })).toBe(1);

    // The reader goes: the next retry truncates the WAL; nothing of the payload is anywhere.
    reader.exec("COMMIT");
    reader.close();
    clock.advance(60_000);
    expect(store.walScrub).toMatchObject({ pending: false });
    expect(statSync(`${file}-wal`).size).toBe(0);
    expect(onDisk(sealed)).toEqual([]);
    expect(store.health.warnings()).toEqual([]);
    expect(raised).toEqual(["WAL_NOT_SCRUBBED:true", "WAL_NOT_SCRUBBED:false"]);
    expect(await metrics.value("kiosk_agent_wal_scrub_pending")).toBe(0);
    expect(await metrics.value("kiosk_agent_store_warning", { warning: "WAL_NOT_SCRUBBED" })).toBe(0);
    // Done: no more retries scheduled.
    expect(clock.pendingTimers()).toBe(0);
    metrics.dispose();
  });

  it("without a reader the WAL is truncated at once and nothing is scheduled", async () => {
    store.accept({ kind: "valid", operationId: "op-2", cardId: "c-2", jobJson: JOB_JSON });
    const sealed = sealedOf("op-2");
    store.transition("op-2", "READY", "CANCELED", { reason: "ISSUER_CANCEL" });
    await turn();
    expect(store.walScrub).toEqual({ pending: false, attempts: 0 });
    expect(statSync(`${file}-wal`).size).toBe(0);
    expect(onDisk(sealed)).toEqual([]);
    expect(clock.pendingTimers()).toBe(0);
  });

  it("a reader that stays while the agent stops: the retry ends with the store", async () => {
    store.accept({ kind: "valid", operationId: "op-3", cardId: "c-3", jobJson: JOB_JSON });
    reader = new Database(file, { readonly: true });
    reader.exec("BEGIN");
    reader.prepare("SELECT COUNT(*) FROM jobs").get();
    store.transition("op-3", "READY", "CANCELED", { reason: "ISSUER_CANCEL" });
    await turn();
    expect(store.walScrub.pending).toBe(true);
    expect(clock.pendingTimers()).toBeGreaterThan(0);
    store.close();
    expect(clock.pendingTimers()).toBe(0);
    reader.exec("COMMIT");
    // The next start scrubs again (and the close folded what it could).
    store = new JobStore(file, new SealedBox(loadOrCreateKey(join(dir, "data.key"))), clock);
    expect(store.walScrub.pending).toBe(false);
    expect(statSync(`${file}-wal`).size).toBe(0);
  });
});
