import { EventEmitter } from "node:events";
import { createServer } from "node:net";
import type { Histogram } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { D1Link } from "../../agent/d1/link.js";
import type { AgentToD1 } from "../../agent/d1/messages.js";
import type { Operation } from "../../agent/d1/operation.js";
import { createMetrics, type MetricsSource } from "../../agent/health/metrics.js";
import { silentLogger } from "../../agent/log/logger.js";
import { OutboxSender } from "../../agent/outbox/sender.js";
import { ProductionPipeline } from "../../agent/pipeline/pipeline.js";
import { StockRouter } from "../../agent/stock/stock-router.js";
import type { OutboxEvent } from "../../agent/store/job-store.js";
import { ManualClock } from "../../agent/util/clock.js";
import type { MagstripeEncoder } from "../../drivers/magstripe/encoder.js";
import { blankImage } from "../../drivers/printer/card-image.js";
import { EVOLIS_PRINT_AREA } from "../../drivers/printer/evolis/panel.js";
import { job, type Rig, STATION, startRig, until } from "../support/e2e.js";
import { FakePrinter, settle } from "../support/fake-printer.js";
import { captureLogs } from "../support/log-capture.js";
import { pipelineRig } from "../support/pipeline-rig.js";

/**
 * Issue 16, case 7: the wall clock stepped ±3 h (as NTP or a technician does) moves no deadline and
 * no duration, and D1 never gets an endTime before its startTime (docs/architecture.md#time).
 * `ManualClock.stepWall()` steps the wall clock alone; every wait below is counted in the test's own
 * advance() calls (`elapsed`), never read back from the clock under test. The same cases run on the
 * real process under libfaketime in test/ops/clock-step.test.ts.
 */

const H3 = 3 * 3_600_000;
const STEPS: Array<[string, number]> = [
  ["+3 h", H3],
  ["-3 h", -H3],
];

/** D1's rule: no endTime before its startTime (ISO strings of one format compare as times). */
function endsBeforeStart(ops: Operation[]): Operation[] {
  return ops.filter((o) => o.endTime !== undefined && Date.parse(o.endTime) < Date.parse(o.startTime));
}

describe.each(STEPS)("wall clock stepped %s", (_label, step) => {
  const cleanups: Array<() => void> = [];
  let rig: Rig | undefined;
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) c();
    const r = rig;
    rig = undefined;
    await r?.close();
  });
  const { openStore, acceptJob, startedSupervisor, pipelineFor } = pipelineRig(cleanups);

  it("a card in the mouth is captured CB_TIME at the collect timeout; the job queued behind it ends no earlier than it started", async () => {
    const COLLECT_MS = 20_000;
    const clock = new ManualClock(Date.now());
    rig = await startRig({ clock, takeAfterMs: null, config: { d1: { pingIntervalMs: 300_000 } } as never });
    const r = rig;
    // Monotonic time as the test moved it: never read back from the clock under test.
    let elapsed = 0;
    const presentedAt: number[] = [];
    let capturedAt: number | undefined;
    r.printer.on("card-presented", () => presentedAt.push(elapsed));
    r.printer.on("card-captured", () => {
      capturedAt = elapsed;
    });
    const inMouth = job();
    (inMouth.productionData as { delivery: { collectTimeoutSec: number } }).delivery.collectTimeoutSec =
      COLLECT_MS / 1000;
    const queued = job();
    const ids = [inMouth.operationId as string, queued.operationId as string];
    for (const j of [inMouth, queued])
      expect(await r.emulator.push(j, { station: STATION })).toMatchObject({ result: "accepted" });

    // 100 ms of monotonic time per turn; the step comes 1 s after the card reached the mouth.
    let stepped = false;
    while (r.emulator.terminalCount(ids[0]!) === 0 && elapsed < COLLECT_MS + 10_000) {
      if (!stepped && presentedAt[0] !== undefined && elapsed >= presentedAt[0] + 1_000) {
        clock.stepWall(step);
        stepped = true;
      }
      elapsed += 100;
      clock.advance(100);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    expect(stepped).toBe(true);
    expect(r.emulator.latest(ids[0]!)?.details).toEqual({ status: "CARD_PROD_EXCEPTION", reason: "CB_TIME" });
    // Within ±1 s of the configured timeout, whichever way the wall clock went.
    expect(Math.abs(capturedAt! - presentedAt[0]! - COLLECT_MS)).toBeLessThanOrEqual(1_000);

    // The queued job: produced next, taken at once.
    r.printer.on("card-presented", () => setImmediate(() => r.printer.takeCardNow()));
    while (r.emulator.terminalCount(ids[1]!) === 0 && elapsed < 2 * COLLECT_MS + 10_000) {
      elapsed += 100;
      clock.advance(100);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    expect(r.emulator.latest(ids[1]!)?.details.status).toBe("CARD_PROD_DONE");
    const ops = r.emulator.operations();
    expect(ops.filter((o) => o.endTime !== undefined)).toHaveLength(2);
    expect(endsBeforeStart(ops)).toEqual([]);
  });

  it("a job held for a stopped printer fails at the hold bound, not hours early or late, even when the stop reason changes meanwhile", async () => {
    const HOLD_MS = 120_000;
    const clock = new ManualClock();
    const store = openStore(clock);
    const printer = new FakePrinter({ stopReasons: ["FEEDER_EMPTY"] });
    const supervisor = await startedSupervisor(printer, clock);
    expect(supervisor.status).toMatchObject({ state: "stopped", reason: "FEEDER_EMPTY" });
    const events: OutboxEvent[] = [];
    const pipeline = pipelineFor(store, printer, supervisor, clock, events, { holdWhileStoppedMs: HOLD_MS });
    cleanups.push(() => void pipeline.stop());
    acceptJob(store, "op-held");
    pipeline.start();
    await settle();
    expect(pipeline.current).toEqual({ operationId: "op-held", step: "render" });

    let elapsed = 0;
    let failedAt: number | undefined;
    while (failedAt === undefined && elapsed < HOLD_MS + 10_000) {
      if (elapsed === 10_000) {
        clock.stepWall(step);
        // The technician opens the cover to load cards: a new stop reason, which wakes the wait.
        printer.status.stopReasons = ["COVER_OPEN"];
      }
      clock.advance(1_000);
      elapsed += 1_000;
      await settle();
      if (store.get("op-held")?.state === "FAILED") failedAt = elapsed;
    }
    expect(supervisor.status.reason).toBe("COVER_OPEN");
    expect(failedAt).toBe(HOLD_MS);
    expect(events.map((e) => [e.d1Status, e.operation.details.reason])).toEqual([
      ["CARD_PROD_EXCEPTION", "COVER_OPEN"],
    ]);
    expect(endsBeforeStart(events.map((e) => e.operation))).toEqual([]);
    expect(printer.commands).toEqual([]);
  });

  it("a job held for its empty feeder (one of two) fails FEEDER_EMPTY at the hold bound, though other jobs wake the pipeline meanwhile", async () => {
    const HOLD_MS = 120_000;
    const clock = new ManualClock();
    const store = openStore(clock);
    const printer = new FakePrinter({}, { feeders: ["1", "2"] });
    printer.status.feeders[1]!.empty = true;
    const supervisor = await startedSupervisor(printer, clock);
    expect(supervisor.status.state).toBe("idle");
    expect([...supervisor.emptyFeeders().keys()]).toEqual(["2"]);
    const events: OutboxEvent[] = [];
    const router = new StockRouter(
      [
        { id: "1", stock: "DEBIT", nearEmptyAt: 0 },
        { id: "2", stock: "CREDIT", nearEmptyAt: 0 },
      ],
      () => undefined,
    );
    const pipeline = new ProductionPipeline({
      store,
      printer: printer.driver,
      supervisor,
      magstripe: {} as MagstripeEncoder,
      holdWhileStoppedMs: HOLD_MS,
      router,
      render: () => blankImage(EVOLIS_PRINT_AREA),
      clock,
      logger: silentLogger,
      defaultCollectTimeoutSec: 30,
      onEvent: (e) => events.push(e),
    });
    cleanups.push(() => void pipeline.stop());
    const accept = (id: string, cardStock: string) => {
      store.accept({
        kind: "valid",
        operationId: id,
        cardId: `card-${id}`,
        jobJson: JSON.stringify({ productionData: { cardStock } }),
        cardStock,
      });
      pipeline.wake();
    };
    accept("op-held", "CREDIT");
    pipeline.start();
    await settle();

    let elapsed = 0;
    let failedAt: number | undefined;
    while (failedAt === undefined && elapsed < HOLD_MS + 10_000) {
      if (elapsed === 10_000) {
        clock.stepWall(step);
        // D1 pushes a job for the other feeder: the pipeline wakes and looks at its holds again.
        accept("op-debit", "DEBIT");
      }
      clock.advance(1_000);
      elapsed += 1_000;
      await settle();
      if (store.get("op-held")?.state === "FAILED") failedAt = elapsed;
    }
    expect(store.get("op-debit")).toMatchObject({ state: "DONE" });
    expect(failedAt).toBe(HOLD_MS);
    expect(store.get("op-held")).toMatchObject({ state: "FAILED", reason: "FEEDER_EMPTY" });
    expect(endsBeforeStart(events.map((e) => e.operation))).toEqual([]);
  });

  it("an unacknowledged status is re-sent resendAfterMs after it was sent, neither hours early nor never", async () => {
    const RESEND_MS = 30_000;
    const clock = new ManualClock();
    const store = openStore(clock);
    let elapsed = 0;
    const link = Object.assign(new EventEmitter(), {
      isUp: true,
      sent: [] as Array<{ at: number; eventIds: string[] }>,
      send(message: AgentToD1): boolean {
        if (message.type === "notify") link.sent.push({ at: elapsed, eventIds: message.eventIds });
        return true;
      },
    });
    const sender = new OutboxSender({
      store,
      link: link as unknown as D1Link,
      clock,
      logger: silentLogger,
      resendAfterMs: RESEND_MS,
    });
    cleanups.push(() => sender.stop());
    // Counted before the clock moves: the resend timer fires at the end of a tick (ticks of RESEND_MS / 4).
    const tick = (ms: number) => {
      elapsed += ms;
      clock.advance(ms);
    };
    acceptJob(store, "op-a");
    sender.flush();
    tick(RESEND_MS / 2);
    acceptJob(store, "op-b");
    sender.flush();
    const [a, b] = link.sent.map((s) => s.eventIds[0]!);
    expect(link.sent).toEqual([
      { at: 0, eventIds: [a] },
      { at: RESEND_MS / 2, eventIds: [b] },
    ]);
    // Both unacknowledged when the wall clock steps.
    tick(RESEND_MS / 4);
    clock.stepWall(step);
    for (let i = 0; i < 5; i++) tick(RESEND_MS / 4);
    // Each event goes again RESEND_MS after its own send (issue 14, 10a): a at 1x and 2x, b (sent
    // at 0.5x) at 1.5x. None sooner, none skipped.
    expect(link.sent.slice(2)).toEqual([
      { at: RESEND_MS, eventIds: [a] },
      { at: 1.5 * RESEND_MS, eventIds: [b] },
      { at: 2 * RESEND_MS, eventIds: [a] },
    ]);
    expect(sender.stats.resent).toBe(3);
  });

  it("the D1 link's reconnect backoff waits its delay in monotonic time", async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const clock = new ManualClock();
    const logs = captureLogs();
    const link = new D1Link({
      url: `ws://127.0.0.1:${port}/`,
      token: "test-token-123",
      station: STATION,
      agentVersion: "test",
      clock,
      logger: logs.logger,
      backoff: { initialMs: 1_000, maxMs: 8_000, random: () => 1 },
      pingIntervalMs: 60_000,
    });
    cleanups.push(() => void link.stop());
    const retries = () => logs.lines.filter((l) => l.includes("D1 unreachable")).map((l) => JSON.parse(l));
    link.start();
    await until(() => retries().length === 1, 5_000, "first retry");
    clock.stepWall(step);
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const { delayMs } = retries()[attempt - 1]!;
      delays.push(delayMs);
      clock.advance(delayMs - 1);
      // No attempt before the delay has passed (a refused connection is seen within milliseconds).
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(retries()).toHaveLength(attempt);
      clock.advance(1);
      await until(() => retries().length === attempt + 1, 5_000, `retry ${attempt + 1}`);
      if (attempt === 1) clock.stepWall(-step);
    }
    expect(delays).toEqual([1_000, 2_000, 4_000]);
  });

  it("metrics: step and card durations are the monotonic time between the pipeline's events, never negative", async () => {
    const clock = new ManualClock();
    const pipeline = new EventEmitter();
    const { registry, dispose } = createMetrics({ pipeline } as unknown as MetricsSource, {
      clock,
      station: STATION,
      version: "test",
      defaultMetrics: false,
    });
    cleanups.push(dispose);
    pipeline.emit("step", "op-1", "render");
    clock.advance(500);
    clock.stepWall(step);
    clock.advance(1_500);
    pipeline.emit("step", "op-1", "collect");
    clock.advance(1_000);
    clock.stepWall(-step);
    clock.advance(1_000);
    pipeline.emit("finished", "op-1", "FAILED");
    const read = async (name: string) => {
      const { values } = await (registry.getSingleMetric(name) as Histogram).get();
      const of = (suffix: string, labels: Record<string, string | number>) =>
        values.find(
          (v) =>
            v.metricName === `${name}${suffix}` &&
            Object.entries(labels).every(([k, x]) => v.labels[k] === x),
        )?.value;
      return of;
    };
    const steps = await read("kiosk_agent_step_duration_seconds");
    expect(steps("_sum", { step: "render" })).toBe(2);
    expect(steps("_sum", { step: "collect" })).toBe(2);
    // A negative duration would land in the first bucket.
    expect(steps("_bucket", { step: "render", le: 0.05 })).toBe(0);
    expect(steps("_bucket", { step: "collect", le: 0.05 })).toBe(0);
    const cards = await read("kiosk_agent_card_duration_seconds");
    expect(cards("_sum", { state: "FAILED" })).toBe(4);
    expect(cards("_bucket", { state: "FAILED", le: 0.05 })).toBe(0);
  });

  it("the events D1 gets: endTime is never before startTime, and follows the wall clock otherwise", () => {
    const clock = new ManualClock();
    const store = openStore(clock);
    acceptJob(store, "op-done");
    acceptJob(store, "op-failed");
    clock.advance(5_000);
    clock.stepWall(step);
    const ended: OutboxEvent[] = [];
    for (const [from, to] of [
      ["READY", "PRODUCING"],
      ["PRODUCING", "PRESENTED"],
      ["PRESENTED", "DONE"],
    ] as const) {
      const e = store.transition("op-done", from, to);
      if (e) ended.push(e);
    }
    const failed = store.transition("op-failed", "READY", "FAILED", {
      reason: "FEEDER_EMPTY",
      errorCode: "FEEDER_EMPTY",
      error: "feeder 1 empty",
    });
    ended.push(failed!);
    const ops = ended.map((e) => e.operation);
    expect(ops.map((o) => o.details.status)).toEqual(["CARD_PROD_DONE", "CARD_PROD_EXCEPTION"]);
    expect(endsBeforeStart(ops)).toEqual([]);
    for (const op of ops) {
      const took = Date.parse(op.endTime!) - Date.parse(op.startTime);
      // Forward: the wall clock says 3 h passed, and D1 is told so. Backward: the end is clamped to the start.
      expect(took).toBe(step > 0 ? step + 5_000 : 0);
    }
    expect(store.get("op-done")!.endedAt! >= store.get("op-done")!.acceptedAt).toBe(true);
  });
});
