/**
 * docs/crash-harness.md, "What it has found" 7: the WAL truncate after a purge does not survive a
 * power cut. Does on LazyFS what JobStore does at a job's end (purge the sealed payload with
 * secure_delete, then wal_checkpoint(TRUNCATE)), cuts the power, and looks for the payload in the
 * -wal. With --fsync-wal it also fsyncs the -wal after the checkpoint (the proposed fix).
 *
 *   npx tsx scripts/powerloss/repro-wal-truncate.ts [--fsync-wal]
 *
 * Needs LazyFS (scripts/powerloss/build-lazyfs.sh). The payload is a marker string, not card data.
 */
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { LazyFs } from "../../simulator/crash/lazyfs.js";

const MARKER = "SEALED-PAYLOAD-OF-JOB-1";
const fsyncWal = process.argv.includes("--fsync-wal");
const work = mkdtempSync(join(tmpdir(), "kiosk-wal-repro-"));
const lazy = await LazyFs.mount({ workDir: work, cacheSize: "16mb" });
try {
  const file = join(lazy.mountPoint, "jobs.sqlite");
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.pragma("secure_delete = ON");
  db.exec("CREATE TABLE jobs (id TEXT PRIMARY KEY, sealed BLOB)");
  db.prepare("INSERT INTO jobs VALUES ('job-1', ?)").run(Buffer.from(MARKER.repeat(20)));
  // The job ends: its payload is purged, then the log is folded in and truncated (scrubWal).
  db.prepare("UPDATE jobs SET sealed = NULL WHERE id = 'job-1'").run();
  db.pragma("wal_checkpoint(TRUNCATE)");
  if (fsyncWal) {
    const fd = openSync(`${file}-wal`, "r+");
    fsyncSync(fd);
    closeSync(fd);
  }
  console.log(`before the cut: jobs.sqlite-wal ${statSync(`${file}-wal`).size} bytes`);
  // The connection stays open, as a killed agent's does; the power goes.
  await lazy.clearCache();
  const wal = readFileSync(`${file}-wal`);
  console.log(
    `after the cut:  jobs.sqlite-wal ${wal.length} bytes; holds the purged payload: ${wal.includes(MARKER)}`,
  );
  db.close();
} finally {
  await lazy.unmount();
  rmSync(work, { recursive: true, force: true });
}
