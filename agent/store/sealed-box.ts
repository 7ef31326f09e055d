import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
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
 * Loads the data key from `file`, creating it (32 random bytes, mode 0600) on first run. A key file
 * readable by others is refused: the key protects card data.
 */
export function loadOrCreateKey(file: string): Buffer {
  if (!existsSync(file)) {
    writeFileSync(file, randomBytes(32).toString("base64"), { mode: 0o600, flag: "wx" });
    chmodSync(file, 0o600);
  }
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new CodedError(
      "KEY_FILE_PERMISSIONS",
      `data key file ${file} must be mode 0600 (is ${mode.toString(8)})`,
    );
  }
  const key = Buffer.from(readFileSync(file, "utf8").trim(), "base64");
  if (key.length !== 32) throw new CodedError("BAD_KEY", `data key file ${file} does not hold 32 bytes`);
  return key;
}
