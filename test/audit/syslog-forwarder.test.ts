import { chmodSync, readFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import tls from "node:tls";
import Database from "better-sqlite3";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type AuditRow, chainHash, GENESIS_HASH } from "../../agent/audit/audit-chain.js";
import {
  type AuditForwardConfig,
  AuditForwarder,
  forwardTlsOptions,
  octetFrame,
  syslogMessage,
} from "../../agent/audit/syslog-forwarder.js";
import { parseConfig } from "../../agent/config/load.js";
import { JobStore } from "../../agent/store/job-store.js";
import { SealedBox } from "../../agent/store/sealed-box.js";
import { systemClock } from "../../agent/util/clock.js";
import { makeTestPki, type TestPki, watchedLogger } from "../ops/rig.js";
import { tempDir } from "../ops/support.js";

/**
 * The syslog forwarder against collectors written here (the real rsyslog is test/ops/audit-forward.test.ts):
 * the message format, and what each way a collector can end a connection does to the cursor.
 */

type Behaviour = "normal" | "reset-on-data" | "close-at-accept" | "never-close" | "read-then-stop";

/** An octet-counting collector: reads to the end of each connection, then closes (normal). */
class Collector {
  readonly messages: string[] = [];
  readonly connections: Behaviour[] = [];
  private readonly sockets = new Set<net.Socket>();
  private readonly server: net.Server | tls.Server;
  behaviour: (n: number) => Behaviour = () => "normal";

  constructor(tlsOptions?: tls.TlsOptions) {
    const onSocket = (socket: net.Socket): void => {
      const mode = this.behaviour(this.connections.length);
      this.connections.push(mode);
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
      if (mode === "close-at-accept") {
        socket.destroy();
        return;
      }
      const chunks: Buffer[] = [];
      socket.on("data", (d: Buffer) => {
        // Over TLS the reset is the TCP connection's underneath.
        if (mode === "reset-on-data")
          return ((socket as { _parent?: net.Socket })._parent ?? socket).resetAndDestroy();
        chunks.push(d);
        if (mode !== "read-then-stop") return;
        // A collector stopping: it took what arrived, and closes without waiting for the end.
        this.messages.push(...deframe(Buffer.concat(chunks.splice(0))));
        socket.destroy();
      });
      socket.on("error", () => undefined);
      socket.on("end", () => {
        if (mode === "never-close") return;
        this.messages.push(...deframe(Buffer.concat(chunks)));
        socket.end();
      });
    };
    this.server = tlsOptions
      ? tls.createServer(tlsOptions, onSocket)
      : net.createServer({ allowHalfOpen: true }, onSocket);
    // Every connection, also one whose TLS handshake failed, goes at close().
    this.server.on("connection", (socket: net.Socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
  }

  listen(): Promise<number> {
    return new Promise((resolve) => {
      this.server.listen(0, "127.0.0.1", () => resolve((this.server.address() as net.AddressInfo).port));
    });
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  seqs(): number[] {
    return this.messages.map((m) => Number(/ seq="(\d+)"/.exec(m)![1]));
  }
}

function deframe(buf: Buffer): string[] {
  const out: string[] = [];
  let at = 0;
  while (at < buf.length) {
    const sp = buf.indexOf(0x20, at);
    const len = Number(buf.subarray(at, sp).toString("ascii"));
    out.push(buf.subarray(sp + 1, sp + 1 + len).toString("utf8"));
    at = sp + 1 + len;
  }
  return out;
}

async function until(what: string, predicate: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function forwardConfig(port: number, extra: Record<string, unknown> = {}): AuditForwardConfig {
  return parseConfig({
    station: { id: "K1" },
    dataDir: "/tmp/unused",
    d1: { url: "wss://d1.example/ws", token: "t0k3n-t0k3n" },
    printer: { path: "/dev/null" },
    audit: {
      forward: { host: "127.0.0.1", port, retry: { initialMs: 10, maxMs: 50 }, pollMs: 20, ...extra },
    },
  }).audit.forward!;
}

describe("audit syslog forwarder", () => {
  const cleanups: Array<() => unknown> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function store(): JobStore {
    const { dir, remove } = tempDir("kiosk-forward-");
    const s = new JobStore(join(dir, "jobs.sqlite"), new SealedBox(Buffer.alloc(32, 3)), systemClock);
    cleanups.push(remove);
    cleanups.push(() => s.db.open && s.close());
    return s;
  }

  function forwarder(s: JobStore, config: AuditForwardConfig, tlsOptions?: tls.ConnectionOptions) {
    const log = watchedLogger("debug");
    const f = new AuditForwarder({
      db: s.db,
      storeId: s.storeId,
      config,
      clock: systemClock,
      logger: log.logger,
      tls: tlsOptions,
    });
    cleanups.push(() => f.stop(200));
    return { f, log };
  }

  const write = (s: JobStore, n: number) => {
    for (let i = 0; i < n; i++)
      s.auditRefusal({ operationId: `op-${i}`, errorCode: "UNSUPPORTED_OPERATION", error: "operation" });
  };

  it("one row is one RFC 5424 message, octet-counted (RFC 6587); its JSON gives the hash back", () => {
    const row: AuditRow = {
      seq: 7,
      at: "2026-01-31T10:00:00.123Z",
      event: "STOCK",
      operation_id: null,
      card_id: null,
      issuer_request_id: null,
      from_state: null,
      to_state: null,
      d1_status: null,
      reason: null,
      error_code: null,
      error: null,
      masked_pan: "526609******0009",
      request_id: null,
      pushed_by: null,
      detail: '{"note":"Zoë said \\"ok\\" ] \\\\ \\n"}',
      hash: null,
    };
    row.hash = chainHash(GENESIS_HASH, row);
    const store = "0f5b4c2e-1d2a-4c51-9d7e-3a2b1c0d9e8f";
    const msg = syslogMessage(row, {
      storeId: store,
      hostname: "kiosk-07",
      appName: "kiosk-agent",
      procId: "4242",
      facility: 13,
      sdId: "kioskAudit@32473",
    });
    expect(msg).toBe(
      `<109>1 2026-01-31T10:00:00.123Z kiosk-07 kiosk-agent 4242 STOCK [kioskAudit@32473 store="${store}" seq="7" hash="${row.hash}"] ` +
        JSON.stringify({
          store,
          seq: 7,
          hash: row.hash,
          ...Object.fromEntries(Object.entries(row).filter(([k]) => k !== "seq" && k !== "hash")),
        }).replace("ë", "\\u00eb"),
    );
    // ASCII only, one line.
    expect(/^[\x20-\x7e]+$/.test(msg)).toBe(true);
    const body = JSON.parse(msg.slice(msg.indexOf("] {") + 2)) as Record<string, string | number | null>;
    expect(chainHash(GENESIS_HASH, body as unknown as AuditRow)).toBe(row.hash);
    const framed = octetFrame(msg);
    expect(framed.toString("ascii", 0, framed.indexOf(0x20))).toBe(String(Buffer.byteLength(msg)));
    // A timestamp that is not RFC 3339 becomes NILVALUE; a structured-data value has ", \ and ] escaped.
    const odd = syslogMessage(
      { ...row, at: "yesterday" },
      {
        storeId: 'a"b]c\\d',
        hostname: "-",
        appName: "kiosk-agent",
        procId: "1",
        facility: 10,
        sdId: "kioskAudit@32473",
      },
    );
    expect(odd).toMatch(/^<85>1 - - kiosk-agent 1 STOCK \[kioskAudit@32473 store="a\\"b\\]c\\\\d" seq="7"/);
  });

  it("a collector that resets with the batch unread, or closes before it arrives: sent again, once", async () => {
    const s = store();
    const collector = new Collector();
    collector.behaviour = (n) => (n === 0 ? "reset-on-data" : n === 1 ? "close-at-accept" : "normal");
    const port = await collector.listen();
    cleanups.push(() => collector.close());
    write(s, 30);
    const { f, log } = forwarder(s, forwardConfig(port, { batchMaxRows: 10 }));
    f.start();
    await until("30 rows confirmed", () => f.forwardedThrough === 30);
    expect(collector.seqs()).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(f.stats.failures).toBe(2);
    expect(Object.keys(f.stats.causes).sort()).toEqual(expect.arrayContaining(["ECONNRESET"]));
    expect(log.lines.filter((l) => l.level === 40 && l.component === "audit-forward")).toHaveLength(1);
    expect(
      log.lines.some((l) => l.msg === "audit forwarding restored; the rows that waited are being sent"),
    ).toBe(true);
    // The cursor is in the store.
    expect(s.db.prepare("SELECT last_seq, last_hash, collector FROM audit_forward").get()).toEqual({
      last_seq: 30,
      last_hash: (s.db.prepare("SELECT hash FROM audit_log WHERE seq = 30").get() as { hash: string }).hash,
      collector: `127.0.0.1:${port}`,
    });
  });

  it("a collector that reads the batch and closes before the agent does: confirmed, not sent twice", async () => {
    const s = store();
    const collector = new Collector();
    collector.behaviour = (n) => (n === 0 ? "read-then-stop" : "normal");
    const port = await collector.listen();
    cleanups.push(() => collector.close());
    write(s, 5);
    const { f } = forwarder(s, forwardConfig(port));
    f.start();
    await until("confirmed", () => f.forwardedThrough === 5);
    expect(collector.seqs()).toEqual([1, 2, 3, 4, 5]);
    expect(f.stats).toMatchObject({ failures: 0, batches: 1, confirmedAfterCollectorClose: 1 });
  });

  it("nothing is lost while the collector is down; new rows go at once when it is back", async () => {
    const s = store();
    const collector = new Collector();
    const port = await collector.listen();
    await collector.close(); // down: connections refused
    write(s, 5);
    const { f } = forwarder(s, forwardConfig(port));
    f.start();
    await until("refused twice", () => (f.stats.causes.ECONNREFUSED ?? 0) >= 2);
    expect(f.backlog()).toBe(5);
    const back = new Collector();
    await new Promise<void>((resolve) =>
      (back as unknown as { server: net.Server }).server.listen(port, "127.0.0.1", resolve),
    );
    cleanups.push(() => back.close());
    await until("the backlog sent", () => f.forwardedThrough === 5);
    write(s, 1);
    await until("a new row", () => back.messages.length === 6, 2_000);
    expect(back.seqs()).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it("a collector that never confirms: the batch is sent again after ackTimeoutMs (at least once)", async () => {
    const s = store();
    const collector = new Collector();
    collector.behaviour = (n) => (n === 0 ? "never-close" : "normal");
    const port = await collector.listen();
    cleanups.push(() => collector.close());
    write(s, 3);
    const { f } = forwarder(s, forwardConfig(port, { ackTimeoutMs: 200 }));
    f.start();
    await until("confirmed", () => f.forwardedThrough === 3);
    expect(f.stats.causes).toEqual({ ACK_TIMEOUT: 1 });
    expect(collector.seqs()).toEqual([1, 2, 3]); // the first connection's copy was never kept here
  });

  it("a row changed while it waited for the collector is logged, counted and marked in its message", async () => {
    const s = store();
    const collector = new Collector();
    const port = await collector.listen();
    cleanups.push(() => collector.close());
    write(s, 4);
    const other = new Database(s.db.name);
    other.exec("DROP TRIGGER audit_log_no_update");
    other.prepare("UPDATE audit_log SET error = 'rewritten' WHERE seq = 2").run();
    other.close();
    const { f, log } = forwarder(s, forwardConfig(port));
    f.start();
    await until("sent", () => f.forwardedThrough === 4);
    expect(f.stats.chainBreaks).toBe(1);
    expect(collector.messages[1]).toContain(' chain="hash"]');
    expect(collector.messages.filter((m) => m.includes("chain="))).toHaveLength(1);
    expect(log.lines.find((l) => l.level === 50)).toMatchObject({
      seq: 2,
      problem: "hash",
      msg: "audit row does not follow the chain from the row before it: the audit table was changed; run kiosk-agent audit verify",
    });
  });

  describe("over TLS (RFC 5425)", () => {
    let pki: TestPki;
    let removePki: () => void;
    beforeAll(() => {
      const t = tempDir("kiosk-forward-pki-");
      removePki = t.remove;
      pki = makeTestPki(t.dir);
      chmodSync(pki.clientKey, 0o600);
    });
    afterAll(() => removePki());
    const serverTls = (): tls.TlsOptions => ({
      cert: readFileSync(pki.serverCert),
      key: readFileSync(pki.serverKey),
      ca: readFileSync(pki.caCert),
      requestCert: true,
      rejectUnauthorized: true,
      allowHalfOpen: true,
    });

    it("with the collector's CA and a client certificate rows arrive; a collector that closes first gets the batch again", async () => {
      const s = store();
      const collector = new Collector(serverTls());
      const modes: Behaviour[] = ["normal", "read-then-stop", "reset-on-data", "close-at-accept"];
      collector.behaviour = (n) => modes[n] ?? "normal";
      const port = await collector.listen();
      cleanups.push(() => collector.close());
      write(s, 12);
      const config = forwardConfig(port, {
        batchMaxRows: 4,
        tls: { caFile: pki.caCert, certFile: pki.clientCert, keyFile: pki.clientKey },
      });
      const { f } = forwarder(s, config, forwardTlsOptions(config));
      f.start();
      await until("confirmed", () => f.forwardedThrough === 12);
      // Over TLS a collector that closes before the agent did may have left bytes in its TLS
      // library unprocessed, whether or not it reset: the batch is sent again, so the one that had
      // read it (read-then-stop) has rows 5–8 twice. At least once (docs/security.md).
      expect(collector.connections.slice(0, 4)).toEqual(modes);
      expect(f.stats).toMatchObject({ failures: 3, confirmedAfterCollectorClose: 0 });
      expect(f.stats.causes.COLLECTOR_CLOSED_FIRST).toBeGreaterThanOrEqual(2);
      expect(collector.seqs()).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7, 8, 9, 10, 11, 12]);
    });

    it("with the wrong CA the collector's certificate is refused and rows wait", async () => {
      const s = store();
      const collector = new Collector(serverTls());
      const port = await collector.listen();
      cleanups.push(() => collector.close());
      write(s, 2);
      const config = forwardConfig(port, {
        tls: { caFile: pki.otherCaCert, certFile: pki.clientCert, keyFile: pki.clientKey },
      });
      const { f, log } = forwarder(s, config, forwardTlsOptions(config));
      f.start();
      await until("refused", () => f.stats.failures >= 2);
      expect(f.forwardedThrough).toBe(0);
      expect(collector.messages).toEqual([]);
      expect(log.lines.find((l) => l.level === 40)?.cause).toBe("SELF_SIGNED_CERT_IN_CHAIN");
    });

    it("a key file others can read is refused at start, naming the key", () => {
      chmodSync(pki.clientKey, 0o644);
      try {
        expect(() =>
          forwardTlsOptions(
            forwardConfig(1, {
              tls: { caFile: pki.caCert, certFile: pki.clientCert, keyFile: pki.clientKey },
            }),
          ),
        ).toThrow(/audit\.forward\.tls\.keyFile: .* is readable by other users \(mode 644\)/);
      } finally {
        chmodSync(pki.clientKey, 0o600);
      }
    });
  });
});
