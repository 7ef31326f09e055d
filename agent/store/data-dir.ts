import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { writeFileDurably } from "../util/durable-file.js";
import { appliedVersions, SCHEMA_VERSION, StoreCheckError } from "./migrations.js";

/** The files of a data directory the agent depends on (docs/operations.md). */
export const STORE_FILE = "jobs.sqlite";
export const KEY_FILE = "data.key";
/** The store's identity, written once the store exists: its absence or disagreement is evidence. */
export const MARKER_FILE = "store.id";

export interface DataDirState {
  /** No store has ever been made here (or its first start was cut before it held anything). */
  fresh: boolean;
  /** The store's id, when it has one. */
  storeId?: string;
  /** Schema versions the store has applied. */
  schema: number[];
}

/**
 * Decides, before the store is opened, whether this data directory may be used, and never by
 * making a new store over a lost one (issue 16). The store file is inspected on a copy: opening the
 * real file would replay (and, at close, checkpoint) a write-ahead log that may not be its own.
 *
 *   store.id present, jobs.sqlite missing or 0 bytes           → STORE_MISSING / STORE_EMPTY
 *   jobs.sqlite missing but its -wal left behind               → STORE_MISSING
 *   jobs.sqlite (with its -wal) holds another store's id        → STORE_MISMATCH
 *   jobs.sqlite not a readable database                         → STORE_UNREADABLE
 *   schema newer than this code                                 → STORE_SCHEMA_NEWER
 *   a damaged page (quick_check)                                → STORE_CORRUPT
 *   nothing there (or an empty file and no store.id)            → fresh: a new store is made
 */
export function checkDataDir(dir: string): DataDirState {
  const store = join(dir, STORE_FILE);
  const wal = `${store}-wal`;
  const marker = readMarker(dir);
  const size = existsSync(store) ? statSync(store).size : undefined;
  const walSize = existsSync(wal) ? statSync(wal).size : 0;
  if (size === undefined) {
    if (marker) {
      throw new StoreCheckError(
        "STORE_MISSING",
        `${store} is missing, but ${join(dir, MARKER_FILE)} says store ${marker} lived here: restore ${STORE_FILE} from its backup; to start an empty store on purpose, move the whole data directory aside first`,
      );
    }
    if (walSize > 0) {
      throw new StoreCheckError(
        "STORE_MISSING",
        `${wal} is here without ${store}: the store it belongs to is missing; restore ${STORE_FILE} from its backup, or move the data directory aside to start empty`,
      );
    }
    return { fresh: true, schema: [] };
  }
  if (size === 0 && walSize === 0) {
    if (marker) {
      throw new StoreCheckError(
        "STORE_EMPTY",
        `${store} is empty (0 bytes), but ${join(dir, MARKER_FILE)} says store ${marker} lived here: restore ${STORE_FILE} from its backup; to start an empty store on purpose, move the whole data directory aside first`,
      );
    }
    // A first start cut off before the store held anything: nothing is lost by making it now.
    return { fresh: true, schema: [] };
  }
  let corrupt: string | undefined;
  // quick_check reads every page (no index cross-check): a damaged page found now is one line and a
  // refusal, not an agent that starts and then fails jobs on a page it cannot read.
  const facts = inspectCopy(dir, (db) => {
    const result = db.pragma("quick_check(3)", { simple: false }) as Array<{ quick_check: string }>;
    if (result.length !== 1 || result[0]?.quick_check !== "ok") {
      corrupt = result
        .map((r) => r.quick_check.replace(/\s+/g, " ").replace("*** in database main *** ", ""))
        .join("; ");
    }
  });
  if (corrupt !== undefined) {
    throw new StoreCheckError(
      "STORE_CORRUPT",
      `${store} is damaged (SQLite: ${corrupt.slice(0, 200)}): run 'kiosk-agent store check', then restore ${STORE_FILE} from its backup`,
    );
  }
  const newest = facts.schema.at(-1) ?? 0;
  if (newest > SCHEMA_VERSION) {
    throw new StoreCheckError(
      "STORE_SCHEMA_NEWER",
      `${store} has schema version ${newest}, this agent knows up to ${SCHEMA_VERSION}: it was written by a newer kiosk-agent; install that version again (the store was not changed)`,
    );
  }
  if (marker && facts.storeId !== marker) {
    const what = walSize > 0 ? `${store} with its write-ahead log ${STORE_FILE}-wal` : store;
    throw new StoreCheckError(
      "STORE_MISMATCH",
      `${what} holds store ${facts.storeId ?? "(none)"}, but ${join(dir, MARKER_FILE)} says this directory's store is ${marker}: files of another store were put here; restore this store's ${STORE_FILE} (and remove a foreign ${STORE_FILE}-wal) from its backup`,
    );
  }
  return { fresh: false, schema: facts.schema, ...(facts.storeId ? { storeId: facts.storeId } : {}) };
}

/** Records the store's identity beside it, durably, once (a store older than migration 6 gets one). */
export function writeMarker(dir: string, storeId: string): void {
  const current = readMarker(dir);
  if (current === storeId) return;
  if (current !== undefined) {
    throw new StoreCheckError(
      "STORE_MISMATCH",
      `${join(dir, MARKER_FILE)} says store ${current}, the store is ${storeId}`,
    );
  }
  writeFileDurably(join(dir, MARKER_FILE), `${JSON.stringify({ storeId })}\n`, {
    mode: 0o600,
    exclusive: true,
  });
}

export function readMarker(dir: string): string | undefined {
  const file = join(dir, MARKER_FILE);
  if (!existsSync(file)) return undefined;
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as { storeId?: unknown };
    if (typeof parsed.storeId === "string" && parsed.storeId.length > 0) return parsed.storeId;
  } catch {
    // fall through: damaged
  }
  throw new StoreCheckError(
    "STORE_UNREADABLE",
    `${file} is damaged: it should hold {"storeId": "…"}; restore it from the backup of this data directory`,
  );
}

/** What the store says about itself, read from a copy of its files (the real ones are not touched). */
export function inspectCopy(
  dir: string,
  read?: (db: Database.Database) => void,
): { storeId?: string; schema: number[] } {
  const copyDir = mkdtempSync(join(tmpdir(), "kiosk-store-check-"));
  try {
    const source = join(dir, STORE_FILE);
    const copy = join(copyDir, STORE_FILE);
    copyFileSync(source, copy);
    // The log holds the last commits; the -shm index is rebuilt from it.
    if (existsSync(`${source}-wal`)) copyFileSync(`${source}-wal`, `${copy}-wal`);
    let db: Database.Database | undefined;
    try {
      db = new Database(copy, { fileMustExist: true });
      const schema = appliedVersions(db);
      const hasMeta = db
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'")
        .get();
      const row = hasMeta
        ? (db.prepare("SELECT store_id FROM store_meta WHERE id = 1").get() as
            | { store_id: string }
            | undefined)
        : undefined;
      read?.(db);
      return { schema, ...(row ? { storeId: row.store_id } : {}) };
    } catch (err) {
      if (err instanceof StoreCheckError) throw err;
      throw new StoreCheckError(
        "STORE_UNREADABLE",
        `${source} cannot be read as a store (${(err as Error).message}): restore it from its backup`,
        { cause: err },
      );
    } finally {
      db?.close();
    }
  } finally {
    rmSync(copyDir, { recursive: true, force: true });
  }
}
