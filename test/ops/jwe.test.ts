import { generateKeyPairSync } from "node:crypto";
import { chmodSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { keysCommand } from "../../agent/cli/keys.js";
import {
  encryptProductionData,
  type GeneratedKeyPair,
  generateStationKeyPair,
  loadPublicKey,
  loadStationPrivateKey,
  openPayload,
} from "../../agent/crypto/jwe.js";
import { type OpsRig, sampleJob, startOpsRig } from "./rig.js";
import { cardSecrets, scanText, tempDir } from "./support.js";

describe("kiosk-agent keys generate", () => {
  const dirs: Array<() => void> = [];
  afterEach(() => {
    vi.restoreAllMocks();
    for (const r of dirs.splice(0)) r();
  });
  const run = async (argv: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    vi.spyOn(console, "log").mockImplementation((l: string) => void out.push(l));
    vi.spyOn(console, "error").mockImplementation((l: string) => void err.push(l));
    const code = await keysCommand(argv);
    vi.restoreAllMocks();
    return { code, out: out.join("\n"), err: err.join("\n") };
  };

  it("makes a P-256 key pair: private key 0600, public key as PEM and JWK with its kid", async () => {
    const { dir, remove } = tempDir("kiosk-keys-");
    dirs.push(remove);
    const out = join(dir, "keys");
    const result = await run(["generate", "--out", out]);
    expect(result.code).toBe(0);
    expect(statSync(join(out, "station-jwe.key")).mode & 0o777).toBe(0o600);
    const jwk = JSON.parse(readFileSync(join(out, "station-jwe.pub.jwk.json"), "utf8"));
    expect(jwk).toMatchObject({ kty: "EC", crv: "P-256", use: "enc", alg: "ECDH-ES+A256KW" });
    expect(jwk.d).toBeUndefined();
    expect(result.out).toContain(`kid:         ${jwk.kid}`);
    expect(loadStationPrivateKey(join(out, "station-jwe.key")).asymmetricKeyDetails?.namedCurve).toBe(
      "prime256v1",
    );

    // Never silently replaced.
    const again = await run(["generate", "--out", out]);
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/exists; pass --force/);
    expect((await run(["generate", "--out", out, "--force"])).code).toBe(0);
    expect((await run(["generate"])).code).toBe(2);
  });

  it("a private key other users can read is refused with the config key's name", async () => {
    const { dir, remove } = tempDir("kiosk-keys-");
    dirs.push(remove);
    const made = await generateStationKeyPair(dir);
    chmodSync(made.privateKeyFile, 0o640);
    expect(() => loadStationPrivateKey(made.privateKeyFile)).toThrow(
      /^jwe\.privateKeyFile: .* must be mode 0600 \(is 640\)$/,
    );
  });
});

describe("encrypted production data (JWE) end to end", () => {
  let keys: GeneratedKeyPair;
  let removeKeys: () => void;
  let rig: OpsRig | undefined;
  beforeAll(async () => {
    const t = tempDir("kiosk-jwe-");
    removeKeys = t.remove;
    keys = await generateStationKeyPair(t.dir);
  });
  afterAll(() => removeKeys());
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  const terminal = (r: OpsRig, id: string) =>
    r.emulator.waitFor(() => r.emulator.terminalCount(id) > 0, 10_000);

  it("D1 encrypts to the station key: the card is produced; a tampered or misdirected payload ends as DATA_EXCEPTION", async () => {
    rig = await startOpsRig({
      emulator: { stationPublicKey: loadPublicKey(keys.publicKeyFile) },
      config: { jwe: { privateKeyFile: keys.privateKeyFile } },
    });
    const r = rig;
    const pub = loadPublicKey(keys.publicKeyFile);

    // 1. The emulator encrypts every push (as D1 would).
    const good = sampleJob();
    expect(await r.emulator.push(good)).toMatchObject({ result: "accepted", operationId: good.operationId });

    // 2. Tampered: one character of the ciphertext changed.
    const tampered = sampleJob();
    const jwe = await encryptProductionData(tampered.productionData, tampered.operationId, pub);
    const parts = jwe.split(".");
    parts[3] = `${parts[3]!.startsWith("A") ? "B" : "A"}${parts[3]!.slice(1)}`;
    expect(
      await r.emulator.push({ ...tampered, productionData: parts.join(".") }, { encrypt: false }),
    ).toMatchObject({ result: "accepted" });

    // 3. A genuine payload of another job moved onto this one.
    const moved = sampleJob();
    const other = await encryptProductionData(moved.productionData, "some-other-operation", pub);
    await r.emulator.push({ ...moved, productionData: other }, { encrypt: false });

    // 4. Encrypted to another station's key.
    const foreign = sampleJob();
    const { publicKey: foreignKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const toOther = await encryptProductionData(foreign.productionData, foreign.operationId, foreignKey);
    await r.emulator.push({ ...foreign, productionData: toOther }, { encrypt: false });

    // 5. Plain production data is still accepted while jwe.required is false.
    const plain = sampleJob();
    await r.emulator.push(plain, { encrypt: false });

    for (const j of [good, tampered, moved, foreign, plain]) await terminal(r, j.operationId);
    expect(r.emulator.latest(good.operationId)?.details.status).toBe("CARD_PROD_DONE");
    expect(r.emulator.latest(plain.operationId)?.details.status).toBe("CARD_PROD_DONE");
    const exception = (reason: string) => ({
      status: "FAILED",
      details: { status: "DATA_EXCEPTION", reason },
      errorCode: reason,
      error: "productionData",
    });
    expect(r.emulator.latest(tampered.operationId)).toMatchObject(exception("DECRYPTION_FAILED"));
    expect(r.emulator.latest(moved.operationId)).toMatchObject(exception("PAYLOAD_MISMATCH"));
    expect(r.emulator.latest(foreign.operationId)).toMatchObject(exception("DECRYPTION_FAILED"));
    expect(r.printer.record.map((c) => c.outcome)).toEqual(["taken", "taken"]);
    expect(r.emulator.violations).toEqual([]);

    // Neither the plaintext nor the JWE is logged.
    const secrets = cardSecrets([good, tampered, moved, foreign, plain]);
    const log = r.log.text();
    expect(secrets.long.filter((s) => log.includes(s))).toEqual([]);
    expect(scanText(log, secrets.short)).toEqual([]);
    expect(log).not.toContain(parts[3]!.slice(0, 40));
  });

  it("pushes stay in order: a plain push right after an encrypted one is produced after it", async () => {
    rig = await startOpsRig({ config: { jwe: { privateKeyFile: keys.privateKeyFile } } });
    const r = rig;
    const pub = loadPublicKey(keys.publicKeyFile);
    const first = sampleJob();
    const second = sampleJob();
    const encrypted = {
      ...first,
      productionData: await encryptProductionData(first.productionData, first.operationId, pub),
    };
    const answers = await Promise.all([r.emulator.push(encrypted), r.emulator.push(second)]);
    expect(answers.map((a) => a.operationId)).toEqual([first.operationId, second.operationId]);
    await terminal(r, second.operationId);
    const done = r.emulator
      .operations()
      .filter((o) => o.details.status === "CARD_PROD_DONE")
      .map((o) => o.operationId);
    expect(done).toEqual([first.operationId, second.operationId]);
  });

  it("without a station key, or with jwe.required and plain data: DATA_EXCEPTION saying why; header errors still win", async () => {
    rig = await startOpsRig({ config: { jwe: { required: true } } });
    const r = rig;
    const pub = loadPublicKey(keys.publicKeyFile);
    const encrypted = sampleJob();
    encrypted.productionData = await encryptProductionData(
      encrypted.productionData,
      encrypted.operationId,
      pub,
    );
    const plain = sampleJob();
    const wrongStation = sampleJob({ persoStation: "KIOSK-PS-999" });
    wrongStation.productionData = "not.even.a.jwe";
    for (const j of [encrypted, plain, wrongStation]) await r.emulator.push(j);
    for (const j of [encrypted, plain, wrongStation]) await terminal(r, j.operationId);
    expect(r.emulator.latest(encrypted.operationId)?.details).toEqual({
      status: "DATA_EXCEPTION",
      reason: "NO_STATION_KEY",
    });
    expect(r.emulator.latest(plain.operationId)?.details).toEqual({
      status: "DATA_EXCEPTION",
      reason: "ENCRYPTION_REQUIRED",
    });
    expect(r.emulator.latest(wrongStation.operationId)?.details).toEqual({
      status: "DATA_EXCEPTION",
      reason: "WRONG_SATELLITEUID",
    });
    expect(r.printer.record).toEqual([]);
  });

  it("openPayload: plaintext is a JSON object or the job fails; the JWE never stays on the job", async () => {
    const key = loadStationPrivateKey(keys.privateKeyFile);
    const pub = loadPublicKey(keys.publicKeyFile);
    const job = sampleJob();
    const jwe = await encryptProductionData(job.productionData, job.operationId, pub);
    const opened = await openPayload({ ...job, productionData: jwe }, key);
    expect(opened).toEqual({ job });
    const list = await encryptProductionData([1, 2], job.operationId, pub);
    const failed = await openPayload({ ...job, productionData: list }, key);
    expect(failed.failure).toBe("PAYLOAD_NOT_JSON");
    expect(failed.job).not.toHaveProperty("productionData");
    expect((await openPayload({ ...job, productionData: "x".repeat(2_000_000) }, key)).failure).toBe(
      "DECRYPTION_FAILED",
    );
  });
});
