import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statfsSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobStore } from "../../agent/store/job-store.js";
import { SealedBox } from "../../agent/store/sealed-box.js";
import { ManualClock } from "../../agent/util/clock.js";
import { LazyFs, lazyFsAvailability } from "../../simulator/crash/lazyfs.js";

/**
 * The power-loss harness's file system: what a cut drops and keeps. Uses the LazyFS that
 * scripts/setup.sh builds (scripts/powerloss/build-lazyfs.sh); skipped, with the reason, where it
 * is not built or FUSE cannot mount.
 */

const available = lazyFsAvailability();
if ("unavailable" in available) console.warn(`lazyfs tests skipped: ${available.unavailable}`);

describe.skipIf("unavailable" in available)("LazyFS", () => {
  let work: string;
  let lazy: LazyFs;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "kiosk-lazyfs-test-"));
    lazy = await LazyFs.mount({ workDir: work, cacheSize: "16mb" });
  });

  afterAll(async () => {
    await lazy?.unmount();
    rmSync(work, { recursive: true, force: true });
  });

  it("drops what was not fsynced at a cut and keeps what was", async () => {
    const file = join(lazy.mountPoint, "kept-and-lost");
    const fd = openSync(file, "w");
    writeSync(fd, "synced;");
    fsyncSync(fd);
    writeSync(fd, "not synced");
    closeSync(fd);
    const never = join(lazy.mountPoint, "never-synced");
    closeSync(openSync(never, "w"));
    const fd2 = openSync(never, "w");
    writeSync(fd2, "x".repeat(5000));
    closeSync(fd2);

    // Only the data is held back: the names are already on the backing directory.
    expect(await lazy.unsyncedBytes()).toBeGreaterThanOrEqual(5000 + "not synced".length);
    await lazy.clearCache();

    expect(readFileSync(file, "utf8")).toBe("synced;");
    expect(readFileSync(never, "utf8")).toBe("");
    expect(await lazy.unsyncedBytes()).toBe(0);
  });

  it("a finished job's sealed data does not come back in the WAL after a cut (the scrub's truncation is synced)", async () => {
    const dir = join(lazy.mountPoint, "store");
    mkdirSync(dir);
    const box = new SealedBox(randomBytes(32));
    const store = new JobStore(join(dir, "jobs.sqlite"), box, new ManualClock(Date.now()));
    const marker = "SEALED-PAYLOAD-MARKER-0123456789";
    store.accept({
      kind: "valid",
      operationId: "op-wal",
      cardId: "card-1",
      jobJson: JSON.stringify({ marker }),
    });
    const sealed = (
      store.db.prepare("SELECT sealed_job FROM jobs WHERE operation_id = 'op-wal'").get() as {
        sealed_job: Buffer;
      }
    ).sealed_job;
    store.transition("op-wal", "READY", "CANCELED", { reason: "ISSUER_CANCEL" });
    // The purge's scrub runs in a microtask after the move.
    await Promise.resolve();
    await new Promise((r) => setImmediate(r));
    // The cut comes with the store still open (a close would checkpoint and delete the -wal).
    await lazy.clearCache();
    const wal = join(dir, "jobs.sqlite-wal");
    const bytes = existsSync(wal) ? readFileSync(wal) : Buffer.alloc(0);
    store.close();
    expect(bytes.indexOf(sealed.subarray(0, 32))).toBe(-1);
  });

  it("reports the backing file system's free space (statfs), not 0", () => {
    // Without the statfs patch FUSE says 0 bytes free, and the agent's free-space watermark would
    // refuse every push as STORE_FULL.
    const s = statfsSync(lazy.mountPoint);
    expect(s.bavail * s.bsize).toBeGreaterThan(0);
  });
});
