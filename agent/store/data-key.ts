import { chmodSync, existsSync, renameSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { credentialsDirectory, readCredential } from "../util/credentials.js";
import { fsyncDirectory, writeFileDurably } from "../util/durable-file.js";
import { CodedError } from "../util/errors.js";
import { inspectCopy, KEY_FILE } from "./data-dir.js";
import { loadOrCreateKey, SealedBox } from "./sealed-box.js";

/**
 * Where the data key (AES-256 for production data at rest, agent/store/sealed-box.ts) comes from
 * (docs/operations.md, "Keys as systemd credentials"; docs/security.md):
 *
 * - `credential`: a systemd credential the unit decrypts at start (`LoadCredentialEncrypted=`), bound
 *   to the kiosk's TPM2 or its host key: the key is never on the disk in clear, and never beside the
 *   store. The agent never makes it: the installer does, once (`systemd-creds encrypt`).
 * - `file`: `DATA_DIR/data.key` (or `dataKey.file`), 32 random bytes made on the first start, 0600.
 *
 * Without `dataKey.source` the agent takes the credential when it runs under a systemd unit that
 * passes credentials ($CREDENTIALS_DIRECTORY is set, as the shipped unit does) and the file otherwise
 * (the demo, tests, a start by hand, and installs whose unit predates the credential). Under such a
 * unit a file key is used only with `dataKey.source: "file"`: a missing credential is KEY_MISSING,
 * never a silent fall-back to a key beside the data.
 */
export interface DataKeyConfig {
  source?: "file" | "credential" | undefined;
  /** `file`: the key file; default DATA_DIR/data.key. */
  file?: string | undefined;
  /** `credential`: its name (the part before `:` in LoadCredentialEncrypted=). */
  credential: string;
  /** `credential`: the encrypted file the unit loads; `store rekey` and `store check` (as root) use it. */
  credentialFile: string;
  /** `credential`: what `store rekey` binds a new key to (`systemd-creds encrypt --with-key=`). */
  withKey: "auto" | "host" | "tpm2" | "host+tpm2";
}

export { DATA_KEY_CREDENTIAL, DATA_KEY_CREDENTIAL_FILE } from "../util/credentials.js";
/** A new key staged by `store rekey` beside the current one, until the store is re-sealed with it. */
export const STAGED_SUFFIX = ".next";

export class DataKeyError extends CodedError<"KEY_MISSING" | "BAD_KEY" | "KEY_MISMATCH"> {}

export type DataKeySource = "file" | "credential";

/** The source in force: the configured one, else the credential under a unit that passes credentials. */
export function dataKeySource(config: DataKeyConfig, env: NodeJS.ProcessEnv = process.env): DataKeySource {
  return config.source ?? (credentialsDirectory(env) ? "credential" : "file");
}

export function dataKeyFile(config: DataKeyConfig, dataDir: string): string {
  return config.file ?? join(dataDir, KEY_FILE);
}

export interface LoadedDataKey {
  key: Buffer;
  source: DataKeySource;
  /** The key file, or `credential NAME`: for log lines and messages. */
  where: string;
  /** Things to tell the operator at start (a key file left beside the store, a finished rotation). */
  notes: string[];
}

/**
 * The data key for `dataDir`. `fresh`: no store exists yet, so a file key may be made (a credential
 * never is). A missing key beside a store sealed with it is KEY_MISSING, a damaged one BAD_KEY; a key
 * that is another store's is refused by the store itself (KEY_MISMATCH). A rotation cut short by a
 * crash (`store rekey`, file key) is finished first: the staged key is kept if the store is sealed
 * with it, dropped if not.
 */
export function loadDataKey(
  config: DataKeyConfig,
  dataDir: string,
  options: { fresh: boolean; env?: NodeJS.ProcessEnv },
): LoadedDataKey {
  const env = options.env ?? process.env;
  const source = dataKeySource(config, env);
  const notes: string[] = [];
  if (source === "credential") {
    let bytes: Buffer;
    try {
      bytes = readCredential(config.credential, "dataKey.credential", env);
    } catch (err) {
      throw new DataKeyError(
        "KEY_MISSING",
        `${(err as Error).message}${options.fresh ? "" : "; this data directory holds a store sealed with that key (a new key cannot open the pending jobs)"}`,
      );
    }
    const key = parseDataKey(bytes, `credential ${config.credential}`);
    const leftover = join(dataDir, KEY_FILE);
    if (existsSync(leftover)) {
      notes.push(
        `${leftover} is still beside the store although the data key comes from credential ${config.credential}: once the credential is known to open the store, remove the file (shred -u ${leftover})`,
      );
    }
    return { key, source, where: `credential ${config.credential}`, notes };
  }
  const file = dataKeyFile(config, dataDir);
  if (config.source === undefined && env.INVOCATION_ID) {
    notes.push(
      `the data key is the plain file ${file} beside the store: this unit passes no credentials; load it as the credential ${config.credential} (docs/operations.md, "Keys as systemd credentials"), or set dataKey.source: "file" to keep the file on purpose`,
    );
  }
  if (!options.fresh) {
    const resumed = resolveStagedKey(fileKeySlot(file), dataDir);
    if (resumed) notes.push(resumed);
  }
  return { key: loadOrCreateKey(file, { create: options.fresh }), source, where: file, notes };
}

/** 32 raw bytes, or their base64 (what data.key holds; `openssl rand -base64 32`). */
export function parseDataKey(bytes: Buffer, what: string): Buffer {
  if (bytes.length === 32) return Buffer.from(bytes);
  const text = bytes.toString("utf8").trim();
  const key = /^[A-Za-z0-9+/]{43}=$/.test(text) ? Buffer.from(text, "base64") : Buffer.alloc(0);
  if (key.length !== 32) {
    throw new DataKeyError(
      "BAD_KEY",
      `data key ${what} does not hold 32 bytes (raw, or base64 as \`openssl rand -base64 32\` makes): restore it from its backup`,
    );
  }
  return key;
}

/**
 * Whether `key` opens the store's sealed check value (store_meta.key_check), read from a copy of the
 * store: true / false, or undefined when the store has no check value yet.
 */
export function keyOpensStore(dataDir: string, key: Buffer): boolean | undefined {
  let verdict: boolean | undefined;
  inspectCopy(dataDir, (db) => {
    const meta = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'").get()
      ? (db.prepare("SELECT store_id, key_check FROM store_meta WHERE id = 1").get() as
          | { store_id: string; key_check: Buffer }
          | undefined)
      : undefined;
    if (!meta) return;
    try {
      new SealedBox(key).open(meta.key_check, meta.store_id);
      verdict = true;
    } catch {
      verdict = false;
    }
  });
  return verdict;
}

/** Where a data key lives, with room for a staged successor (agent/store/key-rotation.ts). */
export interface KeySlot {
  /** For messages: the file, or the credential and its encrypted file. */
  readonly describe: string;
  /**
   * Whether the agent's start finishes a rotation cut short by itself (a file key: it can read the
   * staged key). A credential's staged file needs `store rekey` again, as root.
   */
  readonly finishedAtStart: boolean;
  /** The current key; throws when it is missing or damaged. */
  read(): Buffer;
  hasStaged(): boolean;
  /** The staged key; throws when it cannot be read. */
  readStaged(): Buffer;
  /** Writes `key` as the staged key, durably, replacing a staged one. */
  stage(key: Buffer): void;
  /** Moves the staged key over the current one, durably. */
  commit(): void;
  discardStaged(): void;
}

/** `DATA_DIR/data.key` (or `dataKey.file`): base64 text, mode 0600. */
export function fileKeySlot(file: string): KeySlot {
  const staged = `${file}${STAGED_SUFFIX}`;
  return {
    describe: file,
    finishedAtStart: true,
    read: () => loadOrCreateKey(file, { create: false }),
    hasStaged: () => existsSync(staged),
    readStaged: () => loadOrCreateKey(staged, { create: false }),
    stage(key) {
      rmSync(staged, { force: true });
      writeFileDurably(staged, key.toString("base64"), { mode: 0o600, exclusive: true });
      chmodSync(staged, 0o600);
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

/**
 * A rotation cut short (`store rekey`): keeps whichever key opens the store. The current key opens
 * it: the staged one is dropped (the store was not re-sealed with it). Else the staged one opens it:
 * it is moved into place (the store was). Neither: both are left as they are, KEY_MISMATCH. A key
 * that opens the store is never removed. Returns what was done, if there was a staged key.
 */
export function resolveStagedKey(slot: KeySlot, dataDir: string): string | undefined {
  if (!slot.hasStaged()) return undefined;
  let current: Buffer | undefined;
  try {
    current = slot.read();
  } catch {
    current = undefined;
  }
  if (current && keyOpensStore(dataDir, current) !== false) {
    slot.discardStaged();
    return `a data key rotation was cut short before the store was re-sealed: the staged key was dropped, ${slot.describe} stays`;
  }
  const staged = slot.readStaged();
  if (keyOpensStore(dataDir, staged) === true) {
    slot.commit();
    return `a data key rotation was cut short after the store was re-sealed: the new key is now ${slot.describe}`;
  }
  throw new DataKeyError(
    "KEY_MISMATCH",
    `neither ${slot.describe} nor its staged successor opens the store in ${dataDir}: restore this store's data key from its backup`,
  );
}
