import { generateStationKeyPair, KeyFileError } from "../crypto/jwe.js";
import { parseOrExitCode } from "./args.js";

const HELP = `Usage: kiosk-agent keys generate --out DIR [--force]

Makes the station's key pair for encrypted job payloads (JWE ECDH-ES+A256KW / A256GCM, EC P-256):
  DIR/station-jwe.key           private key (PKCS#8 PEM, mode 0600): set jwe.privateKeyFile to it
  DIR/station-jwe.pub.pem       public key (SPKI PEM), for D1
  DIR/station-jwe.pub.jwk.json  public key as JWK with its kid (RFC 7638 thumbprint), for D1
An existing private key is never replaced without --force. See docs/security.md.`;

export async function keysCommand(argv: string[]): Promise<number> {
  const parsed = parseOrExitCode(
    argv,
    { out: { type: "string", short: "o" }, force: { type: "boolean" } },
    HELP,
    { allowPositionals: true },
  );
  if (typeof parsed === "number") return parsed;
  const [sub, ...extra] = parsed.positionals;
  const out = parsed.values.out;
  if (sub !== "generate" || extra.length > 0 || typeof out !== "string" || out === "") {
    console.error(HELP);
    return 2;
  }
  try {
    const made = await generateStationKeyPair(out, { force: parsed.values.force === true });
    console.log(`private key: ${made.privateKeyFile} (0600; keep it on this kiosk only)`);
    console.log(`public key:  ${made.publicKeyFile}`);
    console.log(`public JWK:  ${made.publicJwkFile}`);
    console.log(`kid:         ${made.kid}`);
    return 0;
  } catch (err) {
    if (err instanceof KeyFileError) {
      console.error(`kiosk-agent keys: ${err.message}`);
      return 1;
    }
    throw err;
  }
}
