import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../agent/config/load.js";
import { generateStationKeyPair, loadPublicKey } from "../../agent/crypto/jwe.js";
import { tlsClientOptions } from "../../agent/crypto/tls.js";
import { KEY_FILE, STORE_FILE } from "../../agent/store/data-dir.js";
import { loadOrCreateKey } from "../../agent/store/sealed-box.js";
import {
  credentialsDir,
  DATA_KEY_NAME,
  dataKeyTestDir,
  decryptAsServiceStart,
  decryptCredential,
  encryptCredential,
  HAS_SYSTEMD_CREDS,
  keyOpens,
  produced,
  sealedBlobs,
  storeCli,
  storeWithPendingJobs,
} from "./data-key-support.js";
import { makeTestPki, type OpsRig, STATION, sampleJob, startOpsRig } from "./rig.js";
import { tempDir } from "./support.js";

/**
 * Issue 14, finding 2: "the data key sits next to the data". On systemd the data key is an encrypted
 * credential (LoadCredentialEncrypted=, bound to the TPM2 or the host key), read from
 * $CREDENTIALS_DIRECTORY at start; a file only when configured (or where no unit passes
 * credentials). The D1 client key and the JWE key may come the same way. The key is rotated with
 * `kiosk-agent store rekey` while jobs are pending (rotation cut short: data-key-crash.test.ts).
 *
 * systemd is not PID 1 here, so LoadCredentialEncrypted= itself cannot run: where the real
 * systemd-creds is installed, the credential is encrypted with it (host key; SYSTEMD_CREDENTIAL_SECRET
 * points at a throwaway host secret) and decrypted into a temporary CREDENTIALS_DIRECTORY exactly as
 * the service manager does at start.
 */
const BIN = fileURLToPath(new URL("../../bin/kiosk-agent.mjs", import.meta.url));
const root = dataKeyTestDir();

describe("the data key as a systemd credential", () => {
  let rig: OpsRig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  it("is read from $CREDENTIALS_DIRECTORY: no data.key is ever made, jobs are sealed with it and produced", async () => {
    const key = randomBytes(32);
    process.env.CREDENTIALS_DIRECTORY = credentialsDir(root.dir, {
      [DATA_KEY_NAME]: `${key.toString("base64")}\n`,
    });
    const dataDir = join(root.dir, "data");
    rig = await startOpsRig({ dataDir });
    const job = sampleJob();
    expect(await rig.emulator.push(job)).toMatchObject({ result: "accepted" });
    expect(await produced(rig, [job.operationId])).toEqual(["CARD_PROD_DONE"]);
    await rig.close();
    rig = undefined;
    expect(existsSync(join(dataDir, KEY_FILE))).toBe(false);
    expect(readdirSync(dataDir).some((f) => f.includes("key"))).toBe(false);
    expect(keyOpens(dataDir, key)).toBe(true);
    // Raw 32 bytes are taken as well as their base64.
    process.env.CREDENTIALS_DIRECTORY = credentialsDir(root.dir, { [DATA_KEY_NAME]: key });
    rig = await startOpsRig({ dataDir });
    expect(rig.agent.store.storeId).toBeTruthy();
  });

  it("a missing credential is KEY_MISSING, another store's key KEY_MISMATCH, a damaged one BAD_KEY: nothing is made", async () => {
    const key = randomBytes(32);
    const dataDir = join(root.dir, "data");
    const ids = storeWithPendingJobs(dataDir, 1, key);
    const before = readdirSync(dataDir).sort();

    // Under a unit that passes credentials, but not this one.
    process.env.CREDENTIALS_DIRECTORY = credentialsDir(root.dir, { "kiosk-agent-tls-key": "x" });
    await expect(startOpsRig({ dataDir, waitForConnection: false })).rejects.toMatchObject({
      code: "KEY_MISSING",
      message: expect.stringMatching(
        /credential kiosk-agent-data-key is not in .*LoadCredentialEncrypted=kiosk-agent-data-key.*a store sealed with that key/,
      ),
    });
    // Configured as a credential, started outside systemd.
    delete process.env.CREDENTIALS_DIRECTORY;
    await expect(
      startOpsRig({ dataDir, waitForConnection: false, config: { dataKey: { source: "credential" } } }),
    ).rejects.toMatchObject({
      code: "KEY_MISSING",
      message: expect.stringMatching(/CREDENTIALS_DIRECTORY is not set/),
    });
    // Another store's key.
    process.env.CREDENTIALS_DIRECTORY = credentialsDir(root.dir, {
      [DATA_KEY_NAME]: randomBytes(32).toString("base64"),
    });
    await expect(startOpsRig({ dataDir, waitForConnection: false })).rejects.toMatchObject({
      code: "KEY_MISMATCH",
    });
    // Damaged.
    process.env.CREDENTIALS_DIRECTORY = credentialsDir(root.dir, { [DATA_KEY_NAME]: "not a key" });
    await expect(startOpsRig({ dataDir, waitForConnection: false })).rejects.toMatchObject({
      code: "BAD_KEY",
    });
    // Nothing was made or changed: no data.key beside the store.
    expect(readdirSync(dataDir).sort()).toEqual(before);
    // The right one: the pending job is produced.
    process.env.CREDENTIALS_DIRECTORY = credentialsDir(root.dir, { [DATA_KEY_NAME]: key.toString("base64") });
    rig = await startOpsRig({ dataDir });
    expect(await produced(rig, ids)).toEqual(["CARD_PROD_DONE"]);
  });

  it('a file only when configured: dataKey.source "file" under a unit with credentials uses DATA_DIR/data.key', async () => {
    process.env.CREDENTIALS_DIRECTORY = credentialsDir(root.dir, {
      [DATA_KEY_NAME]: randomBytes(32).toString("base64"),
    });
    const dataDir = join(root.dir, "data");
    rig = await startOpsRig({ dataDir, config: { dataKey: { source: "file" } } });
    expect(statSync(join(dataDir, KEY_FILE)).mode & 0o777).toBe(0o600);
    // Without credentials and without a source (the demo, tests, a start by hand): the file, as before.
    await rig.close();
    delete process.env.CREDENTIALS_DIRECTORY;
    rig = await startOpsRig({ dataDir });
    expect(keyOpens(dataDir, loadOrCreateKey(join(dataDir, KEY_FILE), { create: false }))).toBe(true);
  });

  it.skipIf(!HAS_SYSTEMD_CREDS)(
    "systemd-creds: encrypted with the host key, decrypted as LoadCredentialEncrypted= does, the real `kiosk-agent run` starts on it",
    async () => {
      process.env.SYSTEMD_CREDENTIAL_SECRET = join(root.dir, "host.secret");
      const key = randomBytes(32);
      const credFile = join(root.dir, "data.key.cred");
      const enc = spawnSync(
        "systemd-creds",
        ["encrypt", `--name=${DATA_KEY_NAME}`, "--with-key=host", "-", credFile],
        { input: `${key.toString("base64")}\n` },
      );
      expect(enc.status, String(enc.stderr)).toBe(0);
      // Ciphertext: the key is not in it.
      expect(readFileSync(credFile).includes(key.toString("base64"))).toBe(false);
      // What systemd does at the service's start.
      const creds = credentialsDir(root.dir, {});
      const dec = spawnSync("systemd-creds", [
        "decrypt",
        `--name=${DATA_KEY_NAME}`,
        credFile,
        join(creds, DATA_KEY_NAME),
      ]);
      expect(dec.status, String(dec.stderr)).toBe(0);
      // A credential made for another name is refused by systemd itself.
      const wrong = spawnSync("systemd-creds", ["decrypt", "--name=other", credFile, "-"]);
      expect(wrong.status).not.toBe(0);

      const dataDir = join(root.dir, "data");
      const config = join(root.dir, "config.json");
      writeFileSync(
        config,
        JSON.stringify({
          station: { id: STATION },
          d1: { url: "ws://127.0.0.1:9/", token: "test-token-0123", allowInsecure: true },
          dataDir,
          printer: { link: "usb", path: join(root.dir, "no-printer") },
        }),
      );
      const child = spawn(process.execPath, [BIN, "run", "--config", config], {
        env: { ...process.env, CREDENTIALS_DIRECTORY: creds, KIOSK_AGENT_FROM_SOURCE: "1" },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let output = "";
      child.stdout.on("data", (b) => {
        output += String(b);
      });
      child.stderr.on("data", (b) => {
        output += String(b);
      });
      try {
        const deadline = Date.now() + 15_000;
        while (!(output.includes("kiosk agent starting") && existsSync(join(dataDir, STORE_FILE)))) {
          if (child.exitCode !== null) throw new Error(`agent exited ${child.exitCode}: ${output}`);
          if (Date.now() > deadline) throw new Error(`agent did not start: ${output}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      } finally {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
      expect(existsSync(join(dataDir, KEY_FILE))).toBe(false);
      expect(keyOpens(dataDir, key)).toBe(true);
    },
  );
});

describe("the D1 client key and the JWE key as systemd credentials", () => {
  let rig: OpsRig | undefined;
  let pki: ReturnType<typeof makeTestPki>;
  let removePki: () => void;
  beforeAll(() => {
    const t = tempDir("kiosk-pki-");
    removePki = t.remove;
    pki = makeTestPki(t.dir);
  });
  afterAll(() => removePki());
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  it("d1.tls.keyCredential: mutual TLS with the key systemd passed; one of keyFile / keyCredential only", async () => {
    // The unit passes the data key too: under a unit with credentials it is taken from there.
    process.env.CREDENTIALS_DIRECTORY = credentialsDir(root.dir, {
      [DATA_KEY_NAME]: randomBytes(32),
      "kiosk-agent-tls-key": readFileSync(pki.clientKey),
    });
    rig = await startOpsRig({
      emulator: {
        tls: {
          cert: readFileSync(pki.serverCert),
          key: readFileSync(pki.serverKey),
          ca: readFileSync(pki.caCert),
          requestCert: true,
        },
      },
      config: {
        d1: {
          allowInsecure: false,
          tls: { caFile: pki.caCert, certFile: pki.clientCert, keyCredential: "kiosk-agent-tls-key" },
        },
      },
    });
    expect(rig.emulator.station(STATION)?.clientCertSubject).toBe(STATION);
    const job = sampleJob();
    await rig.emulator.push(job);
    expect(await produced(rig, [job.operationId])).toEqual(["CARD_PROD_DONE"]);

    const base = {
      station: { id: STATION },
      dataDir: "/tmp/x",
      printer: { path: "/dev/null" },
    };
    const d1 = (tls: Record<string, string>) => ({ url: "wss://d1.example/x", token: "0123456789", tls });
    expect(() =>
      parseConfig({ ...base, d1: d1({ certFile: "c", keyFile: "k", keyCredential: "kiosk-agent-tls-key" }) }),
    ).toThrow(/d1\.tls\.keyCredential: give the client key once/);
    expect(() => parseConfig({ ...base, d1: d1({ keyCredential: "kiosk-agent-tls-key" }) })).toThrow(
      /needs both d1\.tls\.certFile and d1\.tls\.keyFile \(or d1\.tls\.keyCredential\)/,
    );
    expect(() => parseConfig({ ...base, d1: d1({ certFile: "c", keyCredential: "../etc/shadow" }) })).toThrow(
      /keyCredential: a systemd credential name/,
    );
    // Outside systemd: one line naming the setting.
    expect(() =>
      tlsClientOptions(
        {
          url: "wss://d1.example/x",
          tls: { certFile: pki.clientCert, keyCredential: "kiosk-agent-tls-key" },
        },
        {},
      ),
    ).toThrow(/^d1\.tls\.keyCredential: credential kiosk-agent-tls-key was not passed to the agent/);
  });

  it("jwe.privateKeyCredential: encrypted jobs are decrypted with the key systemd passed", async () => {
    const keys = await generateStationKeyPair(join(root.dir, "keys"));
    // Whatever mode the source had: systemd's copy is the service's alone.
    process.env.CREDENTIALS_DIRECTORY = credentialsDir(root.dir, {
      [DATA_KEY_NAME]: randomBytes(32),
      "kiosk-agent-jwe-key": readFileSync(keys.privateKeyFile),
    });
    rig = await startOpsRig({
      emulator: { stationPublicKey: loadPublicKey(keys.publicKeyFile) },
      config: { jwe: { privateKeyCredential: "kiosk-agent-jwe-key", required: true } },
    });
    const job = sampleJob();
    expect(await rig.emulator.push(job)).toMatchObject({ result: "accepted" });
    expect(await produced(rig, [job.operationId])).toEqual(["CARD_PROD_DONE"]);

    // The emulator encrypted it (as D1 does): decrypted with the credential, or it would have ended
    // DATA_EXCEPTION (NO_STATION_KEY / DECRYPTION_FAILED).
    expect(rig.emulator.latest(job.operationId)?.details).toEqual({ status: "CARD_PROD_DONE" });
    expect(() =>
      parseConfig({
        station: { id: STATION },
        d1: { url: "wss://d1.example/x", token: "0123456789" },
        dataDir: "/tmp/x",
        printer: { path: "/dev/null" },
        jwe: { privateKeyFile: keys.privateKeyFile, privateKeyCredential: "kiosk-agent-jwe-key" },
      }),
    ).toThrow(/jwe\.privateKeyCredential: give the private key once/);
  });
});

describe("rotating the data key (kiosk-agent store rekey)", () => {
  let rig: OpsRig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  it("a new key while jobs are pending: every one re-sealed in one go, the old key opens nothing, all are produced", async () => {
    const dataDir = join(root.dir, "data");
    const ids = storeWithPendingJobs(dataDir, 3);
    const oldKey = loadOrCreateKey(join(dataDir, KEY_FILE), { create: false });
    const oldBlobs = sealedBlobs(dataDir);
    expect(oldBlobs).toHaveLength(3);

    const result = await storeCli(["rekey", "--data-dir", dataDir]);
    expect(result).toMatchObject({ code: 0 });
    expect(result.out).toMatch(/data key rotated: 3 pending job\(s\) re-sealed; the new key is .*data\.key/);
    const newKey = loadOrCreateKey(join(dataDir, KEY_FILE), { create: false });
    expect(newKey.equals(oldKey)).toBe(false);
    expect(statSync(join(dataDir, KEY_FILE)).mode & 0o777).toBe(0o600);
    expect(existsSync(join(dataDir, `${KEY_FILE}.next`))).toBe(false);
    expect(keyOpens(dataDir, oldKey)).toBe(false);
    expect(keyOpens(dataDir, newKey)).toBe(true);
    // No old ciphertext is left in the store's files.
    const files = ["", "-wal"].map((s) => join(dataDir, `${STORE_FILE}${s}`)).filter(existsSync);
    for (const blob of oldBlobs) for (const f of files) expect(readFileSync(f).includes(blob)).toBe(false);
    expect((await storeCli(["check", "--data-dir", dataDir])).code).toBe(0);

    rig = await startOpsRig({ dataDir });
    expect(await produced(rig, ids)).toEqual(["CARD_PROD_DONE", "CARD_PROD_DONE", "CARD_PROD_DONE"]);
    // Never under a running agent: it holds the old key in memory.
    const refused = await storeCli(["rekey", "--data-dir", dataDir]);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/AGENT_RUNNING: the agent \(pid \d+\) is running/);
  });

  it("a job whose sealed data does not open: nothing changes, the staged key is dropped", async () => {
    const dataDir = join(root.dir, "data");
    const [first] = storeWithPendingJobs(dataDir, 2);
    const oldKey = loadOrCreateKey(join(dataDir, KEY_FILE), { create: false });
    const db = new Database(join(dataDir, STORE_FILE));
    db.prepare("UPDATE jobs SET sealed_job = ? WHERE operation_id = ?").run(randomBytes(64), first);
    db.close();
    const before = sealedBlobs(dataDir);
    const result = await storeCli(["rekey", "--data-dir", dataDir]);
    expect(result.code).toBe(1);
    expect(result.err).toMatch(new RegExp(`SEALED_DATA_CORRUPT: job ${first}: .*nothing was changed`));
    expect(sealedBlobs(dataDir)).toEqual(before);
    expect(keyOpens(dataDir, oldKey)).toBe(true);
    expect(existsSync(join(dataDir, `${KEY_FILE}.next`))).toBe(false);
  });
  it.skipIf(!HAS_SYSTEMD_CREDS)(
    "a credential key (systemd-creds, as root): every pending job re-sealed, the new credential replaces the old, the service starts on it",
    async () => {
      process.env.SYSTEMD_CREDENTIAL_SECRET = join(root.dir, "host.secret");
      delete process.env.CREDENTIALS_DIRECTORY; // a root shell, not the service
      mkdirSync(join(root.dir, "credstore.encrypted"), { mode: 0o700 });
      const credFile = join(root.dir, "credstore.encrypted", "data.key.cred");
      const key0 = randomBytes(32);
      encryptCredential(credFile, key0);
      const dataDir = join(root.dir, "data");
      const ids = storeWithPendingJobs(dataDir, 2, key0);
      const config = join(root.dir, "config.json");
      writeFileSync(
        config,
        JSON.stringify({
          station: { id: STATION },
          d1: { url: "wss://d1.example/x", token: "test-token-0123" },
          dataDir,
          printer: { path: "/dev/null" },
          dataKey: { source: "credential", credentialFile: credFile, withKey: "host" },
        }),
      );
      const result = await storeCli(["rekey", "--config", config]);
      expect(result.code, result.err).toBe(0);
      expect(result.out).toMatch(
        /2 pending job\(s\) re-sealed; the new key is credential kiosk-agent-data-key/,
      );
      const key1 = decryptCredential(credFile);
      expect(key1.equals(key0)).toBe(false);
      expect(keyOpens(dataDir, key1)).toBe(true);
      expect(keyOpens(dataDir, key0)).toBe(false);
      expect(statSync(credFile).mode & 0o777).toBe(0o600);
      expect(existsSync(`${credFile}.next`)).toBe(false);
      expect(readFileSync(credFile).includes(key1.toString("base64"))).toBe(false);
      // `store check` as root reads the credential file the same way.
      expect((await storeCli(["check", "--config", config])).code).toBe(0);

      process.env.CREDENTIALS_DIRECTORY = decryptAsServiceStart(root.dir, credFile);
      rig = await startOpsRig({ dataDir });
      expect(await produced(rig, ids)).toEqual(["CARD_PROD_DONE", "CARD_PROD_DONE"]);
      expect(existsSync(join(dataDir, KEY_FILE))).toBe(false);
    },
  );
});
