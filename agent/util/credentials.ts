import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { CodedError } from "./errors.js";

/**
 * systemd credentials (docs/operations.md, "Keys as systemd credentials"). A unit's
 * `LoadCredentialEncrypted=NAME:/etc/kiosk-agent/credstore.encrypted/FILE.cred` makes systemd decrypt
 * the file (with the TPM2, the host key, or both: `systemd-creds encrypt --with-key=…`) when the
 * service starts and hand it to the service, and to nobody else, as `$CREDENTIALS_DIRECTORY/NAME`:
 * a read-only file on a non-swappable in-memory file system, owned by the service user. The key is
 * never on a disk in clear, and a copy of the disk (or of /etc) is no use without the machine.
 */
export class CredentialError extends CodedError<"CREDENTIAL_MISSING" | "CREDENTIAL_UNREADABLE"> {}

/** The data key's credential, and the encrypted file the shipped unit loads it from (deploy/kiosk-agent.service). */
export const DATA_KEY_CREDENTIAL = "kiosk-agent-data-key";
export const DATA_KEY_CREDENTIAL_FILE = "/etc/kiosk-agent/credstore.encrypted/data.key.cred";

/** A credential name as systemd accepts it (no `/`, not `.` or `..`). */
export const CREDENTIAL_NAME = /^(?!\.{1,2}$)[A-Za-z0-9_.@-]{1,255}$/;

/** Where systemd put the credentials of this service, if it runs under a unit that has any. */
export function credentialsDirectory(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const dir = env.CREDENTIALS_DIRECTORY;
  return dir && dir.length > 0 ? dir : undefined;
}

/**
 * The bytes of credential `name`, as systemd passed it. `configKey` names the setting that asked for
 * it, so a refusal is one line that says what to fix. Never echoes the content.
 */
export function readCredential(
  name: string,
  configKey: string,
  env: NodeJS.ProcessEnv = process.env,
): Buffer {
  const dir = credentialsDirectory(env);
  if (!dir) {
    throw new CredentialError(
      "CREDENTIAL_MISSING",
      `${configKey}: credential ${name} was not passed to the agent ($CREDENTIALS_DIRECTORY is not set): start it from the systemd unit, which has LoadCredentialEncrypted=${name}:… (docs/operations.md, "Keys as systemd credentials")`,
    );
  }
  const file = join(dir, name);
  if (!existsSync(file)) {
    throw new CredentialError(
      "CREDENTIAL_MISSING",
      `${configKey}: credential ${name} is not in ${dir}: add LoadCredentialEncrypted=${name}:/etc/kiosk-agent/credstore.encrypted/… to the unit (docs/operations.md, "Keys as systemd credentials")`,
    );
  }
  try {
    return readFileSync(file);
  } catch (err) {
    throw new CredentialError(
      "CREDENTIAL_UNREADABLE",
      `${configKey}: cannot read credential ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
}
