import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import type { KioskAgent } from "../../agent/agent.js";
import type { ProductionStep } from "../../agent/pipeline/pipeline.js";
import { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import { VirtualEvolisPrinter } from "../../simulator/printer/virtual-evolis-printer.js";
import { PtyDevice } from "../../simulator/pty/pty-device.js";
import { type OpsRig, STATION, sampleJob, startOpsRig } from "./rig.js";
import { tempDir } from "./support.js";

/** Resolves when the pipeline enters `step` (and runs `then` synchronously at that moment). */
function onStep(agent: KioskAgent, step: ProductionStep, then: () => void = () => undefined): Promise<void> {
  return new Promise((resolve) => {
    const listener = (_id: string, s: ProductionStep): void => {
      if (s !== step) return;
      agent.pipeline.off("step", listener);
      then();
      resolve();
    };
    agent.pipeline.on("step", listener);
  });
}

/** The store as the next run would see it (the agent has closed it). */
function readStore(dataDir: string) {
  const db = new Database(join(dataDir, "jobs.sqlite"), { readonly: true });
  try {
    const job = (id: string) =>
      db
        .prepare("SELECT state, reason, sealed_job IS NOT NULL AS sealed FROM jobs WHERE operation_id = ?")
        .get(id) as { state: string; reason: string | null; sealed: number } | undefined;
    const unacked = (
      db.prepare("SELECT COUNT(*) AS n FROM events WHERE acked_at IS NULL").get() as { n: number }
    ).n;
    return { job, unacked };
  } catch (err) {
    db.close();
    throw err;
  }
}

describe("graceful stop (SIGTERM)", () => {
  let rig: OpsRig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  it("in production: the current step finishes, the card is rejected (SHUTDOWN); new pushes are refused; READY jobs stay", async () => {
    rig = await startOpsRig({
      printer: { takeAfterMs: 0, latency: { commandMs: 1, printMs: 100, magMs: 5 } },
      config: { shutdown: { graceSec: 10, flushSec: 5 } },
    });
    const r = rig;
    const inHand = sampleJob();
    const queued = sampleJob();
    let stopping: Promise<void> | undefined;
    // The step event comes just before the printer command: the stop begins once printing is under way.
    const printing = onStep(r.agent, "print", () =>
      queueMicrotask(() => {
        stopping = r.agent.shutdown("SIGTERM");
      }),
    );
    const closed = new Promise<number>((resolve) =>
      r.emulator.once("disconnect", ({ code }) => resolve(code)),
    );
    await r.emulator.push(inHand);
    await r.emulator.push(queued);
    await printing;

    // While stopping: a push is refused and not stored.
    const late = sampleJob();
    expect(await r.emulator.push(late)).toMatchObject({
      result: "refused",
      errorCode: "SHUTTING_DOWN",
      operationId: late.operationId,
    });
    await stopping;

    // D1 heard the card's end before the link closed ("going away").
    expect(
      r.emulator.operations(inHand.operationId).map((o) => [o.details.status, o.details.reason]),
    ).toEqual([
      ["CARD_PROD_READY", undefined],
      ["CARD_PROD_EXCEPTION", "SHUTDOWN"],
    ]);
    expect(r.emulator.latest(inHand.operationId)).toMatchObject({
      errorCode: "SHUTDOWN",
      error: "step encode",
    });
    expect(r.emulator.operations(queued.operationId).map((o) => o.details.status)).toEqual([
      "CARD_PROD_READY",
    ]);
    expect(await closed).toBe(1001);

    // The print step finished; the card never reached the encoder and went to the reject box.
    const [card] = r.printer.record;
    expect(card).toMatchObject({ outcome: "rejected" });
    expect(card!.frontInkDots).toBeGreaterThan(0);
    expect(card!.tracks).toEqual([]);
    expect(r.printer.record).toHaveLength(1);

    const store = readStore(r.dataDir);
    expect(store.job(inHand.operationId)).toEqual({ state: "FAILED", reason: "SHUTDOWN", sealed: 0 });
    expect(store.job(queued.operationId)).toMatchObject({ state: "READY", sealed: 1 });
    expect(store.job(late.operationId)).toBeUndefined();
    expect(store.unacked).toBe(0);
    expect(r.log.lines.at(-1)).toMatchObject({ msg: "kiosk agent stopped" });
  });

  it("presented: the cardholder may still take the card within the grace period (DONE)", async () => {
    rig = await startOpsRig({ printer: { takeAfterMs: null }, config: { shutdown: { graceSec: 10 } } });
    const r = rig;
    const job = sampleJob();
    let stopping: Promise<void> | undefined;
    const collecting = onStep(r.agent, "collect", () => {
      stopping = r.agent.shutdown();
      // The cardholder reaches for it while the agent is stopping.
      r.printer.takeCardNow();
    });
    await r.emulator.push(job);
    await collecting;
    await stopping;
    expect(r.emulator.latest(job.operationId)?.details.status).toBe("CARD_PROD_DONE");
    expect(r.printer.record[0]).toMatchObject({ outcome: "taken" });
  });

  it("presented and not taken by the end of the grace period: retracted to the capture bin (SHUTDOWN)", async () => {
    rig = await startOpsRig({ printer: { takeAfterMs: null }, config: { shutdown: { graceSec: 0.2 } } });
    const r = rig;
    const job = sampleJob();
    let stopping: Promise<void> | undefined;
    const collecting = onStep(r.agent, "collect", () => {
      stopping = r.agent.shutdown();
    });
    await r.emulator.push(job);
    await collecting;
    await stopping;
    expect(r.emulator.latest(job.operationId)).toMatchObject({
      details: { status: "CARD_PROD_EXCEPTION", reason: "SHUTDOWN" },
      errorCode: "SHUTDOWN",
      error: "step collect",
    });
    expect(r.printer.record[0]).toMatchObject({ outcome: "captured" });
  });

  it("shutdown() is idempotent and an idle agent stops at once", async () => {
    rig = await startOpsRig();
    await rig.agent.ready();
    const a = rig.agent.shutdown();
    const b = rig.agent.shutdown("SIGINT");
    expect(a).toBe(b);
    await a;
    expect(rig.agent.readiness()).toMatchObject({
      ready: false,
      reasons: expect.arrayContaining(["SHUTTING_DOWN"]),
    });
  });
});

describe("kiosk-agent run as a child process, printer on a pseudo-terminal", () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  // A real process: loading the agent through tsx takes seconds on a busy machine.
  it(
    "SIGTERM with a presented card: parked within the bound, statuses flushed, exit 0",
    { timeout: 60_000 },
    async () => {
      const { dir, remove } = tempDir("kiosk-sigterm-");
      cleanups.push(remove);
      const token = randomBytes(12).toString("hex");
      const emulator = new D1Emulator({ token });
      const { url } = await emulator.start();
      cleanups.push(() => emulator.stop());
      const printer = new VirtualEvolisPrinter({ takeAfterMs: null });
      const pty = await PtyDevice.start(printer, { linkPath: join(dir, "ttyPRINTER") });
      cleanups.push(() => pty.close());

      const logFile = join(dir, "agent.log");
      const configFile = join(dir, "config.json");
      writeFileSync(
        configFile,
        JSON.stringify({
          station: { id: STATION },
          d1: { url, token, allowInsecure: true },
          dataDir: join(dir, "data"),
          printer: { path: pty.path, statusPollMs: 50 },
          shutdown: { graceSec: 0.5, flushSec: 5 },
          log: { level: "debug", file: logFile },
        }),
      );
      const child: ChildProcess = spawn(
        process.execPath,
        ["bin/kiosk-agent.mjs", "run", "--config", configFile],
        {
          stdio: ["ignore", "ignore", "pipe"],
        },
      );
      let stderr = "";
      child.stderr?.on("data", (chunk: Buffer) => {
        stderr += chunk.toString("utf8");
      });
      const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
        child.once("exit", (code, signal) => resolve({ code, signal })),
      );
      cleanups.push(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      });

      await emulator.waitForConnection(STATION, 45_000);
      const presented = new Promise<void>((resolve) => printer.once("card-presented", () => resolve()));
      const job = sampleJob();
      expect(await emulator.push(job)).toMatchObject({ result: "accepted" });
      await presented;
      child.kill("SIGTERM");
      const signalled = Date.now();
      const exit = await exited;
      // Grace 0.5 s, retract, flush, close: well under the 120 s systemd allows.
      expect(Date.now() - signalled).toBeLessThan(10_000);
      expect({ ...exit, stderr }).toEqual({ code: 0, signal: null, stderr: "" });

      expect(emulator.latest(job.operationId)).toMatchObject({
        details: { status: "CARD_PROD_EXCEPTION", reason: "SHUTDOWN" },
      });
      expect(printer.record[0]).toMatchObject({ outcome: "captured" });
      const log = readFileSync(logFile, "utf8");
      expect(log).toContain('"msg":"stopping: no new jobs"');
      expect(log).toContain('"msg":"kiosk agent stopped"');
    },
  );
});
