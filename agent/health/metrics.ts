import type { EventEmitter } from "node:events";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { AgentConfig } from "../config/schema.js";
import type { PrinterSnapshot, PrinterState } from "../devices/printer-supervisor.js";
import { JOB_STATES, type JobState } from "../jobs/state-machine.js";
import { logFileStats } from "../log/file-destination.js";
import type { PipelineEvents } from "../pipeline/pipeline.js";
import type { SuppliesSnapshot } from "../stock/supplies.js";
import { STORE_FAULTS, STORE_WARNINGS, type StoreHealth } from "../store/store-health.js";
import type { Clock } from "../util/clock.js";

/** What the metrics read; KioskAgent has all of it. */
export interface MetricsSource {
  store: {
    countsByState(): Partial<Record<JobState, number>>;
    outboxDepth(): number;
    health: Pick<StoreHealth, "fault" | "faultCounts" | "freeBytes" | "minFreeBytes" | "report" | "warnings">;
    /** Whether a purged payload may still be in the WAL (JobStore.scrubWal). */
    walScrub?: { pending: boolean };
  };
  outbox: { stats: { sent: number; resent: number; acked: number } };
  /** The audit forwarder, when `audit.forward` is configured (agent/audit/syslog-forwarder.ts). */
  auditForward?:
    | { backlog(): number; stats: { delivered: number; failures: number; chainBreaks: number } }
    | undefined;
  link: { isUp: boolean; stats: { sessions: number; malformed: number } };
  supervisor: { status: PrinterSnapshot };
  pipeline: EventEmitter<PipelineEvents>;
  /** Ribbon, feeders, bins, cleaning and the counter check (agent/stock/supplies.ts). */
  supplies(): SuppliesSnapshot;
  /** The thresholds the supply gauges are compared with (the alert rules in deploy/prometheus/). */
  config: { printer: Pick<AgentConfig["printer"], "feeders" | "bins"> };
}

/** `kiosk_printer_cleaning_due`: the value of each cleaning state. */
export const CLEANING_DUE = { none: 0, advised: 1, required: 2 } as const;

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
      const counts = readStore(() => source.store.countsByState());
      if (counts) for (const state of JOB_STATES) this.set({ state }, counts[state] ?? 0);
    },
  });
  new Gauge({
    name: "kiosk_agent_outbox_depth",
    help: "Status events written and not yet acknowledged by D1.",
    registers,
    collect() {
      const depth = readStore(() => source.store.outboxDepth());
      if (depth !== undefined) this.set(depth);
    },
  });
  if (source.auditForward) {
    const forward = source.auditForward;
    new Gauge({
      name: "kiosk_agent_audit_forward_backlog",
      help: "Audit rows written and not yet confirmed by the syslog collector (they wait in the store).",
      registers,
      collect() {
        const n = readStore(() => forward.backlog());
        if (n !== undefined) this.set(n);
      },
    });
    new Gauge({
      name: "kiosk_agent_audit_forward_failures",
      help: "Batches of audit rows the collector did not confirm since start (down, reset, timeout, TLS refused).",
      registers,
      collect() {
        this.set(forward.stats.failures);
      },
    });
    new Gauge({
      name: "kiosk_agent_audit_chain_breaks",
      help: "Audit rows that did not follow the hash chain when forwarded, since start (run kiosk-agent audit verify).",
      registers,
      collect() {
        this.set(forward.stats.chainBreaks);
      },
    });
  }
  // A scrape must still answer when the store cannot be read: that is when the store gauges matter.
  function readStore<T>(read: () => T): T | undefined {
    try {
      return read();
    } catch (err) {
      if (!source.store.health.report(err)) throw err;
      return undefined;
    }
  }
  new Gauge({
    name: "kiosk_agent_store_fault",
    help: "1 with the reason while the job store cannot take writes (STORE_FULL, STORE_CORRUPT, STORE_READONLY, STORE_IO_ERROR).",
    labelNames: ["reason"],
    registers,
    collect() {
      const now = source.store.health.fault?.reason;
      for (const reason of STORE_FAULTS) this.set({ reason }, reason === now ? 1 : 0);
    },
  });
  new Counter({
    name: "kiosk_agent_store_faults_total",
    help: "Times the job store stopped taking writes, by reason.",
    labelNames: ["reason"],
    registers,
    collect() {
      this.reset();
      const counts = source.store.health.faultCounts();
      for (const reason of STORE_FAULTS) this.inc({ reason }, counts.get(reason) ?? 0);
    },
  });
  new Gauge({
    name: "kiosk_agent_wal_scrub_pending",
    help: "1 while the WAL could not be truncated after a purge (another process reads the database) and the scrub is being retried: sealed data of finished jobs may remain in jobs.sqlite-wal.",
    registers,
    collect() {
      this.set(source.store.walScrub?.pending ? 1 : 0);
    },
  });
  new Gauge({
    name: "kiosk_agent_store_warning",
    help: "1 with the keyword while a store warning is raised (WAL_NOT_SCRUBBED: the WAL scrub has failed for 60 s or more).",
    labelNames: ["warning"],
    registers,
    collect() {
      const raised = new Set(source.store.health.warnings().map((w) => w.keyword));
      for (const warning of STORE_WARNINGS) this.set({ warning }, raised.has(warning) ? 1 : 0);
    },
  });
  new Gauge({
    name: "kiosk_agent_store_free_bytes",
    help: "Free bytes on the data directory's file system.",
    registers,
    collect() {
      const free = source.store.health.freeBytes();
      if (free !== undefined) this.set(free);
    },
  });
  new Gauge({
    name: "kiosk_agent_store_min_free_bytes",
    help: "The free-space watermark: pushes are refused (STORE_FULL) below it (store.minFreeMb).",
    registers,
    collect() {
      this.set(source.store.health.minFreeBytes);
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
  // Process-wide, not from `source`: the log file is opened by `run` before the agent exists.
  fromStats(
    "kiosk_agent_log_lines_lost_total",
    "Log lines that did not reach log.file (each went to stderr instead).",
    () => logFileStats().linesLost,
  );
  new Gauge({
    name: "kiosk_agent_log_file_failing",
    help: "1 while writes to log.file fail and log lines go to stderr.",
    registers,
    collect() {
      this.set(logFileStats().failing ? 1 : 0);
    },
  });
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

  addSupplyMetrics(source, registers);

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

/**
 * Supplies as gauges (issue 13; docs/operations.md#health-and-metrics), named as the alert rules in
 * deploy/prometheus/kiosk-agent-alerts.yml use them, without the `kiosk_agent_` prefix. A value not
 * known yet (no status or counter read, a feeder never loaded) is left out, never exported as 0: an
 * alert on it stays silent instead of firing on a made-up value.
 */
function addSupplyMetrics(metricsSource: MetricsSource, registers: Registry[]): void {
  // One picture per scrape: the registry calls every collect() in one synchronous loop (each get()
  // starts with it), and each supplies() is a handful of SQLite reads.
  let cached: SuppliesSnapshot | undefined;
  const source = {
    config: metricsSource.config,
    supplies(): SuppliesSnapshot {
      if (!cached) {
        cached = metricsSource.supplies();
        queueMicrotask(() => {
          cached = undefined;
        });
      }
      return cached;
    },
  };
  /** A gauge without labels whose value may be unknown. */
  const optional = (name: string, help: string, read: (s: SuppliesSnapshot) => number | null) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        const value = read(source.supplies());
        if (value === null) this.remove({});
        else this.set(value);
      },
    });
  const statusRead = (s: SuppliesSnapshot) => s.readAt !== null;

  optional(
    "kiosk_printer_ribbon_remaining_panels",
    "Ribbon panels left, as the printer read them last (the printer warns RIBBON_LOW at 20 or fewer).",
    (s) => s.ribbon.remaining,
  );
  optional(
    "kiosk_printer_ribbon_capacity_panels",
    "Panels of a full ribbon of the loaded kind, as the printer read them last.",
    (s) => s.ribbon.capacity,
  );
  optional(
    "kiosk_printer_cleaning_due",
    "0: no cleaning due; 1: advised (the printer asks for a cleaning soon); 2: required (the printer refuses to print until it is cleaned).",
    (s) => (statusRead(s) || s.cleaning === "required" ? CLEANING_DUE[s.cleaning] : null),
  );
  optional(
    "kiosk_stock_ledger_mismatch_cards",
    "The printer's inserted-cards counter delta minus the cards the stock ledger fed, since the last acknowledgement; 0 when they agree.",
    (s) => s.counter.mismatch,
  );
  new Counter({
    name: "kiosk_printer_counter_cards_total",
    help: "The printer's own inserted-cards counter at its last read.",
    registers,
    collect() {
      const value = source.supplies().counter.cardsInserted;
      this.reset();
      if (value === null) this.remove({});
      else this.inc(value);
    },
  });

  const perFeeder = (
    name: string,
    help: string,
    read: (f: SuppliesSnapshot["feeders"][number], s: SuppliesSnapshot) => number | null,
  ) =>
    new Gauge({
      name,
      help,
      labelNames: ["feeder", "stock"],
      registers,
      collect() {
        this.reset();
        const s = source.supplies();
        for (const f of s.feeders) {
          const value = read(f, s);
          if (value !== null) this.set({ feeder: f.feeder, stock: f.stock }, value);
        }
      },
    });
  perFeeder(
    "kiosk_stock_cards",
    "Cards in the feeder by the stock ledger's balance (left out while nothing was ever loaded into it).",
    (f) => f.cards,
  );
  perFeeder(
    "kiosk_stock_near_empty_threshold_cards",
    "The feeder's configured near-empty level (printer.feeders[].nearEmptyAt): a balance at or below it is low.",
    (f) => source.config.printer.feeders.find((c) => c.id === f.feeder)?.nearEmptyAt ?? null,
  );
  perFeeder(
    "kiosk_printer_feeder_empty",
    "1 while the feeder is empty (its sensor or a refused insert): its stock's jobs wait; 0 otherwise.",
    (f, s) => (statusRead(s) || f.empty ? (f.empty ? 1 : 0) : null),
  );

  const perBin = (name: string, help: string, read: (b: SuppliesSnapshot["bins"][number]) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ["bin"],
      registers,
      collect() {
        this.reset();
        for (const b of source.supplies().bins) this.set({ bin: b.bin }, read(b));
      },
    });
  perBin(
    "kiosk_printer_bin_cards",
    "Cards in the bin (reject box, capture bin) by the ledger since a technician last emptied it.",
    (b) => b.cards,
  );
  perBin(
    "kiosk_printer_bin_capacity_cards",
    "Cards the bin holds (printer.bins.*.capacity).",
    (b) => b.capacity,
  );
  perBin(
    "kiosk_printer_bin_near_full_threshold_cards",
    "The bin's configured nearly-full level (printer.bins.*.nearFullAt).",
    (b) => source.config.printer.bins[b.bin].nearFullAt,
  );
}
