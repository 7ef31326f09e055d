import { spawnSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { formatStatus, needsAttention } from "../../agent/cli/status.js";
import { SnapshotSource } from "../../agent/console/snapshot.js";
import { ManualClock } from "../../agent/util/clock.js";
import { fill, freeBytes, mountTmpfs, unmount, until } from "../log/support.js";
import { type OpsRig, sampleJob, startOpsRig } from "./rig.js";
import { tempDir } from "./support.js";

/**
 * A full disk, a read-only store and a corrupt page while the agent runs (issue 16, cases 3 and 6):
 * each becomes device-level state (STORE_FULL, STORE_READONLY, STORE_CORRUPT) that /readyz, status
 * and metrics show; pushes are refused with that reason instead of INTERNAL; the card in production
 * waits for the store and ends exactly once as soon as a write succeeds again, without a restart.
 * Real file systems: the data directory is a small tmpfs that fills up or is remounted read-only.
 */
let rig: OpsRig | undefined;
let mounted: string | undefined;
let cleanup: (() => void) | undefined;

afterEach(async () => {
  await rig?.close();
  rig = undefined;
  if (mounted) unmount(mounted);
  mounted = undefined;
  cleanup?.();
  cleanup = undefined;
});

/** A data directory on a tmpfs of its own (8 MB: room for the store, filled by the test when it wants). */
function tmpfsDataDir(): string {
  const { dir, remove } = tempDir("kiosk-store-faults-");
  cleanup = remove;
  mountTmpfs(dir, { sizeKb: 8192 });
  mounted = dir;
  const data = join(dir, "data");
  mkdirSync(data);
  return data;
}

function stateOf(r: OpsRig, operationId: string): string | undefined {
  return r.agent.store.get(operationId)?.state;
}

describe("the job store as a device: full, read-only, corrupt", () => {
  it("a full disk while the card is in the mouth: CARD_PROD_DONE still comes, after space is freed, with no restart", async () => {
    const dataDir = tmpfsDataDir();
    // The watermark off: this is the disk filling up under a card already in production.
    rig = await startOpsRig({
      dataDir,
      printer: { takeAfterMs: 800 },
      config: { store: { minFreeMb: 0 } },
    });
    const r = rig;
    await r.agent.ready();
    const job = sampleJob();
    expect((await r.emulator.push(job)).result).toBe("accepted");
    await until(() => stateOf(r, job.operationId) === "PRESENTED", "the card in the mouth", 15_000);
    const filler = fill(join(dataDir, "..", "filler"));

    // The cardholder takes the card; DONE cannot be written.
    await until(() => r.agent.store.health.fault?.reason === "STORE_FULL", "STORE_FULL", 10_000);
    expect(stateOf(r, job.operationId)).toBe("PRESENTED");
    const readiness = r.agent.readiness();
    expect(readiness.ready).toBe(false);
    expect(readiness.reasons).toContain("STORE_FULL");
    // A push now is refused with the reason, not INTERNAL, and not stored.
    const refusedJob = sampleJob();
    const refused = await r.emulator.push(refusedJob);
    expect(refused).toMatchObject({ result: "refused", errorCode: "STORE_FULL" });
    expect(r.agent.store.get(refusedJob.operationId)).toBeUndefined();
    // Still up: it answers a status query.
    expect((await r.emulator.queryStatus({ operationIds: [job.operationId] })).operations).toHaveLength(1);

    filler.free();
    await until(
      () => r.emulator.latest(job.operationId)?.details.status === "CARD_PROD_DONE",
      "DONE after space came back",
    );
    expect(r.emulator.terminalCount(job.operationId)).toBe(1);
    expect(r.agent.store.health.fault).toBeUndefined();
    expect(r.agent.readiness().reasons).not.toContain("STORE_FULL");
    // Production goes on: the printer is not left busy, the next job is made.
    const next = sampleJob();
    expect((await r.emulator.push(next)).result).toBe("accepted");
    await until(
      () => r.emulator.latest(next.operationId)?.details.status === "CARD_PROD_DONE",
      "the next job DONE",
      15_000,
    );
    expect(r.log.text()).not.toContain("pipeline failure outside a job step");
  }, 40_000);

  it("below the free-space watermark pushes are refused STORE_FULL while the job in production finishes", async () => {
    const dataDir = tmpfsDataDir();
    rig = await startOpsRig({ dataDir, printer: { takeAfterMs: 300 }, config: { store: { minFreeMb: 4 } } });
    const r = rig;
    await r.agent.ready();
    const job = sampleJob();
    expect((await r.emulator.push(job)).result).toBe("accepted");
    await until(() => stateOf(r, job.operationId) !== "READY", "production");
    // Leave about 1 MB: under the 4 MB watermark, ample for the card's own writes.
    const ballast = openSync(join(dataDir, "..", "ballast"), "w");
    writeSync(ballast, Buffer.alloc(freeBytes(dataDir) - 1024 * 1024, 0x2e));
    closeSync(ballast);

    expect(r.agent.readiness().reasons).toContain("STORE_FULL");
    const refusedJob = sampleJob();
    expect(await r.emulator.push(refusedJob)).toMatchObject({ result: "refused", errorCode: "STORE_FULL" });
    await until(
      () => r.emulator.latest(job.operationId)?.details.status === "CARD_PROD_DONE",
      "the card in production DONE",
    );
    expect(r.agent.store.health.fault).toBeUndefined();
  }, 30_000);

  it("a store on a file system gone read-only: refused at start with STORE_READONLY naming the file", async () => {
    const dataDir = tmpfsDataDir();
    rig = await startOpsRig({ dataDir, printer: { takeAfterMs: 0 }, config: { store: { minFreeMb: 0 } } });
    const r = rig;
    await r.agent.ready();
    const first = sampleJob();
    expect((await r.emulator.push(first)).result).toBe("accepted");
    await until(
      () => r.emulator.latest(first.operationId)?.details.status === "CARD_PROD_DONE",
      "the first job DONE",
    );
    await r.close();
    rig = undefined;

    // As ext4 does after an error (errors=remount-ro); no file may be open for writing to remount.
    remount(mounted!, "ro");
    const err = await startOpsRig({ dataDir }).then(
      (started) => {
        rig = started;
        return undefined;
      },
      (e: unknown) => e as { code?: string; message: string },
    );
    expect(err?.code).toBe("STORE_READONLY");
    expect(err?.message).toContain(join(dataDir, "jobs.sqlite"));
    expect(err?.message).toMatch(/read-write/);
    remount(mounted!, "rw");
  }, 30_000);

  it("a corrupt page under the running agent: STORE_CORRUPT, pushes refused with it, the agent stays up", async () => {
    rig = await startOpsRig({ printer: { takeAfterMs: 0 } });
    const r = rig;
    await r.agent.ready();
    const first = sampleJob();
    expect((await r.emulator.push(first)).result).toBe("accepted");
    await until(
      () => r.emulator.latest(first.operationId)?.details.status === "CARD_PROD_DONE",
      "the first job DONE",
    );

    // Another connection folds the WAL into the file, the jobs table's root page is overwritten on
    // disk, and a write from that connection makes the agent's connection drop its page cache.
    const file = join(r.dataDir, "jobs.sqlite");
    const other = new Database(file);
    other.pragma("wal_checkpoint(TRUNCATE)");
    const pageSize = other.pragma("page_size", { simple: true }) as number;
    const root = (
      other.prepare("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").get() as { rootpage: number }
    ).rootpage;
    const fd = openSync(file, "r+");
    writeSync(fd, Buffer.alloc(pageSize, 0xa5), 0, pageSize, (root - 1) * pageSize);
    closeSync(fd);
    other.prepare("UPDATE store_meta SET writes = writes + 1").run();
    other.close();

    const refusedJob = sampleJob();
    const answer = await r.emulator.push(refusedJob);
    expect(answer).toMatchObject({ result: "refused", errorCode: "STORE_CORRUPT" });
    expect(r.agent.readiness().reasons).toContain("STORE_CORRUPT");
    // What a technician sees: `kiosk-agent status` prints the store's line from the same snapshot.
    const snapshot = new SnapshotSource(r.agent, new ManualClock(Date.now()), undefined).snapshot();
    expect(snapshot.store).toMatchObject({ state: "fault", reason: "STORE_CORRUPT" });
    expect(formatStatus(snapshot, "test")).toMatch(/^STORE {5}FAULT {2}STORE_CORRUPT/m);
    expect(needsAttention(snapshot)).toBe(true);
    // Still up and answering D1, not a crash.
    expect(r.agent.link.isUp).toBe(true);
  }, 30_000);
});

function remount(dir: string, mode: "ro" | "rw"): void {
  const res = spawnSync("mount", ["-o", `remount,${mode}`, dir], { encoding: "utf8" });
  if (res.status !== 0) throw new Error(`remount ${mode} ${dir}: ${res.stderr}`);
}
