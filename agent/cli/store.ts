import { existsSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../config/load.js";
import { checkDataDir, inspectCopy, KEY_FILE, STORE_FILE } from "../store/data-dir.js";
import { SCHEMA_VERSION } from "../store/migrations.js";
import { loadOrCreateKey, SealedBox } from "../store/sealed-box.js";
import { CodedError } from "../util/errors.js";
import { type CommandIo, parseOrExitCode } from "./args.js";

const HELP = `Usage: kiosk-agent store check [--data-dir DIR | --config FILE] [--json]

Checks a data directory the way the agent does at start, without changing anything (the store is
read from a copy): the store file and its identity (store.id), the schema version, the data key
against the store, and SQLite's integrity check. Safe while the agent runs.

Exit codes: 0 the agent can start on it; 1 it would refuse (each problem is one line naming the file
and what to do; docs/operations.md, "The data directory at start"); 2 usage.`;

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
  if (positionals.length !== 1 || positionals[0] !== "check") {
    io.err(HELP);
    return 2;
  }
  let dataDir = typeof values["data-dir"] === "string" ? values["data-dir"] : undefined;
  if (!dataDir && typeof values.config === "string") {
    try {
      dataDir = loadConfig(values.config).dataDir;
    } catch (err) {
      if (err instanceof ConfigError) {
        io.err(err.message);
        return 1;
      }
      throw err;
    }
  }
  if (!dataDir) {
    io.err(`kiosk-agent store check: give --data-dir DIR or --config FILE\n\n${HELP}`);
    return 2;
  }
  const checks = checkStore(dataDir);
  if (values.json) io.out(JSON.stringify({ dataDir, ok: checks.every((c) => c.ok), checks }, null, 2));
  else for (const c of checks) io.out(`${c.ok ? "ok  " : "FAIL"}  ${c.check.padEnd(9)} ${c.detail}`);
  return checks.every((c) => c.ok) ? 0 : 1;
}

/** Every check, in order; stops at the first that leaves nothing further to check. */
export function checkStore(dataDir: string): Check[] {
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
    box = new SealedBox(loadOrCreateKey(join(dataDir, KEY_FILE), { create: false }));
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
          checks.push({ check: "key", ok: true, detail: `${join(dataDir, KEY_FILE)} is this store's key` });
        } catch {
          checks.push({
            check: "key",
            ok: false,
            code: "KEY_MISMATCH",
            detail: `the data key does not open ${join(dataDir, STORE_FILE)}: it is not this store's key; restore this store's ${KEY_FILE} from its backup`,
          });
        }
      } else {
        checks.push({
          check: "key",
          ok: true,
          detail: `${join(dataDir, KEY_FILE)} present (the store has no key check yet)`,
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
