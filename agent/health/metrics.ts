import type { EventEmitter } from "node:events";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { PrinterSnapshot, PrinterState } from "../devices/printer-supervisor.js";
import { JOB_STATES, type JobState } from "../jobs/state-machine.js";
import type { PipelineEvents } from "../pipeline/pipeline.js";
import type { Clock } from "../util/clock.js";

/** What the metrics read; KioskAgent has all of it. */
export interface MetricsSource {
  store: { countsByState(): Partial<Record<JobState, number>>; outboxDepth(): number };
  outbox: { stats: { sent: number; resent: number; acked: number } };
  link: { isUp: boolean; stats: { sessions: number; malformed: number } };
  supervisor: { status: PrinterSnapshot };
  pipeline: EventEmitter<PipelineEvents>;
}

export const PRINTER_STATES: readonly PrinterState[] = ["connecting", "idle", "busy", "stopped", "offline"];

/** Seconds; a card step takes from milliseconds (insert) to a minute (collect). */
const STEP_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/**
 * The agent's Prometheus metrics (docs/operations.md#metrics), on a registry of its own: gauges and
 * counters are read from the store, the outbox, the link and the printer supervisor when scraped;
 * step latencies are measured from the pipeline's `step` / `finished` events with the agent's clock.
 */
export function createMetrics(
  source: MetricsSource,
  options: { clock: Clock; station: string; version: string; defaultMetrics?: boolean },
): { registry: Registry; dispose: () => void } {
  const registry = new Registry();
  const registers = [registry];
  const { clock } = options;

  new Gauge({
    name: "kiosk_agent_info",
    help: "Constant 1; the labels say which agent this is.",
    labelNames: ["station", "version"],
    registers,
    collect() {
      this.set({ station: options.station, version: options.version }, 1);
    },
  });
  new Gauge({
    name: "kiosk_agent_jobs",
    help: "Jobs in the store by state (finished ones until retention deletes them).",
    labelNames: ["state"],
    registers,
    collect() {
      const counts = source.store.countsByState();
      for (const state of JOB_STATES) this.set({ state }, counts[state] ?? 0);
    },
  });
  new Gauge({
    name: "kiosk_agent_outbox_depth",
    help: "Status events written and not yet acknowledged by D1.",
    registers,
    collect() {
      this.set(source.store.outboxDepth());
    },
  });
  const fromStats = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  fromStats(
    "kiosk_agent_events_sent_total",
    "Status events sent to D1 (re-sends included).",
    () => source.outbox.stats.sent,
  );
  fromStats(
    "kiosk_agent_events_resent_total",
    "Status events sent again (reconnect or no ack in time).",
    () => source.outbox.stats.resent,
  );
  fromStats(
    "kiosk_agent_events_acked_total",
    "Status events acknowledged by D1.",
    () => source.outbox.stats.acked,
  );
  fromStats(
    "kiosk_agent_d1_sessions_total",
    "D1 sessions established (welcome received).",
    () => source.link.stats.sessions,
  );
  fromStats("kiosk_agent_d1_reconnects_total", "D1 sessions after the first one: reconnects.", () =>
    Math.max(0, source.link.stats.sessions - 1),
  );
  fromStats(
    "kiosk_agent_d1_malformed_messages_total",
    "Messages from D1 the agent could not read.",
    () => source.link.stats.malformed,
  );
  new Gauge({
    name: "kiosk_agent_d1_link_up",
    help: "1 while the D1 link is up (hello answered with welcome).",
    registers,
    collect() {
      this.set(source.link.isUp ? 1 : 0);
    },
  });
  new Gauge({
    name: "kiosk_agent_printer_state",
    help: "1 for the printer's current state (idle, busy, stopped, offline, connecting), 0 for the others.",
    labelNames: ["state"],
    registers,
    collect() {
      const now = source.supervisor.status.state;
      for (const state of PRINTER_STATES) this.set({ state }, state === now ? 1 : 0);
    },
  });
  new Gauge({
    name: "kiosk_agent_printer_stopped_reason",
    help: "1 with the reason keyword while the printer is stopped or offline (FEEDER_EMPTY, COVER_OPEN, …).",
    labelNames: ["reason"],
    registers,
    collect() {
      this.reset();
      const { state, reason } = source.supervisor.status;
      if ((state === "stopped" || state === "offline") && reason) this.set({ reason }, 1);
    },
  });

  const steps = new Histogram({
    name: "kiosk_agent_step_duration_seconds",
    help: "Duration of each production step (render includes waiting for the printer to be ready).",
    labelNames: ["step"],
    buckets: STEP_BUCKETS,
    registers,
  });
  const cards = new Histogram({
    name: "kiosk_agent_card_duration_seconds",
    help: "From the first step of a job to its terminal state, by final state.",
    labelNames: ["state"],
    buckets: STEP_BUCKETS,
    registers,
  });
  const finished = new Counter({
    name: "kiosk_agent_jobs_finished_total",
    help: "Jobs the pipeline ended, by final state.",
    labelNames: ["state"],
    registers,
  });
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: "kiosk_agent_" });

  // One job at a time: the step in progress ends when the next one starts or the job ends.
  let current: { operationId: string; step: string; since: number; jobSince: number } | undefined;
  const onStep = (operationId: string, step: string): void => {
    const now = clock.now();
    if (current && current.operationId === operationId) {
      steps.observe({ step: current.step }, (now - current.since) / 1000);
      current = { operationId, step, since: now, jobSince: current.jobSince };
    } else {
      current = { operationId, step, since: now, jobSince: now };
    }
  };
  const onFinished = (operationId: string, state: JobState): void => {
    const now = clock.now();
    finished.inc({ state });
    if (current?.operationId === operationId) {
      steps.observe({ step: current.step }, (now - current.since) / 1000);
      cards.observe({ state }, (now - current.jobSince) / 1000);
    }
    current = undefined;
  };
  source.pipeline.on("step", onStep);
  source.pipeline.on("finished", onFinished);
  return {
    registry,
    dispose: () => {
      source.pipeline.off("step", onStep);
      source.pipeline.off("finished", onFinished);
      registry.clear();
    },
  };
}
