import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import Database from "better-sqlite3";

/**
 * What the crash harness's power-loss mode checks after every cut, on the data directory as the
 * next start finds it (LazyFS has dropped everything not fsynced): the store is a sound database,
 * every job D1 was told "accepted" is in it, and every status D1 received is still in its outbox.
 * Pure reads of a copy: the store's own files are never opened by the harness here (opening them
 * would replay and, at close, checkpoint its write-ahead log).
 */

/** The data directory's store after a cut. */
export interface StoreAfterCut {
  /**
   * `none`: no store file, or an empty one with no log (a first start cut before its first commit:
   * the next start makes the store); `unidentified`: a database without its identity row yet;
   * `store`: a store with its identity (store_meta).
   */
  state: "none" | "unidentified" | "store";
  /** PRAGMA integrity_check: "ok", or its first lines. */
  integrity: string;
  jobIds: ReadonlySet<string>;
  eventIds: ReadonlySet<string>;
  /** data.key holds 32 bytes (base64); undefined when there is no key file. */
  keyOk?: boolean;
  /** store.id is there. */
  marker: boolean;
}

export function inspectStoreAfterCut(dataDir: string, scratchParent: string): StoreAfterCut {
  const store = join(dataDir, "jobs.sqlite");
  const key = join(dataDir, "data.key");
  const keyOk = existsSync(key)
    ? Buffer.from(readFileSync(key, "utf8").trim(), "base64").length === 32
    : undefined;
  const marker = existsSync(join(dataDir, "store.id"));
  const base = { ...(keyOk === undefined ? {} : { keyOk }), marker };
  const size = existsSync(store) ? statSync(store).size : undefined;
  const walSize = existsSync(`${store}-wal`) ? statSync(`${store}-wal`).size : 0;
  if (size === undefined || (size === 0 && walSize === 0)) {
    return { state: "none", integrity: "ok", jobIds: new Set(), eventIds: new Set(), ...base };
  }
  const scratch = mkdtempSync(join(scratchParent, "store-check-"));
  let db: Database.Database | undefined;
  try {
    const copy = join(scratch, "jobs.sqlite");
    copyFileSync(store, copy);
    if (walSize > 0) copyFileSync(`${store}-wal`, `${copy}-wal`);
    db = new Database(copy, { fileMustExist: true });
    const rows = db.pragma("integrity_check") as Array<{ integrity_check: string }>;
    const integrity = rows
      .map((r) => r.integrity_check)
      .slice(0, 5)
      .join("; ");
    const tables = new Set(
      (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map(
        (r) => r.name,
      ),
    );
    const identified =
      tables.has("store_meta") && db.prepare("SELECT 1 FROM store_meta WHERE id = 1").get() !== undefined;
    const ids = (sql: string, table: string): Set<string> =>
      tables.has(table) ? new Set((db!.prepare(sql).pluck().all() as string[]).map(String)) : new Set();
    return {
      state: identified ? "store" : "unidentified",
      integrity,
      jobIds: ids("SELECT operation_id FROM jobs", "jobs"),
      eventIds: ids("SELECT event_id FROM events", "events"),
      ...base,
    };
  } catch (err) {
    return {
      state: "unidentified",
      integrity: `unreadable: ${(err as Error).message}`,
      jobIds: new Set(),
      eventIds: new Set(),
      ...base,
    };
  } finally {
    db?.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}

/**
 * The harness's own count of what a cut will drop, read just before it: per file of the data
 * directory, the bytes that differ between the mount (with LazyFS's cache) and the backing directory
 * (what is synced), plus a difference in length. Grouped by kind: the SQLite write-ahead log, its
 * shared-memory index (-shm, never synced by SQLite: rebuilt from the log), the database, the key
 * and the other files.
 */
export function unsyncedByKind(mountDir: string, backingDir: string): Record<string, number> {
  const byKind: Record<string, number> = {};
  const walk = (dir: string): void => {
    let entries: import("node:fs").Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory()) {
        walk(path);
        continue;
      }
      if (!e.isFile()) continue;
      const seen = readOrEmpty(path);
      const synced = readOrEmpty(join(backingDir, relative(mountDir, path)));
      let differ = Math.abs(seen.length - synced.length);
      const common = Math.min(seen.length, synced.length);
      for (let i = 0; i < common; i++) if (seen[i] !== synced[i]) differ++;
      if (differ === 0) continue;
      const kind = e.name.endsWith("-wal")
        ? "wal"
        : e.name.endsWith("-shm")
          ? "shm"
          : e.name.endsWith(".sqlite")
            ? "db"
            : e.name === "data.key"
              ? "key"
              : "other";
      byKind[kind] = (byKind[kind] ?? 0) + differ;
    }
  };
  walk(mountDir);
  return byKind;
}

function readOrEmpty(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch {
    return Buffer.alloc(0);
  }
}

/** One power cut: after a kill, or after an episode's clean stop. */
export interface CutRecord {
  iteration: number;
  episode: number;
  /** What was cut: a killed agent, or a stopped one (the end of an episode). */
  after: "kill" | "clean-stop";
  /** The cut agent had started on a data directory with no store in it (its first boot). */
  firstBoot: boolean;
  /** LazyFS's count of bytes it held un-synced, all dropped by the cut. */
  unsyncedBytes: number;
  /** The harness's own count of the bytes the cut changed, by kind of file (unsyncedByKind). */
  changedBytes: Record<string, number>;
  /**
   * How much longer jobs.sqlite-wal is after the cut than before it: a truncate of the log (the
   * agent's wal_checkpoint(TRUNCATE) after a purge) that was never synced, undone by the cut. The
   * old frames are back on disk (docs/crash-harness.md, "What it has found" 7).
   */
  walRegrownBytes: number;
  store: StoreAfterCut["state"];
  integrity: string;
  /** Jobs D1 got an `accepted` for (this episode's store) that the store no longer has. */
  missingAccepted: string[];
  /** Status events D1 received from this episode's store that its outbox no longer has. */
  missingEvents: string[];
  /** A store with sealed jobs and a key file that is not a key (the agent would refuse to start). */
  keyLost: boolean;
}

/** The power-loss figures of the summary. */
export function powerLossSummary(cuts: readonly CutRecord[], failedRestarts: number, episodes: number) {
  const kills = cuts.filter((c) => c.after === "kill");
  const integrityFailures = cuts.filter((c) => c.integrity !== "ok");
  const storeAfterFirstBootCut: Record<string, number> = {};
  for (const c of kills.filter((k) => k.firstBoot)) {
    storeAfterFirstBootCut[c.store] = (storeAfterFirstBootCut[c.store] ?? 0) + 1;
  }
  return {
    mode: "powerloss",
    episodes,
    cuts: cuts.length,
    cutsAfterKill: kills.length,
    cutsAfterCleanStop: cuts.length - kills.length,
    firstBootCuts: kills.filter((c) => c.firstBoot).length,
    /** What the cut left of a first boot's store: none (the next start is a first boot again) or a store. */
    storeAfterFirstBootCut,
    integrity: integrityFailures.length === 0 ? "ok" : "failed",
    integrityFailures: integrityFailures.length,
    failedRestarts,
    acceptedMissingAfterCut: cuts.reduce((n, c) => n + c.missingAccepted.length, 0),
    eventsMissingAfterCut: cuts.reduce((n, c) => n + c.missingEvents.length, 0),
    keyLostAfterCut: cuts.filter((c) => c.keyLost).length,
    unsyncedBytesDropped: cuts.reduce((n, c) => n + c.unsyncedBytes, 0),
    maxUnsyncedBytesAtCut: cuts.reduce((n, c) => Math.max(n, c.unsyncedBytes), 0),
    /** Bytes whose content the cuts changed, by kind of file (the harness's own count). */
    changedBytesByKind: sumByKind(cuts.map((c) => c.changedBytes)),
    /** Cuts after which the write-ahead log was longer than before: an un-synced truncate undone. */
    walTruncatesUndone: cuts.filter((c) => c.walRegrownBytes > 0).length,
    walBytesBack: cuts.reduce((n, c) => n + c.walRegrownBytes, 0),
    /** Cuts that changed the log, the database or the key: data written but not yet synced. */
    cutsThatChanged: {
      wal: cuts.filter((c) => (c.changedBytes["wal"] ?? 0) > 0).length,
      db: cuts.filter((c) => (c.changedBytes["db"] ?? 0) > 0).length,
      key: cuts.filter((c) => (c.changedBytes["key"] ?? 0) > 0).length,
      other: cuts.filter((c) => (c.changedBytes["other"] ?? 0) > 0).length,
    },
  };
}

function sumByKind(all: ReadonlyArray<Record<string, number>>): Record<string, number> {
  const sum: Record<string, number> = {};
  for (const m of all) for (const [k, n] of Object.entries(m)) sum[k] = (sum[k] ?? 0) + n;
  return sum;
}

/** The power-loss counts that fail a run even with --lenient: each breaks a promise of durability. */
export function powerLossFailed(s: ReturnType<typeof powerLossSummary>): boolean {
  return (
    s.integrityFailures !== 0 ||
    s.failedRestarts !== 0 ||
    s.acceptedMissingAfterCut !== 0 ||
    s.eventsMissingAfterCut !== 0 ||
    s.keyLostAfterCut !== 0
  );
}
