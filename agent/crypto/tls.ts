import { readFileSync, statSync } from "node:fs";
import { readCredential } from "../util/credentials.js";
import { CodedError } from "../util/errors.js";

/** The `d1` part of the configuration this module reads. */
export interface D1TlsConfig {
  url: string;
  tls?:
    | { caFile?: string; certFile?: string; keyFile?: string; keyCredential?: string | undefined }
    | undefined;
}

/** What `ws` (and so `tls.connect`) gets for a wss:// link. */
export interface TlsClientOptions {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  /** Always true: D1's certificate chain and host name are verified. */
  rejectUnauthorized: true;
}

export class TlsConfigError extends CodedError<"TLS_FILE_UNREADABLE" | "TLS_KEY_PERMISSIONS"> {}

/**
 * TLS options for the D1 link (docs/security.md#link). For wss:// the server certificate is always
 * verified: against `caFile` when given (a private PKI), else against the system CAs. A client
 * certificate (`certFile` + `keyFile`, or the key as the systemd credential `keyCredential`) makes it
 * mutual TLS. Files are read once, at start; a file that
 * cannot be read stops the start with the key's name. Plain ws:// gets no TLS options (config
 * validation already refused it unless `d1.allowInsecure`).
 */
export function tlsClientOptions(
  d1: D1TlsConfig,
  env: NodeJS.ProcessEnv = process.env,
): TlsClientOptions | undefined {
  if (!d1.url.startsWith("wss:")) return undefined;
  const tls = d1.tls ?? {};
  const options: TlsClientOptions = { rejectUnauthorized: true };
  if (tls.caFile) options.ca = readPem("d1.tls.caFile", tls.caFile);
  if (tls.certFile) options.cert = readPem("d1.tls.certFile", tls.certFile);
  if (tls.keyFile) {
    // The client key proves the kiosk's identity: never readable by every user on the machine.
    const mode = statOrThrow("d1.tls.keyFile", tls.keyFile) & 0o777;
    if ((mode & 0o007) !== 0) {
      throw new TlsConfigError(
        "TLS_KEY_PERMISSIONS",
        `d1.tls.keyFile: ${tls.keyFile} is readable by other users (mode ${mode.toString(8)}); chmod 600 or 640`,
      );
    }
    options.key = readPem("d1.tls.keyFile", tls.keyFile);
  }
  if (tls.keyCredential) {
    // systemd decrypted it for this service alone ($CREDENTIALS_DIRECTORY, mode 0400, in memory).
    const key = readCredential(tls.keyCredential, "d1.tls.keyCredential", env);
    if (!key.includes("-----BEGIN ")) {
      throw new TlsConfigError(
        "TLS_FILE_UNREADABLE",
        `d1.tls.keyCredential: credential ${tls.keyCredential} is not a PEM key`,
      );
    }
    options.key = key;
  }
  return options;
}

function statOrThrow(key: string, file: string): number {
  try {
    return statSync(file).mode;
  } catch (err) {
    throw new TlsConfigError(
      "TLS_FILE_UNREADABLE",
      `${key}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
}

function readPem(key: string, file: string): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new TlsConfigError(
      "TLS_FILE_UNREADABLE",
      `${key}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
  if (!bytes.includes("-----BEGIN ")) {
    throw new TlsConfigError("TLS_FILE_UNREADABLE", `${key}: ${file} is not a PEM file`);
  }
  return bytes;
}
