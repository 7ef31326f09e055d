import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, renameSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import Database from "better-sqlite3";
import { fsyncDirectory, fsyncPath } from "../util/durable-file.js";
import { CodedError } from "../util/errors.js";
import { agentPidState } from "../util/pid-file.js";
import { checkDataDir, STORE_FILE } from "./data-dir.js";
import {
  type DataKeyConfig,
  type KeySlot,
  keyOpensStore,
  parseDataKey,
  resolveStagedKey,
  STAGED_SUFFIX,
} from "./data-key.js";
import { SealedBox } from "./sealed-box.js";

/**
 * Data key rotation (`kiosk-agent store rekey`; docs/operations.md, "Rotating the data key").
 *
 * Order, so that at every instant one key that is on disk opens the store:
 *   1. the new key is staged beside the current one, durably (FILE.next, or CRED.next);
 *   2. one transaction re-seals every pending job's production data and store_meta.key_check with
 *      the new key (synchronous=FULL: committed means on disk);
 *   3. the staged key is renamed over the current one, and the directory fsynced.
 * A crash before 2 commits leaves the old key opening the store (the staged one is dropped later); a
 * crash between 2 and 3 leaves the staged key opening it (it is moved into place later): by the
 * agent's next start for a file key, by running `store rekey` again for a credential (the service
 * cannot decrypt a credential file itself). A key that opens the store is never removed.
 */
export class RekeyError extends CodedError<
  "AGENT_RUNNING" | "NO_STORE" | "KEY_MISMATCH" | "SEALED_DATA_CORRUPT" | "CREDENTIAL_TOOL_FAILED"
> {}

/**
 * A systemd credential file (`dataKey.credentialFile`), read and written with `systemd-creds`, which
 * needs root (the host key, /var/lib/systemd/credential.secret, and the TPM2 are root's).
 */
export function credentialKeySlot(options: {
  file: string;
  name: string;
  withKey: DataKeyConfig["withKey"];
  /** The systemd-creds binary. */
  tool?: string;
  env?: NodeJS.ProcessEnv;
}): KeySlot {
  const { file, name } = options;
  const staged = `${file}${STAGED_SUFFIX}`;
  const tool = options.tool ?? "systemd-creds";
  const run = (args: string[], path: string, input?: Buffer): Buffer => {
    const r = spawnSync(tool, args, {
      ...(input ? { input } : {}),
      env: options.env ?? process.env,
      maxBuffer: 1024 * 1024,
    });
    if (r.error || r.status !== 0) {
      const why = r.error
        ? ((r.error as NodeJS.ErrnoException).code ?? r.error.message)
        : `exit ${r.status}: ${String(r.stderr).trim().split("\n").at(-1) ?? ""}`;
      throw new RekeyError(
        "CREDENTIAL_TOOL_FAILED",
        `${tool} ${args[0]} ${path} failed (${why}): run it as root, on the kiosk the credential was made for`,
      );
    }
    return r.stdout;
  };
  const decrypt = (path: string): Buffer =>
    parseDataKey(run(["decrypt", `--name=${name}`, path, "-"], path), `credential ${name} (${path})`);
  return {
    describe: `credential ${name} (${file})`,
    finishedAtStart: false,
    read: () => decrypt(file),
    hasStaged: () => existsSync(staged),
    readStaged: () => decrypt(staged),
    stage(key) {
      rmSync(staged, { force: true });
      run(
        ["encrypt", `--name=${name}`, `--with-key=${options.withKey}`, "-", staged],
        staged,
        Buffer.from(`${key.toString("base64")}\n`),
      );
      chmodSync(staged, 0o600);
      fsyncPath(staged);
      fsyncDirectory(dirname(staged));
    },
    commit() {
      renameSync(staged, file);
      fsyncDirectory(dirname(file));
    },
    discardStaged() {
      rmSync(staged, { force: true });
      fsyncDirectory(dirname(file));
    },
  };
}

export interface RekeyResult {
  /** Pending jobs whose production data was re-sealed. */
  resealed: number;
  /** What was done about an earlier rotation cut short, if there was one. */
  resumed?: string;
}

/**
 * Re-seals the store in `dataDir` with a new data key (see the file comment). The agent must be
 * stopped: it holds the old key in memory. `onStep` is a test seam (a crash after a step).
 */
export function rekeyStore(
  dataDir: string,
  slot: KeySlot,
  options: { newKey?: Buffer; onStep?: (step: "staged" | "resealed" | "committed") => void } = {},
): RekeyResult {
  const pid = agentPidState(dataDir);
  if (pid.state === "alive") {
    throw new RekeyError(
      "AGENT_RUNNING",
      `the agent (pid ${pid.pid}) is running on ${dataDir}: stop it first (systemctl stop kiosk-agent); it holds the current key`,
    );
  }
  if (checkDataDir(dataDir).fresh) {
    throw new RekeyError(
      "NO_STORE",
      `no store in ${dataDir} yet: nothing is sealed, so there is nothing to re-seal (the agent makes the store with the current key)`,
    );
  }
  const resumed = resolveStagedKey(slot, dataDir);
  const old = slot.read();
  if (keyOpensStore(dataDir, old) === false) {
    throw new RekeyError(
      "KEY_MISMATCH",
      `${slot.describe} does not open the store in ${dataDir}: it is not this store's key; nothing was changed`,
    );
  }
  const next = options.newKey ?? randomBytes(32);
  slot.stage(next);
  options.onStep?.("staged");
  let resealed: number;
  try {
    resealed = resealStore(join(dataDir, STORE_FILE), old, next);
  } catch (err) {
    // Not committed (or, after an I/O error at COMMIT, perhaps committed): keep the key that opens it.
    if (keyOpensStore(dataDir, next) === true) slot.commit();
    else slot.discardStaged();
    throw err;
  }
  options.onStep?.("resealed");
  slot.commit();
  options.onStep?.("committed");
  return { resealed, ...(resumed ? { resumed } : {}) };
}

/** One transaction: key_check and every sealed job from `oldKey` to `newKey`. Returns the jobs re-sealed. */
function resealStore(file: string, oldKey: Buffer, newKey: Buffer): number {
  const db = new Database(file, { fileMustExist: true });
  try {
    db.pragma("busy_timeout = 5000");
    db.pragma("synchronous = FULL");
    // The old ciphertexts are overwritten, not just unlinked (as the agent's store does).
    db.pragma("secure_delete = ON");
    const from = new SealedBox(oldKey);
    const to = new SealedBox(newKey);
    const count = db
      .transaction((): number => {
        const meta = db.prepare("SELECT store_id, key_check FROM store_meta WHERE id = 1").get() as
          | { store_id: string; key_check: Buffer }
          | undefined;
        if (!meta) {
          throw new RekeyError(
            "NO_STORE",
            `${file} has no key check yet (a store from before kiosk-agent's migration 6): start the agent once, then rotate`,
          );
        }
        let check: string;
        try {
          check = from.open(meta.key_check, meta.store_id);
        } catch {
          throw new RekeyError(
            "KEY_MISMATCH",
            `the current data key does not open ${file}; nothing was changed`,
          );
        }
        db.prepare("UPDATE store_meta SET key_check = ? WHERE id = 1").run(to.seal(check, meta.store_id));
        const rows = db
          .prepare("SELECT operation_id, sealed_job FROM jobs WHERE sealed_job IS NOT NULL")
          .all() as Array<{ operation_id: string; sealed_job: Buffer }>;
        const update = db.prepare("UPDATE jobs SET sealed_job = ? WHERE operation_id = ?");
        for (const row of rows) {
          let plain: string;
          try {
            plain = from.open(row.sealed_job, row.operation_id);
          } catch {
            throw new RekeyError(
              "SEALED_DATA_CORRUPT",
              `job ${row.operation_id}: its sealed production data does not open with the current key; nothing was changed (cancel the job with D1, then rotate)`,
            );
          }
          update.run(to.seal(plain, row.operation_id), row.operation_id);
        }
        return rows.length;
      })
      .immediate();
    try {
      // No frame of the old ciphertexts is left in the log (a reader holding it: the close does it).
      db.pragma("wal_checkpoint(TRUNCATE)");
    } catch {
      // committed either way
    }
    return count;
  } finally {
    db.close();
  }
}
