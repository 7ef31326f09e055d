import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { chmodSync, existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { writeFileDurably } from "../util/durable-file.js";
import { CodedError } from "../util/errors.js";

/**
 * Production data at rest: AES-256-GCM, the operationId as additional data so a sealed payload
 * cannot be swapped onto another job's row. Layout: iv (12) ‖ tag (16) ‖ ciphertext.
 */
export class SealedBox {
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new CodedError("BAD_KEY", "data key must be 32 bytes");
  }

  seal(plaintext: string, aad: string): Buffer {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.key, iv);
    cipher.setAAD(Buffer.from(aad, "utf8"));
    const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]);
  }

  open(sealed: Buffer, aad: string): string {
    if (sealed.length < 28) throw new CodedError("SEALED_DATA_CORRUPT", "sealed payload too short");
    const decipher = createDecipheriv("aes-256-gcm", this.key, sealed.subarray(0, 12));
    decipher.setAAD(Buffer.from(aad, "utf8"));
    decipher.setAuthTag(sealed.subarray(12, 28));
    try {
      return Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()]).toString("utf8");
    } catch (cause) {
      throw new CodedError("SEALED_DATA_CORRUPT", "sealed payload failed authentication", { cause });
    }
  }
}

/**
 * Loads the data key from `file`. With `create` (a data directory whose store does not exist yet:
 * nothing is sealed with any key) a missing or unreadable key file is (re)made: 32 random bytes,
 * mode 0600, written durably. Otherwise a missing or damaged key is refused: a new key beside a
 * store of sealed jobs would turn every pending job into SEALED_DATA_CORRUPT. A key file readable by
 * others is refused: the key protects card data.
 */
export function loadOrCreateKey(file: string, options: { create?: boolean } = {}): Buffer {
  const create = options.create ?? true;
  if (!existsSync(file)) {
    if (!create) {
      throw new CodedError(
        "KEY_MISSING",
        `data key ${file} is missing, but this data directory holds a store sealed with it: restore the key from its backup (a new key cannot open the pending jobs)`,
      );
    }
    writeNewKey(file);
  }
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new CodedError(
      "KEY_FILE_PERMISSIONS",
      `data key file ${file} must be mode 0600 (is ${mode.toString(8)})`,
    );
  }
  let key = Buffer.from(readFileSync(file, "utf8").trim(), "base64");
  if (key.length !== 32 && create) {
    // Nothing is sealed with it yet (a first start cut short before the key reached the disk).
    rmSync(file);
    writeNewKey(file);
    key = Buffer.from(readFileSync(file, "utf8").trim(), "base64");
  }
  if (key.length !== 32) {
    throw new CodedError(
      "BAD_KEY",
      `data key file ${file} does not hold 32 bytes (damaged): restore it from its backup`,
    );
  }
  return key;
}

function writeNewKey(file: string): void {
  writeFileDurably(file, randomBytes(32).toString("base64"), { mode: 0o600, exclusive: true });
  chmodSync(file, 0o600);
}
