import { existsSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../config/load.js";
import { checkDataDir, inspectCopy, KEY_FILE, STORE_FILE } from "../store/data-dir.js";
import {
  type DataKeyConfig,
  dataKeyFile,
  fileKeySlot,
  type KeySlot,
  parseDataKey,
  STAGED_SUFFIX,
} from "../store/data-key.js";
import { credentialKeySlot, rekeyStore } from "../store/key-rotation.js";
import { SCHEMA_VERSION } from "../store/migrations.js";
import { SealedBox } from "../store/sealed-box.js";
import { credentialsDirectory, readCredential } from "../util/credentials.js";
import { CodedError } from "../util/errors.js";
import { type CommandIo, parseOrExitCode } from "./args.js";

const HELP = `Usage: kiosk-agent store check [--data-dir DIR | --config FILE] [--json]
       kiosk-agent store rekey [--data-dir DIR | --config FILE] [--json]

check: checks a data directory the way the agent does at start, without changing anything (the store
is read from a copy): the store file and its identity (store.id), the schema version, the data key
against the store, and SQLite's integrity check. Safe while the agent runs.

rekey: rotates the data key. Stop the agent first. A new key is made, every pending job's sealed
production data and the store's key check are re-sealed with it in one transaction, then the new
key replaces the old one: DATA_DIR/data.key, or (dataKey.source "credential", run as root) the
encrypted credential file dataKey.credentialFile, through systemd-creds. A rotation cut short is
finished or undone by the next rekey (and, for a file key, by the agent's next start).
docs/operations.md, "Rotating the data key".

With --data-dir the key is DIR/data.key; with --config it is the configuration's dataKey.

Exit codes: 0 the agent can start on it / the key was rotated; 1 it would refuse / rotation refused
(each problem is one line naming the file and what to do; docs/operations.md, "The data directory at
start"); 2 usage.`;

interface Check {
  check: string;
  ok: boolean;
  detail: string;
  code?: string;
}

export async function storeCommand(
  argv: string[],
  io: CommandIo = { out: (t) => console.log(t), err: (t) => console.error(t) },
): Promise<number> {
  const parsed = parseOrExitCode(
    argv,
    {
      "data-dir": { type: "string", short: "d" },
      config: { type: "string", short: "c" },
      json: { type: "boolean" },
    },
    HELP,
    { allowPositionals: true, io },
  );
  if (typeof parsed === "number") return parsed;
  const { values, positionals } = parsed;
  const command = positionals[0];
  if (positionals.length !== 1 || (command !== "check" && command !== "rekey")) {
    io.err(HELP);
    return 2;
  }
  let dataDir = typeof values["data-dir"] === "string" ? values["data-dir"] : undefined;
  let dataKey: DataKeyConfig | undefined;
  if (typeof values.config === "string") {
    try {
      const config = loadConfig(values.config);
      dataDir ??= config.dataDir;
      dataKey = config.dataKey;
    } catch (err) {
      if (err instanceof ConfigError) {
        io.err(err.message);
        return 1;
      }
      throw err;
    }
  }
  if (!dataDir) {
    io.err(`kiosk-agent store ${command}: give --data-dir DIR or --config FILE\n\n${HELP}`);
    return 2;
  }
  const slot = keySlotFor(dataDir, dataKey);
  if (command === "rekey") {
    try {
      const result = rekeyStore(dataDir, slot);
      if (values.json) io.out(JSON.stringify({ dataDir, key: slot.describe, ...result }, null, 2));
      else {
        if (result.resumed) io.out(result.resumed);
        io.out(
          `data key rotated: ${result.resealed} pending job(s) re-sealed; the new key is ${slot.describe}`,
        );
      }
      return 0;
    } catch (err) {
      if (!(err instanceof CodedError)) throw err;
      io.err(`kiosk-agent store rekey: ${err.code}: ${err.message}`);
      return 1;
    }
  }
  const checks = checkStore(dataDir, slot);
  if (values.json) io.out(JSON.stringify({ dataDir, ok: checks.every((c) => c.ok), checks }, null, 2));
  else for (const c of checks) io.out(`${c.ok ? "ok  " : "FAIL"}  ${c.check.padEnd(9)} ${c.detail}`);
  return checks.every((c) => c.ok) ? 0 : 1;
}

/**
 * Where `store check` and `store rekey` find the data key: DIR/data.key with --data-dir alone; with
 * --config, its dataKey. Unset `source`: the credential when this process was given it
 * ($CREDENTIALS_DIRECTORY) or its encrypted file exists (a root shell on an installed kiosk), else
 * the file.
 */
export function keySlotFor(dataDir: string, dataKey: DataKeyConfig | undefined, env = process.env): KeySlot {
  if (!dataKey) return fileKeySlot(join(dataDir, KEY_FILE));
  const source =
    dataKey.source ??
    (credentialsDirectory(env) || existsSync(dataKey.credentialFile) ? "credential" : "file");
  if (source === "file") return fileKeySlot(dataKeyFile(dataKey, dataDir));
  const slot = credentialKeySlot({
    file: dataKey.credentialFile,
    name: dataKey.credential,
    withKey: dataKey.withKey,
    env,
  });
  const dir = credentialsDirectory(env);
  // Under the service (or systemd-run with the credential) the decrypted copy is there: no root needed to read.
  if (dir && existsSync(join(dir, dataKey.credential))) {
    return {
      ...slot,
      read: () =>
        parseDataKey(
          readCredential(dataKey.credential, "dataKey.credential", env),
          `credential ${dataKey.credential}`,
        ),
    };
  }
  return slot;
}

/** Every check, in order; stops at the first that leaves nothing further to check. */
export function checkStore(dataDir: string, slot: KeySlot = fileKeySlot(join(dataDir, KEY_FILE))): Check[] {
  const checks: Check[] = [];
  const failed = (check: string, err: unknown): Check[] => {
    checks.push({
      check,
      ok: false,
      detail: (err as Error).message,
      ...(err instanceof CodedError ? { code: err.code } : {}),
    });
    return checks;
  };
  let state: ReturnType<typeof checkDataDir>;
  try {
    state = checkDataDir(dataDir);
  } catch (err) {
    return failed("store", err);
  }
  if (state.fresh) {
    checks.push({
      check: "store",
      ok: true,
      detail: `no store in ${dataDir} yet: the agent makes a new one at its first start`,
    });
    return checks;
  }
  checks.push({
    check: "store",
    ok: true,
    detail: `${join(dataDir, STORE_FILE)}: store ${state.storeId ?? "(from before store ids; gets one at the next start)"}`,
  });
  checks.push({
    check: "schema",
    ok: true,
    detail: `version ${state.schema.at(-1) ?? 0} (this agent knows up to ${SCHEMA_VERSION}${(state.schema.at(-1) ?? 0) < SCHEMA_VERSION ? "; it migrates the store at its next start" : ""})`,
  });
  let box: SealedBox;
  try {
    box = new SealedBox(slot.read());
  } catch (err) {
    return failed("key", err);
  }
  try {
    inspectCopy(dataDir, (db) => {
      const meta = db
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'")
        .get()
        ? (db.prepare("SELECT store_id, key_check FROM store_meta WHERE id = 1").get() as
            | { store_id: string; key_check: Buffer }
            | undefined)
        : undefined;
      if (meta) {
        try {
          box.open(meta.key_check, meta.store_id);
          checks.push({ check: "key", ok: true, detail: `${slot.describe} is this store's key` });
        } catch {
          if (slot.finishedAtStart && stagedOpens(slot, meta)) {
            // A rotation cut short after the store was re-sealed: the agent's start finishes it.
            checks.push({
              check: "key",
              ok: true,
              detail: `${slot.describe}${STAGED_SUFFIX} (a rotation cut short) is this store's key: the agent's next start moves it into place`,
            });
          } else {
            checks.push({
              check: "key",
              ok: false,
              code: "KEY_MISMATCH",
              detail: `${slot.describe} does not open ${join(dataDir, STORE_FILE)}: it is not this store's key; restore this store's data key from its backup${slot.hasStaged() ? " (a rotation was cut short: run 'kiosk-agent store rekey' again to finish it)" : ""}`,
            });
          }
        }
      } else {
        checks.push({
          check: "key",
          ok: true,
          detail: `${slot.describe} present (the store has no key check yet)`,
        });
      }
      const integrity = (db.pragma("integrity_check") as Array<{ integrity_check: string }>).map(
        (r) => r.integrity_check,
      );
      const intact = integrity.length === 1 && integrity[0] === "ok";
      checks.push({
        check: "integrity",
        ok: intact,
        detail: intact
          ? "SQLite integrity check ok"
          : `SQLite integrity check: ${integrity.slice(0, 3).join("; ")}: restore ${STORE_FILE} from its backup`,
        ...(intact ? {} : { code: "STORE_CORRUPT" }),
      });
      const open = db
        .prepare("SELECT COUNT(*) AS n FROM jobs WHERE state IN ('READY','PRODUCING','PRESENTED')")
        .get() as { n: number };
      checks.push({ check: "jobs", ok: true, detail: `${open.n} job(s) not finished` });
    });
  } catch (err) {
    return failed("store", err);
  }
  if (existsSync(join(dataDir, `${STORE_FILE}-wal`))) {
    checks.push({
      check: "wal",
      ok: true,
      detail: `${STORE_FILE}-wal present (commits not yet folded into the store; normal while the agent runs)`,
    });
  }
  return checks;
}

/** Whether a staged key (a rotation cut short) opens the store's key check. */
function stagedOpens(slot: KeySlot, meta: { store_id: string; key_check: Buffer }): boolean {
  if (!slot.hasStaged()) return false;
  try {
    new SealedBox(slot.readStaged()).open(meta.key_check, meta.store_id);
    return true;
  } catch {
    return false;
  }
}
