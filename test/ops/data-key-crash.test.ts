import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { keySlotFor } from "../../agent/cli/store.js";
import { loadConfig } from "../../agent/config/load.js";
import { KEY_FILE } from "../../agent/store/data-dir.js";
import { fileKeySlot } from "../../agent/store/data-key.js";
import { rekeyStore } from "../../agent/store/key-rotation.js";
import { loadOrCreateKey } from "../../agent/store/sealed-box.js";
import {
  dataKeyTestDir,
  decryptAsServiceStart,
  decryptCredential,
  encryptCredential,
  HAS_SYSTEMD_CREDS,
  keyOpens,
  produced,
  storeCli,
  storeWithPendingJobs,
} from "./data-key-support.js";
import { type OpsRig, STATION, startOpsRig } from "./rig.js";

/**
 * Issue 14, finding 2, key rotation: "never a state where neither key opens the store". A rotation
 * (`kiosk-agent store rekey`) stages the new key durably, re-seals the store in one transaction, then
 * renames the staged key over the old one. Cut short (a power cut, here an exception at the step) after
 * the staging or between the store's commit and the rename, a key on disk still opens the store, and
 * the next start (file key) or the next `rekey` (credential) finishes or undoes the rotation; pending
 * jobs are produced afterwards.
 */
const root = dataKeyTestDir();

describe("a data key rotation cut short", () => {
  let rig: OpsRig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  it("cut short after the new key was staged (before the store was re-sealed): the old key stays, the start drops the staged one", async () => {
    const dataDir = join(root.dir, "data");
    const ids = storeWithPendingJobs(dataDir, 2);
    const oldKey = loadOrCreateKey(join(dataDir, KEY_FILE), { create: false });
    expect(() =>
      rekeyStore(dataDir, fileKeySlot(join(dataDir, KEY_FILE)), {
        onStep: (step) => {
          if (step === "staged") throw new Error("power cut");
        },
      }),
    ).toThrow("power cut");
    expect(existsSync(join(dataDir, `${KEY_FILE}.next`))).toBe(true);
    expect(keyOpens(dataDir, oldKey)).toBe(true);
    expect((await storeCli(["check", "--data-dir", dataDir])).code).toBe(0);

    rig = await startOpsRig({ dataDir });
    expect(await produced(rig, ids)).toEqual(["CARD_PROD_DONE", "CARD_PROD_DONE"]);
    expect(existsSync(join(dataDir, `${KEY_FILE}.next`))).toBe(false);
    expect(loadOrCreateKey(join(dataDir, KEY_FILE), { create: false }).equals(oldKey)).toBe(true);
    expect(
      rig.log.lines.some((l) => String(l.msg).includes("cut short before the store was re-sealed")),
    ).toBe(true);
  });

  it("cut short between the store's commit and the key's rename: only the staged key opens it, and the start puts it in place", async () => {
    const dataDir = join(root.dir, "data");
    const ids = storeWithPendingJobs(dataDir, 2);
    const oldKey = loadOrCreateKey(join(dataDir, KEY_FILE), { create: false });
    expect(() =>
      rekeyStore(dataDir, fileKeySlot(join(dataDir, KEY_FILE)), {
        onStep: (step) => {
          if (step === "resealed") throw new Error("power cut");
        },
      }),
    ).toThrow("power cut");
    const staged = loadOrCreateKey(join(dataDir, `${KEY_FILE}.next`), { create: false });
    expect(keyOpens(dataDir, oldKey)).toBe(false);
    expect(keyOpens(dataDir, staged)).toBe(true);
    // `store check` says the start will finish it.
    const check = await storeCli(["check", "--data-dir", dataDir]);
    expect(check.code).toBe(0);
    expect(check.out).toMatch(/data\.key\.next \(a rotation cut short\) is this store's key/);

    rig = await startOpsRig({ dataDir });
    expect(await produced(rig, ids)).toEqual(["CARD_PROD_DONE", "CARD_PROD_DONE"]);
    expect(loadOrCreateKey(join(dataDir, KEY_FILE), { create: false }).equals(staged)).toBe(true);
    expect(existsSync(join(dataDir, `${KEY_FILE}.next`))).toBe(false);
  });

  it.skipIf(!HAS_SYSTEMD_CREDS)(
    "a credential key cut short between the store's commit and the credential's rename: the service refuses with what to do, `rekey` again finishes it",
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
      expect(() =>
        rekeyStore(dataDir, keySlotFor(dataDir, loadConfig(config).dataKey), {
          onStep: (step) => {
            if (step === "resealed") throw new Error("power cut");
          },
        }),
      ).toThrow("power cut");
      expect(existsSync(`${credFile}.next`)).toBe(true);
      expect(keyOpens(dataDir, key0)).toBe(false);
      expect(keyOpens(dataDir, decryptCredential(`${credFile}.next`))).toBe(true);
      // The service (which cannot decrypt a credential file itself) refuses, and says what to do.
      process.env.CREDENTIALS_DIRECTORY = decryptAsServiceStart(root.dir, credFile);
      await expect(startOpsRig({ dataDir, waitForConnection: false })).rejects.toMatchObject({
        code: "KEY_MISMATCH",
        message: expect.stringMatching(/if 'kiosk-agent store rekey' was cut short, run it again/),
      });
      const check = await storeCli(["check", "--config", config]);
      expect(check.code).toBe(1);
      expect(check.out).toMatch(/a rotation was cut short: run 'kiosk-agent store rekey' again/);
      delete process.env.CREDENTIALS_DIRECTORY;
      const again = await storeCli(["rekey", "--config", config]);
      expect(again.code, again.err).toBe(0);
      expect(again.out).toMatch(/cut short after the store was re-sealed/);
      expect(existsSync(`${credFile}.next`)).toBe(false);

      process.env.CREDENTIALS_DIRECTORY = decryptAsServiceStart(root.dir, credFile);
      rig = await startOpsRig({ dataDir });
      expect(await produced(rig, ids)).toEqual(["CARD_PROD_DONE", "CARD_PROD_DONE"]);
    },
  );
});
