import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it, onTestFailed, vi } from "vitest";
import type { Operation } from "../../agent/d1/operation.js";
import { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import {
  VirtualEvolisPrinter,
  type VirtualPrinterOptions,
} from "../../simulator/printer/virtual-evolis-printer.js";
import { PtyDevice } from "../../simulator/pty/pty-device.js";
import { STATION, sampleJob } from "./rig.js";
import { parseExposition, type Sample } from "./scrape.js";
import { tempDir } from "./support.js";

/**
 * Issue 16, case 7, on the real process: `kiosk-agent run` (bin/kiosk-agent.mjs) under Debian's
 * libfaketime, whose wall clock the test steps ±3 h while a job is queued, in the mouth, held, and
 * unacknowledged, as NTP steps a kiosk's clock. Only CLOCK_REALTIME moves
 * (FAKETIME_DONT_FAKE_MONOTONIC=1), as with NTP; the offset is read from a file at every time call
 * (FAKETIME_TIMESTAMP_FILE + FAKETIME_NO_CACHE=1), so a step lands at once. The D1 emulator and the
 * simulated printer (on a pseudo-terminal) run here, on the real clock: every time the test measures
 * is real. Each test also checks that the agent's own clock did move (its log lines' `time`).
 * The same cases on a ManualClock: test/agent/clock-step.test.ts. docs/architecture.md#time.
 */

const H3 = 3 * 3_600_000;
const STEPS: Array<[string, number]> = [
  ["+3 h", H3],
  ["-3 h", -H3],
];
const AGENT = fileURLToPath(new URL("../../bin/kiosk-agent.mjs", import.meta.url));

/** Debian's libfaketime (package faketime, installed by scripts/setup.sh), for this architecture. */
const LIBFAKETIME = readdirSync("/usr/lib")
  .map((d) => join("/usr/lib", d, "faketime", "libfaketime.so.1"))
  .find((f) => existsSync(f));

interface Kiosk {
  emulator: D1Emulator;
  printer: VirtualEvolisPrinter;
  /** Steps the agent's wall clock to the real time + `offsetMs`; its monotonic clock stays. */
  stepWall(offsetMs: number): void;
  /** The agent's log lines so far. */
  log(): Array<Record<string, unknown>>;
  /** GET /metrics from the agent's health endpoint. */
  metrics(): Promise<Sample[]>;
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** D1 emulator and simulated printer here; `kiosk-agent run` under libfaketime, connected. */
async function startKiosk(
  options: {
    printer?: VirtualPrinterOptions;
    ackMode?: "auto" | "manual";
    d1?: Record<string, unknown>;
    production?: Record<string, unknown>;
    /** Before the agent starts: a fault it must find at its first status read. */
    prepare?: (printer: VirtualEvolisPrinter) => void;
  } = {},
): Promise<Kiosk> {
  if (!LIBFAKETIME) {
    throw new Error("libfaketime not found: run `npm run setup` (it installs Debian's faketime package)");
  }
  const { dir, remove } = tempDir("kiosk-clock-step-");
  cleanups.push(remove);
  const token = randomBytes(12).toString("hex");
  const emulator = new D1Emulator({ token, ackMode: options.ackMode ?? "auto" });
  const { url } = await emulator.start();
  cleanups.push(() => emulator.stop());
  const printer = new VirtualEvolisPrinter({ takeAfterMs: null, ...options.printer });
  options.prepare?.(printer);
  const pty = await PtyDevice.start(printer, { linkPath: join(dir, "ttyPRINTER") });
  cleanups.push(() => pty.close());

  const offsetFile = join(dir, "faketime.rc");
  const stepWall = (offsetMs: number): void => {
    // Whole: libfaketime reads the file at every call and must never see it half-written.
    writeFileSync(`${offsetFile}.tmp`, `${offsetMs >= 0 ? "+" : "-"}${Math.abs(offsetMs) / 1000}\n`);
    renameSync(`${offsetFile}.tmp`, offsetFile);
  };
  stepWall(0);
  const logFile = join(dir, "agent.log");
  const configFile = join(dir, "config.json");
  writeFileSync(
    configFile,
    JSON.stringify({
      station: { id: STATION },
      d1: { url, token, allowInsecure: true, backoff: { initialMs: 50, maxMs: 500 }, ...options.d1 },
      dataDir: join(dir, "data"),
      printer: { path: pty.path, statusPollMs: 50 },
      production: { defaultCollectTimeoutSec: 5, holdWhileStoppedSec: 60, ...options.production },
      health: { enabled: true, port: 0 },
      shutdown: { graceSec: 0.5, flushSec: 1 },
      log: { level: "debug", file: logFile },
    }),
  );
  const child: ChildProcess = spawn(process.execPath, [AGENT, "run", "--config", configFile], {
    stdio: ["ignore", "ignore", "pipe"],
    env: {
      ...process.env,
      LD_PRELOAD: LIBFAKETIME,
      FAKETIME_TIMESTAMP_FILE: offsetFile,
      FAKETIME_NO_CACHE: "1",
      FAKETIME_DONT_FAKE_MONOTONIC: "1",
      // Files keep their real times, as after an NTP step.
      NO_FAKE_STAT: "1",
    },
  });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString("utf8");
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  cleanups.push(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(killer);
  });
  await emulator.waitForConnection(STATION, 15_000).catch((err: Error) => {
    throw new Error(`${err.message}; agent stderr: ${stderr}`);
  });

  onTestFailed(() => {
    const tail = existsSync(logFile) ? readFileSync(logFile, "utf8").split("\n").slice(-40).join("\n") : "";
    console.error(`agent stderr:\n${stderr}\nagent log (last 40 lines):\n${tail}`);
  });
  const log = (): Array<Record<string, unknown>> =>
    existsSync(logFile)
      ? readFileSync(logFile, "utf8")
          .split("\n")
          .filter((l) => l.startsWith("{") && l.endsWith("}"))
          .map((l) => JSON.parse(l) as Record<string, unknown>)
      : [];
  return {
    emulator,
    printer,
    stepWall,
    log,
    async metrics() {
      const port = log().find((l) => l.msg === "health endpoint listening")?.port;
      if (typeof port !== "number") throw new Error("the agent's health endpoint is not listening");
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      return parseExposition(await res.text());
    },
  };
}

/**
 * Resolves with the real time (ms, performance.now()) of the next `event` whose arguments pass
 * `which`; fails after `ms`.
 */
function next(
  emitter: NodeJS.EventEmitter,
  event: string,
  ms: number,
  what = event,
  which: (...args: unknown[]) => boolean = () => true,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`${what}: not within ${ms} ms`));
    }, ms);
    const on = (...args: unknown[]): void => {
      if (!which(...args)) return;
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(performance.now());
    };
    emitter.on(event, on);
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** D1's rule: no endTime before its startTime. */
function endsBeforeStart(ops: Operation[]): Operation[] {
  return ops.filter((o) => o.endTime !== undefined && Date.parse(o.endTime) < Date.parse(o.startTime));
}

/**
 * The step reached the agent: a log line `msg` carries the agent's wall time, which must be the real
 * time it was written at plus `offsetMs`. `realAt`: the real wall time (this process is not under
 * faketime) of what the line reports. Waits a little: the log file is written asynchronously.
 */
async function expectAgentWallAt(k: Kiosk, msg: string, realAt: number, offsetMs: number): Promise<void> {
  await vi.waitFor(
    () => {
      const times = k.log().flatMap((l) => (l.msg === msg ? [l.time as number] : []));
      const off = times.map((t) => t - realAt);
      if (!off.some((o) => Math.abs(o - offsetMs) < 2_000)) {
        throw new Error(
          `no "${msg}" line at the real time ${offsetMs / 1000} s on: ${off.map((o) => o / 1000)}`,
        );
      }
    },
    { timeout: 3_000, interval: 50 },
  );
}

/** Durations on /metrics: the sums of both histograms, none negative. */
async function durations(k: Kiosk): Promise<Map<string, number>> {
  const sums = new Map<string, number>();
  for (const s of await k.metrics()) {
    if (s.name === "kiosk_agent_step_duration_seconds_sum") sums.set(`step ${s.labels.step}`, s.value);
    if (s.name === "kiosk_agent_card_duration_seconds_sum") sums.set(`card ${s.labels.state}`, s.value);
  }
  expect([...sums].filter(([, v]) => v < 0)).toEqual([]);
  return sums;
}

describe.each(STEPS)("kiosk-agent run under libfaketime, wall clock stepped %s", (_label, step) => {
  it(
    "a card in the mouth is captured CB_TIME at its collect timeout (±1 s); the job queued behind it ends no earlier than it started",
    { timeout: 40_000 },
    async () => {
      const COLLECT_MS = 5_000;
      const k = await startKiosk({ printer: { takeAfterMs: null } });
      const inMouth = sampleJob();
      inMouth.productionData.delivery.collectTimeoutSec = COLLECT_MS / 1000;
      const queued = sampleJob();
      const ids = [inMouth.operationId as string, queued.operationId as string];
      const presented = next(k.printer, "card-presented", 15_000, "first card in the mouth");
      for (const j of [inMouth, queued])
        expect(await k.emulator.push(j)).toMatchObject({ result: "accepted" });
      const inMouthAt = await presented;
      const captured = next(k.printer, "card-captured", COLLECT_MS + 6_000, "the untaken card captured");
      // Well inside the wait: the card has been in the mouth for 1 s, the other job is queued.
      await sleep(1_000);
      k.stepWall(step);
      const capturedAt = await captured;
      const capturedWall = Date.now();
      expect(Math.abs(capturedAt - inMouthAt - COLLECT_MS)).toBeLessThanOrEqual(1_000);
      await k.emulator.waitFor(() => k.emulator.terminalCount(ids[0]!) > 0, 5_000, "CB_TIME at D1");
      expect(k.emulator.latest(ids[0]!)?.details).toEqual({
        status: "CARD_PROD_EXCEPTION",
        reason: "CB_TIME",
      });
      await expectAgentWallAt(k, "card not taken in time; capturing it", capturedWall, step);

      // The queued job comes next; the cardholder takes it.
      k.printer.once("card-presented", () => setImmediate(() => k.printer.takeCardNow()));
      await k.emulator.waitFor(() => k.emulator.terminalCount(ids[1]!) > 0, 10_000, "the queued job ended");
      expect(k.emulator.latest(ids[1]!)?.details.status).toBe("CARD_PROD_DONE");
      expect(k.printer.record.map((c) => c.outcome)).toEqual(["captured", "taken"]);
      expect(endsBeforeStart(k.emulator.operations())).toEqual([]);
      // Nor any other breach of D1's contract (a startTime that changed between a job's statuses, …).
      expect(k.emulator.violations).toEqual([]);

      const sums = await durations(k);
      // The collect steps: the captured card's 5 s and the taken one's moment.
      expect(sums.get("step collect")).toBeGreaterThanOrEqual(COLLECT_MS / 1000 - 1);
      expect(sums.get("step collect")).toBeLessThanOrEqual(COLLECT_MS / 1000 + 2);
    },
  );

  it(
    "a job held for a stopped printer fails at the hold bound (±1 s), though the stop reason changes meanwhile",
    { timeout: 40_000 },
    async () => {
      const HOLD_MS = 4_000;
      const k = await startKiosk({
        production: { holdWhileStoppedSec: HOLD_MS / 1000 },
        prepare: (printer) => printer.injectFault("feeder-empty", { persistent: true }),
      });
      const held = sampleJob();
      const id = held.operationId as string;
      await vi.waitFor(
        () => {
          if (!k.log().some((l) => l.msg === "printer state" && l.reason === "FEEDER_EMPTY"))
            throw new Error("printer not stopped FEEDER_EMPTY yet");
        },
        { timeout: 10_000, interval: 50 },
      );
      expect(await k.emulator.push(held)).toMatchObject({ result: "accepted" });
      const acceptedAt = performance.now();
      const ended = next(
        k.emulator,
        "operation",
        HOLD_MS + 6_000,
        "the held job's end at D1",
        (op) => (op as Operation).endTime !== undefined,
      );
      await k.emulator.waitFor(() => k.emulator.operations(id).length === 1, 5_000, "CARD_PROD_READY");
      await sleep(1_000);
      k.stepWall(step);
      // The technician opens the cover to load cards: a new stop reason wakes the wait for the printer.
      k.printer.injectFault("cover-open", { persistent: true });
      const endedAt = await ended;
      const endedWall = Date.now();
      expect(k.emulator.latest(id)?.details).toEqual({ status: "CARD_PROD_EXCEPTION", reason: "COVER_OPEN" });
      expect(Math.abs(endedAt - acceptedAt - HOLD_MS)).toBeLessThanOrEqual(1_000);
      expect(k.printer.record).toEqual([]);
      expect(endsBeforeStart(k.emulator.operations())).toEqual([]);
      // Nor any other breach of D1's contract (a startTime that changed between a job's statuses, …).
      expect(k.emulator.violations).toEqual([]);
      await expectAgentWallAt(
        k,
        "printer stopped for longer than the hold bound; job fails",
        endedWall,
        step,
      );
      const sums = await durations(k);
      expect(Math.abs(sums.get("card FAILED")! - HOLD_MS / 1000)).toBeLessThanOrEqual(1);
    },
  );

  it(
    "statuses D1 does not acknowledge are re-sent at resendAfterMs, neither early nor never",
    { timeout: 40_000 },
    async () => {
      const RESEND_MS = 3_000;
      const k = await startKiosk({
        ackMode: "manual",
        printer: { takeAfterMs: 0 },
        d1: { resendAfterMs: RESEND_MS },
      });
      // First arrival and first repeat of each event, in real time.
      const first = new Map<string, number>();
      const repeat = new Map<string, number>();
      k.emulator.on("operation", (_op, e) => first.set(e.eventId, performance.now()));
      k.emulator.on("duplicate", (_op, e) => {
        if (!repeat.has(e.eventId)) repeat.set(e.eventId, performance.now());
      });
      const [a, b] = [sampleJob(), sampleJob()];
      expect(await k.emulator.push(a)).toMatchObject({ result: "accepted" });
      await k.emulator.waitFor(() => k.emulator.terminalCount(a.operationId as string) > 0, 10_000, "job a");
      const t0 = Math.min(...first.values());
      await sleep(t0 + RESEND_MS / 2 - performance.now());
      expect(await k.emulator.push(b)).toMatchObject({ result: "accepted" });
      await k.emulator.waitFor(() => k.emulator.terminalCount(b.operationId as string) > 0, 10_000, "job b");
      // Four statuses sent, none acknowledged, none due yet; then the step.
      expect(first.size).toBe(4);
      expect(repeat.size).toBe(0);
      await sleep(t0 + (RESEND_MS * 3) / 4 - performance.now());
      k.stepWall(step);
      await k.emulator.waitFor(() => repeat.size === 4, 2 * RESEND_MS + 3_000, "every status re-sent");
      const resentWall = Date.now();
      // Each status goes again no sooner than resendAfterMs after its own send and no later than two
      // periods (the resend timer's granularity); the first one, which armed the timer, at one period.
      const gaps = [...first].map(([id, at]) => Math.round(repeat.get(id)! - at));
      expect({
        early: gaps.filter((g) => g < RESEND_MS - 500),
        late: gaps.filter((g) => g > 2 * RESEND_MS + 1_000),
      }).toEqual({ early: [], late: [] });
      expect(Math.abs(gaps[0]! - RESEND_MS)).toBeLessThanOrEqual(1_000);
      expect(endsBeforeStart(k.emulator.operations())).toEqual([]);
      // Nor any other breach of D1's contract (a startTime that changed between a job's statuses, …).
      expect(k.emulator.violations).toEqual([]);
      await expectAgentWallAt(k, "events sent to D1", resentWall, step);
      k.emulator.ack();
      await durations(k);
    },
  );
});
