import { request } from "node:http";
import { ConsoleServer } from "../../agent/console/server.js";
import { simulatorControls } from "../../agent/console/sim-controls.js";
import type { ConsoleSnapshot } from "../../agent/console/types.js";
import { PreviewRecorder, printLinesFromStore } from "../../simulator/previews.js";
import { type Rig, type RigOptions, STATION, startRig } from "../support/e2e.js";

export const CONSOLE_TOKEN = "test-console-token-0123456789";

export interface ConsoleRig {
  rig: Rig;
  server: ConsoleServer;
  url: string;
  recorder: PreviewRecorder;
  controls: ReturnType<typeof simulatorControls>;
  /** Every job pushed through the sample button, for secret scans. */
  sampleJobs: unknown[];
  close(): Promise<void>;
}

/**
 * The e2e rig (D1 emulator, agent, virtual printer) with the console in simulator mode on an
 * ephemeral loopback port, as the demo runs it.
 */
export async function startConsoleRig(
  options: { makeJob?: () => unknown; rig?: RigOptions } = {},
): Promise<ConsoleRig> {
  const rig = await startRig({ takeAfterMs: 0, ...options.rig });
  const recorder = new PreviewRecorder({
    printer: rig.printer,
    pipeline: rig.agent.pipeline,
    printLinesOf: printLinesFromStore(rig.agent.store),
  });
  const sampleJobs: unknown[] = [];
  const controls = simulatorControls({
    printer: rig.printer,
    emulator: rig.emulator,
    station: STATION,
    previews: recorder,
    ...(options.makeJob
      ? {
          makeJob: () => {
            const j = options.makeJob!();
            sampleJobs.push(j);
            return j;
          },
        }
      : {}),
  });
  const server = new ConsoleServer({
    agent: rig.agent,
    logger: rig.logs.logger,
    port: 0,
    token: CONSOLE_TOKEN,
    simulator: controls,
  });
  const { url } = await server.start();
  return {
    rig,
    server,
    url,
    recorder,
    controls,
    sampleJobs,
    async close() {
      recorder.close();
      await server.stop();
      await rig.close();
    },
  };
}

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A plain HTTP request (no cookie jar, no redirects followed). */
export function http(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? "GET", headers: options.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString("latin1"),
        }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(options.body);
  });
}

/**
 * A Server-Sent Events client on /api/events that keeps every status snapshot and lets a test await
 * the first one matching a predicate: no polling, no sleeps.
 */
export class StatusStream {
  readonly snapshots: ConsoleSnapshot[] = [];
  raw = "";
  private buffer = "";
  private waiters: Array<{ match: (s: ConsoleSnapshot) => boolean; resolve: (s: ConsoleSnapshot) => void }> =
    [];
  private closeRequest: (() => void) | undefined;

  static open(url: string, headers: Record<string, string>): Promise<StatusStream> {
    const stream = new StatusStream();
    return new Promise((resolve, reject) => {
      const req = request(`${url}/api/events`, { headers }, (res) => {
        if (res.statusCode !== 200) {
          reject(new Error(`events: HTTP ${res.statusCode}`));
          res.resume();
          return;
        }
        res.setEncoding("utf8");
        res.on("data", (text: string) => stream.onText(text));
        resolve(stream);
      });
      stream.closeRequest = () => req.destroy();
      req.on("error", (err) => {
        if (!stream.closeRequest) return;
        reject(err);
      });
      req.end();
    });
  }

  /** Resolves with the first snapshot (already received or still to come) that matches. */
  next(match: (s: ConsoleSnapshot) => boolean): Promise<ConsoleSnapshot> {
    const seen = this.snapshots.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.push({ match, resolve }));
  }

  close(): void {
    const close = this.closeRequest;
    this.closeRequest = undefined;
    close?.();
  }

  private onText(text: string): void {
    this.raw += text;
    this.buffer += text;
    let end = this.buffer.indexOf("\n\n");
    while (end >= 0) {
      const frame = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const lines = frame.split("\n");
      if (lines.includes("event: status")) {
        const data = lines
          .filter((l) => l.startsWith("data: "))
          .map((l) => l.slice(6))
          .join("\n");
        const snapshot = JSON.parse(data) as ConsoleSnapshot;
        this.snapshots.push(snapshot);
        for (const w of [...this.waiters]) {
          if (!w.match(snapshot)) continue;
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(snapshot);
        }
      }
      end = this.buffer.indexOf("\n\n");
    }
  }
}

/** Every string in a JSON document (keys and values): where card data could hide. */
export function jsonStrings(text: string): string {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (typeof v === "string") out.push(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === "object")
      for (const [k, x] of Object.entries(v)) {
        out.push(k);
        walk(x);
      }
  };
  walk(JSON.parse(text));
  return out.join("\n");
}
