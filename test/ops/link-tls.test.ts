import { chmodSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { tlsClientOptions } from "../../agent/crypto/tls.js";
import { makeTestPki, type OpsRig, STATION, sampleJob, startOpsRig, type TestPki } from "./rig.js";
import { tempDir } from "./support.js";

/**
 * The D1 link over wss:// with mutual TLS, on loopback: the emulator serves a certificate for
 * 127.0.0.1 signed by a throwaway CA and requires a client certificate from the same CA.
 */
describe("D1 link over TLS with a client certificate", () => {
  let pki: TestPki;
  let removePki: () => void;
  let rig: OpsRig | undefined;

  beforeAll(() => {
    const t = tempDir("kiosk-pki-");
    removePki = t.remove;
    pki = makeTestPki(t.dir);
    chmodSync(pki.clientKey, 0o600);
  });
  afterAll(() => removePki());
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  const emulatorTls = () => ({
    tls: {
      cert: readFileSync(pki.serverCert),
      key: readFileSync(pki.serverKey),
      ca: readFileSync(pki.caCert),
      requestCert: true,
    },
  });
  const retries = (r: OpsRig) => r.log.lines.filter((l) => l.msg === "D1 unreachable, retrying");

  it("with the right CA and client certificate the agent connects and a card is produced", async () => {
    rig = await startOpsRig({
      emulator: emulatorTls(),
      config: {
        d1: {
          allowInsecure: false,
          tls: { caFile: pki.caCert, certFile: pki.clientCert, keyFile: pki.clientKey },
        },
      },
    });
    expect(rig.emulator.address).toMatch(/^wss:\/\/127\.0\.0\.1:\d+$/);
    expect(rig.emulator.station(STATION)?.clientCertSubject).toBe(STATION);
    const job = sampleJob();
    expect(await rig.emulator.push(job)).toMatchObject({ result: "accepted" });
    const r = rig;
    await r.emulator.waitFor(() => r.emulator.terminalCount(job.operationId) > 0, 10_000);
    expect(r.emulator.latest(job.operationId)?.details.status).toBe("CARD_PROD_DONE");
    expect(r.emulator.stats.tlsFailures).toBe(0);
  });

  it("without a client certificate the handshake is refused, and the agent keeps retrying", async () => {
    rig = await startOpsRig({
      emulator: emulatorTls(),
      config: { d1: { allowInsecure: false, tls: { caFile: pki.caCert } } },
      waitForConnection: false,
    });
    const r = rig;
    await r.emulator.waitFor(() => r.emulator.stats.tlsFailures >= 2, 10_000, "two refused handshakes");
    await r.log.waitFor((l) => l.msg === "D1 unreachable, retrying" && retries(r).length >= 2);
    expect(r.emulator.stats.hellos).toBe(0);
    expect(r.agent.link.isUp).toBe(false);
    expect(retries(r)[0]).toMatchObject({ cause: { code: "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED" } });
  });

  it("with the wrong CA, D1's certificate fails verification and the agent keeps retrying", async () => {
    rig = await startOpsRig({
      emulator: emulatorTls(),
      config: {
        d1: {
          allowInsecure: false,
          tls: { caFile: pki.otherCaCert, certFile: pki.clientCert, keyFile: pki.clientKey },
        },
      },
      waitForConnection: false,
    });
    const r = rig;
    await r.log.waitFor((l) => l.msg === "D1 unreachable, retrying" && retries(r).length >= 3);
    const causes = retries(r).map((l) => (l.cause as { code?: string } | undefined)?.code);
    // The server sends its CA along, so Node reports the foreign root (or, without it, the leaf).
    for (const code of causes.slice(0, 3))
      expect(code).toMatch(/^(SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)$/);
    expect(r.emulator.stats.hellos).toBe(0);
    expect(r.agent.link.isUp).toBe(false);
  });

  it("TLS files that cannot be used stop the start with the key's name", () => {
    const url = "wss://127.0.0.1:1";
    expect(() => tlsClientOptions({ url, tls: { caFile: join(pki.caCert, "missing") } })).toThrow(
      /^d1\.tls\.caFile: cannot read .*missing \(ENOTDIR\)$/,
    );
    expect(() => tlsClientOptions({ url, tls: { caFile: pki.clientKey.replace(".key", ".ext") } })).toThrow(
      /d1\.tls\.caFile: .* is not a PEM file/,
    );
    chmodSync(pki.clientKey, 0o644);
    try {
      expect(() =>
        tlsClientOptions({ url, tls: { certFile: pki.clientCert, keyFile: pki.clientKey } }),
      ).toThrow(/d1\.tls\.keyFile: .* is readable by other users \(mode 644\)/);
    } finally {
      chmodSync(pki.clientKey, 0o600);
    }
    expect(tlsClientOptions({ url: "ws://127.0.0.1:1", tls: { caFile: "/nope" } })).toBeUndefined();
    expect(tlsClientOptions({ url })).toEqual({ rejectUnauthorized: true });
  });
});
