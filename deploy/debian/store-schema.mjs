#!/usr/bin/node
// The schema version of a kiosk-agent store (DATA_DIR/jobs.sqlite), read without changing it, for the
// package's downgrade guard. Installed as /usr/lib/kiosk-agent/bin/store-schema.mjs; used by the
// package's launcher (bin/kiosk-agent.mjs, before `run`) and by its preinst and postinst:
//
//   node store-schema.mjs check --config /etc/kiosk-agent/config.json --schema 4 --package 0.1.0
//
// exit 0: no store, or one this package's agent knows; 3: the store was written by a newer agent (the
// message on stderr); 4: it could not be read (said on stderr; the agent's own start decides then).
//
// Why: kiosk-agent 0.1.0 has no check of its own. On a store of schema 6 it skips the migrations it
// does not know and goes on writing jobs without the columns and rows the newer code depends on (the
// stock ledger, store_meta). The agent from schema 6 on refuses such a store itself
// (STORE_SCHEMA_NEWER, agent/store/migrations.ts); this guard gives an older package the same refusal.
//
// The store is read from a copy (with its -wal), as `kiosk-agent store check` does: opening the real
// file could replay and checkpoint its write-ahead log, or leave -shm/-wal files behind.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const DEFAULT_DATA_DIR = "/var/lib/kiosk-agent";
export const EXIT_NEWER = 3;
export const EXIT_UNKNOWN = 4;

/** dataDir from a configuration file, with KIOSK_AGENT__DATA_DIR applied as the agent applies it. */
export function dataDirFromConfig(file, env = process.env) {
  if (env.KIOSK_AGENT__DATA_DIR) return env.KIOSK_AGENT__DATA_DIR;
  if (!file) return undefined;
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8"));
    return typeof parsed?.dataDir === "string" ? parsed.dataDir : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `{ file, version }`: the newest schema version the store has applied (0 for a store without a
 * migration record), or `{ file, version: undefined }` when there is no store. Throws when the store
 * cannot be read.
 */
export function readStoreSchema(dataDir) {
  const file = join(dataDir, "jobs.sqlite");
  if (!existsSync(file) || statSync(file).size === 0) return { file, version: undefined };
  // The package's own (/usr/lib/kiosk-agent/node_modules), or the checkout's when run from deploy/debian/.
  const Database = createRequire(import.meta.url)("better-sqlite3");
  const scratch = mkdtempSync(join(tmpdir(), "kiosk-agent-schema-"));
  try {
    const copy = join(scratch, "jobs.sqlite");
    copyFileSync(file, copy);
    if (existsSync(`${file}-wal`)) copyFileSync(`${file}-wal`, `${copy}-wal`);
    const db = new Database(copy, { fileMustExist: true });
    try {
      const table = db
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
        .get();
      const row = table ? db.prepare("SELECT MAX(version) AS v FROM schema_migrations").get() : undefined;
      return { file, version: row?.v ?? 0 };
    } finally {
      db.close();
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

export function newerMessage(file, version, schema, packageVersion) {
  return (
    `kiosk-agent: STORE_SCHEMA_NEWER: ${file} has schema version ${version}, kiosk-agent ${packageVersion} ` +
    `knows up to ${schema}: it was written by a newer kiosk-agent; install that version (or a newer one) ` +
    "again (the store was not changed)"
  );
}

/** For the launcher: the refusal line when `run`'s configuration points at a newer store, else undefined. */
export function newerStoreRefusal(runArgs, info) {
  let config;
  for (let i = 0; i < runArgs.length; i++) {
    const a = runArgs[i];
    if (a === "--config" || a === "-c") config = runArgs[i + 1];
    else if (a.startsWith("--config=")) config = a.slice("--config=".length);
  }
  const dataDir = dataDirFromConfig(config);
  if (!dataDir) return undefined;
  let found;
  try {
    found = readStoreSchema(dataDir);
  } catch {
    return undefined; // unreadable: the agent's own start reports it
  }
  if (found.version !== undefined && found.version > info.schemaVersion) {
    return newerMessage(found.file, found.version, info.schemaVersion, info.version);
  }
  return undefined;
}

function main(argv) {
  const [command, ...rest] = argv;
  const opt = (name) => {
    const i = rest.indexOf(`--${name}`);
    return i >= 0 ? rest[i + 1] : undefined;
  };
  if (command !== "check" || opt("schema") === undefined) {
    process.stderr.write(
      "usage: store-schema.mjs check [--config FILE | --data-dir DIR] --schema N [--package VERSION]\n",
    );
    return 2;
  }
  const schema = Number(opt("schema"));
  const dataDir = opt("data-dir") ?? dataDirFromConfig(opt("config"), {}) ?? DEFAULT_DATA_DIR;
  let found;
  try {
    found = readStoreSchema(dataDir);
  } catch (err) {
    process.stderr.write(`kiosk-agent: could not read the schema of ${dataDir}/jobs.sqlite: ${err.message}\n`);
    return EXIT_UNKNOWN;
  }
  if (found.version !== undefined && found.version > schema) {
    process.stderr.write(`${newerMessage(found.file, found.version, schema, opt("package") ?? "")}\n`);
    return EXIT_NEWER;
  }
  return 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === realpathSync(process.argv[1])) {
  process.exitCode = main(process.argv.slice(2));
}
