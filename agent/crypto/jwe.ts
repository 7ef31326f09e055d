import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { CompactEncrypt, calculateJwkThumbprint, compactDecrypt, exportJWK } from "jose";
import { readCredential } from "../util/credentials.js";
import { mkdirDurably, writeFileDurably } from "../util/durable-file.js";
import { CodedError } from "../util/errors.js";

/**
 * Encrypted production data (docs/protocol.md#encrypted-production-data, docs/security.md).
 *
 * D1 may send a job's `productionData` as a JWE compact string encrypted to the station's public key:
 * `alg` ECDH-ES+A256KW (P-256), `enc` A256GCM, and the job's `operationId` in the protected header
 * (it is authenticated with the content, so a payload cannot be moved onto another job). The agent
 * decrypts in memory, before validation; the plaintext is then handled like any pushed job (sealed
 * at rest, purged when the job ends) and never logged.
 */

export const JWE_ALG = "ECDH-ES+A256KW";
export const JWE_ENC = "A256GCM";
/** A JWE bigger than this is not decrypted (a production job is a few kB). */
export const MAX_JWE_LENGTH = 1_000_000;

export type PayloadFailureCode =
  /** Not a JWE we accept: bad form, wrong algorithm, tampered, or encrypted to another key. */
  | "DECRYPTION_FAILED"
  /** A JWE arrived but this station has no private key configured (`jwe.privateKeyFile`). */
  | "NO_STATION_KEY"
  /** The protected header names another operationId (or none). */
  | "PAYLOAD_MISMATCH"
  /** Decrypted, but not a JSON object. */
  | "PAYLOAD_NOT_JSON"
  /** `jwe.required` is set and the job came with plain production data. */
  | "ENCRYPTION_REQUIRED";

export class KeyFileError extends CodedError<"KEY_FILE_PERMISSIONS" | "KEY_FILE_UNREADABLE" | "KEY_EXISTS"> {}

/** True when the job carries its production data as a JWE compact string. */
export function hasEncryptedPayload(job: unknown): boolean {
  return typeof (job as { productionData?: unknown } | null)?.productionData === "string";
}

export type OpenedPayload =
  | { job: unknown; failure?: undefined }
  | { job: unknown; failure: PayloadFailureCode };

/**
 * Replaces a JWE `productionData` with its plaintext object. Plain jobs pass unchanged (or fail with
 * ENCRYPTION_REQUIRED when `required`). On failure the job is returned without production data and
 * the code says why; it never carries key material or plaintext.
 */
export async function openPayload(
  job: unknown,
  key: KeyObject | undefined,
  options: { required?: boolean } = {},
): Promise<OpenedPayload> {
  if (job === null || typeof job !== "object" || Array.isArray(job)) return { job };
  const record = job as Record<string, unknown>;
  const data = record.productionData;
  const without = (failure: PayloadFailureCode): OpenedPayload => {
    const { productionData: _dropped, ...rest } = record;
    return { job: rest, failure };
  };
  if (typeof data !== "string") {
    return options.required && data !== undefined ? without("ENCRYPTION_REQUIRED") : { job };
  }
  if (!key) return without("NO_STATION_KEY");
  if (data.length > MAX_JWE_LENGTH) return without("DECRYPTION_FAILED");
  let plaintext: Uint8Array;
  let header: Record<string, unknown>;
  try {
    const result = await compactDecrypt(data, key, {
      keyManagementAlgorithms: [JWE_ALG],
      contentEncryptionAlgorithms: [JWE_ENC],
    });
    plaintext = result.plaintext;
    header = result.protectedHeader as Record<string, unknown>;
  } catch {
    // jose's messages describe the JWE, not the plaintext; still, none is kept.
    return without("DECRYPTION_FAILED");
  }
  try {
    if (header.operationId !== record.operationId) return without("PAYLOAD_MISMATCH");
    let parsed: unknown;
    try {
      parsed = JSON.parse(new TextDecoder().decode(plaintext));
    } catch {
      return without("PAYLOAD_NOT_JSON");
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed))
      return without("PAYLOAD_NOT_JSON");
    return { job: { ...record, productionData: parsed } };
  } finally {
    plaintext.fill(0);
  }
}

/** What D1 (or the emulator) does: encrypts a job's production data to the station's public key. */
export async function encryptProductionData(
  productionData: unknown,
  operationId: string,
  publicKey: KeyObject,
): Promise<string> {
  const kid = await keyId(publicKey);
  return new CompactEncrypt(new TextEncoder().encode(JSON.stringify(productionData)))
    .setProtectedHeader({ alg: JWE_ALG, enc: JWE_ENC, cty: "json", kid, operationId })
    .encrypt(publicKey);
}

/** The key's RFC 7638 thumbprint: how D1 and the agent name a station key. */
export async function keyId(key: KeyObject): Promise<string> {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  return calculateJwkThumbprint(await exportJWK(pub));
}

/** Reads the station's private key; refuses a file other users can read. */
export function loadStationPrivateKey(file: string): KeyObject {
  let mode: number;
  try {
    mode = statSync(file).mode & 0o777;
  } catch (err) {
    throw new KeyFileError(
      "KEY_FILE_UNREADABLE",
      `jwe.privateKeyFile: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
  if ((mode & 0o077) !== 0) {
    throw new KeyFileError(
      "KEY_FILE_PERMISSIONS",
      `jwe.privateKeyFile: ${file} must be mode 0600 (is ${mode.toString(8)})`,
    );
  }
  try {
    return createPrivateKey(readFileSync(file));
  } catch {
    throw new KeyFileError("KEY_FILE_UNREADABLE", `jwe.privateKeyFile: ${file} is not a PEM private key`);
  }
}

/**
 * The station's private key as configured: `jwe.privateKeyFile`, or `jwe.privateKeyCredential` (a
 * systemd credential the unit decrypts for this service alone); none configured: undefined.
 */
export function loadConfiguredStationKey(
  jwe: { privateKeyFile?: string | undefined; privateKeyCredential?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
): KeyObject | undefined {
  if (jwe.privateKeyFile) return loadStationPrivateKey(jwe.privateKeyFile);
  if (!jwe.privateKeyCredential) return undefined;
  const pem = readCredential(jwe.privateKeyCredential, "jwe.privateKeyCredential", env);
  try {
    return createPrivateKey(pem);
  } catch {
    throw new KeyFileError(
      "KEY_FILE_UNREADABLE",
      `jwe.privateKeyCredential: credential ${jwe.privateKeyCredential} is not a PEM private key`,
    );
  } finally {
    pem.fill(0);
  }
}

export function loadPublicKey(file: string): KeyObject {
  return createPublicKey(readFileSync(file));
}

export interface GeneratedKeyPair {
  privateKeyFile: string;
  publicKeyFile: string;
  publicJwkFile: string;
  kid: string;
}

/**
 * Makes the station key pair (EC P-256) in `dir`: `station-jwe.key` (PKCS#8 PEM, mode 0600),
 * `station-jwe.pub.pem` (SPKI PEM) and `station-jwe.pub.jwk.json` (with `kid`, `use: enc`, `alg`),
 * the two public forms for D1. Refuses to overwrite an existing private key unless `force`.
 */
export async function generateStationKeyPair(
  dir: string,
  options: { force?: boolean } = {},
): Promise<GeneratedKeyPair> {
  mkdirDurably(dir, 0o700);
  const privateKeyFile = join(dir, "station-jwe.key");
  const publicKeyFile = join(dir, "station-jwe.pub.pem");
  const publicJwkFile = join(dir, "station-jwe.pub.jwk.json");
  if (existsSync(privateKeyFile) && !options.force) {
    throw new KeyFileError("KEY_EXISTS", `${privateKeyFile} exists; pass --force to replace it`);
  }
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const kid = await keyId(publicKey);
  const pem = privateKey.export({ type: "pkcs8", format: "pem" }) as string;
  // Durably (temp, fsync, rename, directory fsync): a power cut after `keys generate` must not leave
  // an empty private key whose public half D1 already holds.
  writeFileDurably(privateKeyFile, pem, { mode: 0o600, exclusive: !options.force });
  writeFileDurably(publicKeyFile, publicKey.export({ type: "spki", format: "pem" }) as string, {
    mode: 0o644,
  });
  const jwk = { ...(await exportJWK(publicKey)), kid, use: "enc", alg: JWE_ALG };
  writeFileDurably(publicJwkFile, `${JSON.stringify(jwk, null, 2)}\n`, { mode: 0o644 });
  return { privateKeyFile, publicKeyFile, publicJwkFile, kid };
}
