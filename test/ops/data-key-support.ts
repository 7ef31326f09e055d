import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach } from "vitest";
import { storeCommand } from "../../agent/cli/store.js";
import { validateJob } from "../../agent/jobs/validate.js";
import { checkDataDir, KEY_FILE, STORE_FILE, writeMarker } from "../../agent/store/data-dir.js";
import { JobStore } from "../../agent/store/job-store.js";
import { loadOrCreateKey, SealedBox } from "../../agent/store/sealed-box.js";
import { systemClock } from "../../agent/util/clock.js";
import { mkdirDurably } from "../../agent/util/durable-file.js";
import { type OpsRig, STATION, sampleJob } from "./rig.js";
import { tempDir } from "./support.js";

/**
 * Shared by the data key tests (issue 14, finding 2). Only modules that existed before the finding
 * was fixed are imported here, so the tests built on it fail by their assertions on the old code.
 */
export const DATA_KEY_NAME = "kiosk-agent-data-key";
export const HAS_SYSTEMD_CREDS = spawnSync("systemd-creds", ["--version"]).status === 0;

/** A fresh temporary directory per test, and the environment variables the tests set put back. */
export function dataKeyTestDir(): { readonly dir: string } {
  const saved = { ...process.env };
  let root: { dir: string; remove: () => void } | undefined;
  beforeEach(() => {
    root = tempDir("kiosk-datakey-");
  });
  afterEach(() => {
    for (const k of ["CREDENTIALS_DIRECTORY", "SYSTEMD_CREDENTIAL_SECRET", "INVOCATION_ID"]) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    root?.remove();
  });
  return {
    get dir() {
      return root!.dir;
    },
  };
}

/** A credentials directory as systemd makes it: one file per credential, 0400. */
export function credentialsDir(parent: string, entries: Record<string, Buffer | string>): string {
  const dir = join(parent, `credentials-${randomBytes(3).toString("hex")}`);
  mkdirSync(dir, { mode: 0o700 });
  for (const [name, content] of Object.entries(entries)) {
    writeFileSync(join(dir, name), content, { mode: 0o400 });
  }
  return dir;
}

/** A data directory whose store holds `n` accepted, valid jobs sealed with `key` (or DATA_DIR/data.key). */
export function storeWithPendingJobs(dataDir: string, n: number, key?: Buffer): string[] {
  mkdirDurably(dataDir);
  const state = checkDataDir(dataDir);
  const box = new SealedBox(key ?? loadOrCreateKey(join(dataDir, KEY_FILE), { create: state.fresh }));
  const store = new JobStore(join(dataDir, STORE_FILE), box, systemClock);
  writeMarker(dataDir, store.storeId);
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const verdict = validateJob(sampleJob(), STATION);
    if (verdict.kind !== "valid") throw new Error("sample job not valid");
    const job = verdict.job;
    store.accept({
      kind: "valid",
      operationId: job.operationId,
      cardId: job.cardId,
      jobJson: JSON.stringify(job),
      ...(job.productionData.cardStock ? { cardStock: job.productionData.cardStock } : {}),
    });
    ids.push(job.operationId);
  }
  store.close();
  return ids;
}

/** Whether `key` opens the store's sealed key check (read from a copy of the store's files). */
export function keyOpens(dataDir: string, key: Buffer): boolean {
  const copy = mkdtempSync(join(tmpdir(), "kiosk-keycheck-"));
  try {
    copyFileSync(join(dataDir, STORE_FILE), join(copy, STORE_FILE));
    if (existsSync(join(dataDir, `${STORE_FILE}-wal`))) {
      copyFileSync(join(dataDir, `${STORE_FILE}-wal`), join(copy, `${STORE_FILE}-wal`));
    }
    const db = new Database(join(copy, STORE_FILE));
    try {
      const meta = db.prepare("SELECT store_id, key_check FROM store_meta WHERE id = 1").get() as {
        store_id: string;
        key_check: Buffer;
      };
      new SealedBox(key).open(meta.key_check, meta.store_id);
      return true;
    } catch {
      return false;
    } finally {
      db.close();
    }
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
}

export function sealedBlobs(dataDir: string): Buffer[] {
  const db = new Database(join(dataDir, STORE_FILE), { readonly: true });
  try {
    return (
      db.prepare("SELECT sealed_job FROM jobs WHERE sealed_job IS NOT NULL").all() as Array<{
        sealed_job: Buffer;
      }>
    ).map((r) => r.sealed_job);
  } finally {
    db.close();
  }
}

/** The final D1 status of each job, once all of them ended. */
export async function produced(rig: OpsRig, ids: string[]): Promise<string[]> {
  await rig.emulator.waitFor(
    () => ids.every((id) => rig.emulator.terminalCount(id) > 0),
    15_000,
    "every job",
  );
  return ids.map((id) => rig.emulator.latest(id)?.details.status ?? "none");
}

/** `kiosk-agent store …` in-process, its output kept. */
export async function storeCli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await storeCommand(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** Encrypts `key` (base64) as a credential file with systemd-creds and the host key. */
export function encryptCredential(file: string, key: Buffer): void {
  const r = spawnSync("systemd-creds", ["encrypt", `--name=${DATA_KEY_NAME}`, "--with-key=host", "-", file], {
    input: `${key.toString("base64")}\n`,
  });
  if (r.status !== 0) throw new Error(`systemd-creds encrypt: ${String(r.stderr)}`);
}

/** What systemd does at the service's start: decrypts the credential file into a credentials directory. */
export function decryptAsServiceStart(parent: string, credFile: string): string {
  const creds = credentialsDir(parent, {});
  const r = spawnSync("systemd-creds", [
    "decrypt",
    `--name=${DATA_KEY_NAME}`,
    credFile,
    join(creds, DATA_KEY_NAME),
  ]);
  if (r.status !== 0) throw new Error(`systemd-creds decrypt: ${String(r.stderr)}`);
  return creds;
}

/** The key a credential file holds (systemd-creds decrypt, as root). */
export function decryptCredential(credFile: string): Buffer {
  const r = spawnSync("systemd-creds", ["decrypt", `--name=${DATA_KEY_NAME}`, credFile, "-"]);
  if (r.status !== 0) throw new Error(`systemd-creds decrypt: ${String(r.stderr)}`);
  return Buffer.from(String(r.stdout).trim(), "base64");
}
