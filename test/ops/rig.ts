import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { KioskAgent } from "../../agent/agent.js";
import { parseConfig } from "../../agent/config/load.js";
import type { AgentConfigInput } from "../../agent/config/schema.js";
import { makeSampleJob } from "../../agent/jobs/sample-jobs.js";
import { createLogger, type Logger } from "../../agent/log/logger.js";
import { InProcessApduTransport, VirtualCard } from "../../simulator/chip/virtual-card.js";
import { D1Emulator, type D1EmulatorOptions } from "../../simulator/d1-emulator/emulator.js";
import { attachVirtualPrinter } from "../../simulator/printer/index.js";
import type {
  VirtualEvolisPrinter,
  VirtualPrinterOptions,
} from "../../simulator/printer/virtual-evolis-printer.js";
import { VirtualSerialBinding } from "../../simulator/serial/virtual-binding.js";
import { tempDir } from "./support.js";

export const STATION = "KIOSK-PS-101";
export const PRINTER_PATH = "/dev/ttyVIRT0";

/** A logger whose JSON lines are kept and can be awaited (no polling). */
export function watchedLogger(level = "debug"): {
  logger: Logger;
  lines: Array<Record<string, unknown>>;
  text: () => string;
  waitFor: (
    predicate: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ) => Promise<Record<string, unknown>>;
} {
  const lines: Array<Record<string, unknown>> = [];
  const raw: string[] = [];
  const events = new EventEmitter<{ line: [Record<string, unknown>] }>();
  const destination = new Writable({
    write(chunk, _enc, done) {
      for (const text of String(chunk).split("\n")) {
        if (!text) continue;
        raw.push(text);
        const line = JSON.parse(text) as Record<string, unknown>;
        lines.push(line);
        events.emit("line", line);
      }
      done();
    },
  });
  return {
    logger: createLogger({ level, destination }),
    lines,
    text: () => raw.join("\n"),
    waitFor: (predicate, timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const seen = lines.find(predicate);
        if (seen) return resolve(seen);
        const timer = setTimeout(() => {
          events.off("line", onLine);
          reject(new Error(`no matching log line within ${timeoutMs} ms`));
        }, timeoutMs);
        const onLine = (line: Record<string, unknown>): void => {
          if (!predicate(line)) return;
          clearTimeout(timer);
          events.off("line", onLine);
          resolve(line);
        };
        events.on("line", onLine);
      }),
  };
}

export interface OpsRig {
  agent: KioskAgent;
  emulator: D1Emulator;
  printer: VirtualEvolisPrinter;
  dataDir: string;
  log: ReturnType<typeof watchedLogger>;
  close(): Promise<void>;
}

export interface OpsRigOptions {
  emulator?: Partial<D1EmulatorOptions>;
  /** Deep-merged over the rig's config, section by section. */
  config?: Partial<Record<keyof AgentConfigInput, Record<string, unknown>>>;
  printer?: VirtualPrinterOptions;
  /** Wait for the agent's hello (default true). */
  waitForConnection?: boolean;
  /** A data directory of the test's own (a tmpfs that fills up, a store made beforehand); kept at close. */
  dataDir?: string;
}

/** Emulator + virtual printer + agent on a fresh data dir; nothing waited for unless asked. */
export async function startOpsRig(options: OpsRigOptions = {}): Promise<OpsRig> {
  const own = options.dataDir === undefined ? tempDir("kiosk-ops-") : undefined;
  const dataDir = options.dataDir ?? own!.dir;
  const remove = own?.remove ?? (() => undefined);
  const log = watchedLogger("debug");
  const token = randomBytes(12).toString("hex");
  const emulator = new D1Emulator({ token, ...options.emulator });
  const { url } = await emulator.start();
  const binding = new VirtualSerialBinding();
  const printer = attachVirtualPrinter(binding, PRINTER_PATH, { takeAfterMs: 0, ...options.printer });
  const c = options.config ?? {};
  const config = parseConfig({
    station: { id: STATION },
    dataDir,
    ...c,
    d1: { url, token, allowInsecure: true, backoff: { initialMs: 20, maxMs: 100 }, ...c.d1 },
    printer: { path: PRINTER_PATH, statusPollMs: 20, reopen: { initialMs: 20, maxMs: 200 }, ...c.printer },
    production: { defaultCollectTimeoutSec: 30, holdWhileStoppedSec: 5, ...c.production },
  });
  let agent: KioskAgent;
  try {
    agent = new KioskAgent(config, {
      logger: log.logger,
      serialBinding: binding,
      chip: new InProcessApduTransport(new VirtualCard()),
    });
  } catch (err) {
    // Refused at start (a damaged data directory): nothing of the rig may outlive the test.
    await emulator.stop();
    remove();
    throw err;
  }
  agent.start();
  if (options.waitForConnection !== false) await emulator.waitForConnection(STATION, 10_000);
  return {
    agent,
    emulator,
    printer,
    dataDir,
    log,
    async close() {
      await agent.stop().catch(() => undefined);
      await emulator.stop();
      remove();
    },
  };
}

let counter = 0;
/** A valid job for the rig's station, unique per call. */
// biome-ignore lint/suspicious/noExplicitAny: tests edit jobs freely
export function sampleJob(overrides: Record<string, unknown> = {}): Record<string, any> {
  const base = makeSampleJob(counter++, {
    station: STATION,
    runId: randomBytes(4).toString("hex"),
  }) as unknown as Record<string, unknown>;
  return { ...base, ...overrides };
}

export interface TestPki {
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** Another CA, that signed nothing here. */
  otherCaCert: string;
}

/**
 * A throwaway PKI made with openssl: a CA, a server certificate for 127.0.0.1 and a client
 * certificate for the station (both signed by the CA), and an unrelated CA. EC P-256, valid 1 day.
 */
export function makeTestPki(dir: string): TestPki {
  const f = (name: string) => join(dir, name);
  const run = (...args: string[]) => {
    const r = spawnSync("openssl", args, { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  for (const ca of ["ca", "other-ca"]) {
    run(
      "req",
      "-x509",
      ...ec,
      "-keyout",
      f(`${ca}.key`),
      "-out",
      f(`${ca}.crt`),
      "-subj",
      `/CN=Test ${ca}`,
      "-days",
      "1",
    );
  }
  const leaf = (name: string, cn: string, ext: string) => {
    writeFileSync(f(`${name}.ext`), ext);
    run("req", ...ec, "-keyout", f(`${name}.key`), "-out", f(`${name}.csr`), "-subj", `/CN=${cn}`);
    run(
      "x509",
      "-req",
      "-in",
      f(`${name}.csr`),
      "-CA",
      f("ca.crt"),
      "-CAkey",
      f("ca.key"),
      "-CAcreateserial",
      "-out",
      f(`${name}.crt`),
      "-days",
      "1",
      "-extfile",
      f(`${name}.ext`),
    );
  };
  leaf("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  leaf("client", STATION, "extendedKeyUsage=clientAuth\n");
  return {
    caCert: f("ca.crt"),
    serverCert: f("server.crt"),
    serverKey: f("server.key"),
    clientCert: f("client.crt"),
    clientKey: f("client.key"),
    otherCaCert: f("other-ca.crt"),
  };
}
