/**
 * The console's picture of the agent, built from what the agent already has: the D1 link's up/down
 * events, the store (counts, recent jobs, failures), the printer supervisor's state and reason, the
 * pipeline's job in hand and the printer driver's counters. Nothing here talks to a device: a
 * status read must not move a card or use up an injected fault.
 */

import type Database from "better-sqlite3";
import { describeLink } from "../../drivers/printer/create-printer.js";
import type { KioskAgent } from "../agent.js";
import { d1StatusOf, JOB_STATES, type JobState } from "../jobs/state-machine.js";
import { maskCardId } from "../log/mask.js";
import type { StockReport } from "../store/stock-ledger.js";
import type { Clock } from "../util/clock.js";
import { AGENT_VERSION } from "../version.js";
import type {
  ConsoleSnapshot,
  DeviceStatus,
  ErrorSummary,
  JobSummary,
  PreviewSummary,
  SimulatorControls,
  StoreStatus,
} from "./types.js";

export type ConsoleAgent = Pick<
  KioskAgent,
  | "config"
  | "link"
  | "store"
  | "pipeline"
  | "printer"
  | "supervisor"
  | "swipePrompt"
  | "ready"
  | "supplies"
  | "router"
>;

interface RawRow {
  operation_id: string;
  card_id: string;
  state: JobState;
  reason: string | null;
  error_code: string | null;
  error: string | null;
  masked_pan: string | null;
  accepted_at: string;
  ended_at: string | null;
  updated_at: string;
}

const COLUMNS =
  "operation_id, card_id, state, reason, error_code, error, masked_pan, accepted_at, ended_at, updated_at";

export interface SnapshotOptions {
  recentJobs?: number;
  lastErrors?: number;
}

/**
 * Keeps what the agent does not remember itself (when the link went up or down and why) and builds
 * snapshots on demand.
 */
export class SnapshotSource {
  private link: { state: "up" | "down" | "connecting"; since?: number; reason?: string };
  private linkErrors: ErrorSummary[] = [];
  private readonly queries: { recent: Database.Statement; failures: Database.Statement };
  private readonly detach: Array<() => void> = [];

  constructor(
    private readonly agent: ConsoleAgent,
    private readonly clock: Clock,
    private readonly simulator: SimulatorControls | undefined,
    private readonly options: SnapshotOptions = {},
  ) {
    // Link `since` and every other time here is shown as a date: wall time (docs/architecture.md#time).
    this.link = agent.link.isUp ? { state: "up", since: clock.wallNow() } : { state: "connecting" };
    const db = agent.store.db;
    // Read-only queries on the store's own connection (same process, same file).
    this.queries = {
      recent: db.prepare(`SELECT ${COLUMNS} FROM jobs ORDER BY updated_at DESC, queue_seq DESC LIMIT ?`),
      failures: db.prepare(
        `SELECT ${COLUMNS} FROM jobs WHERE state IN ('FAILED', 'DATA_EXCEPTION', 'CANCELED')
         ORDER BY updated_at DESC, queue_seq DESC LIMIT ?`,
      ),
    };
    const onUp = (): void => {
      this.link = { state: "up", since: this.clock.wallNow() };
    };
    const onDown = (reason: string): void => {
      const since = this.clock.wallNow();
      this.link = { state: "down", since, reason };
      this.linkErrors.unshift({ at: iso(since), source: "d1", reason: "D1_LINK_DOWN", error: reason });
      this.linkErrors = this.linkErrors.slice(0, 5);
    };
    agent.link.on("up", onUp);
    agent.link.on("down", onDown);
    this.detach.push(
      () => agent.link.off("up", onUp),
      () => agent.link.off("down", onDown),
    );
  }

  close(): void {
    for (const d of this.detach.splice(0)) d();
  }

  snapshot(): ConsoleSnapshot {
    const agent = this.agent;
    const clock = this.clock;
    const counts = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobState, number>;
    let outbox = 0;
    let recent: JobSummary[] = [];
    let failures: RawRow[] = [];
    let stock: StockReport | undefined;
    try {
      Object.assign(counts, agent.store.countsByState());
      outbox = agent.store.outboxDepth();
      recent = (this.queries.recent.all(this.options.recentJobs ?? 20) as RawRow[]).map(toSummary);
      failures = this.queries.failures.all(this.options.lastErrors ?? 5) as RawRow[];
      stock = agent.store.stock.report({
        since: startOfLocalDay(clock.wallNow()),
        singleFeeder: agent.config.printer.feeders.length === 1,
      });
    } catch (err) {
      // A store that cannot be read (a corrupt page) is the thing to show, not a reason to show nothing.
      if (!agent.store.health.report(err)) throw err;
    }
    const jobErrors: ErrorSummary[] = failures.map((r) => ({
      at: r.ended_at ?? r.updated_at,
      source: "job",
      operationId: r.operation_id,
      d1Status: d1StatusOf(r.state),
      reason: r.reason ?? r.state,
      ...(r.error !== null ? { error: r.error } : {}),
    }));
    const lastErrors = [...jobErrors, ...this.linkErrors]
      .sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0))
      .slice(0, this.options.lastErrors ?? 5);
    const url = safeHost(agent.config.d1.url);
    const snapshot: ConsoleSnapshot = {
      version: 1,
      generatedAt: iso(clock.wallNow()),
      agentVersion: AGENT_VERSION,
      station: agent.config.station.id,
      mode: this.simulator ? "simulator" : "hardware",
      d1: {
        state: this.link.state,
        ...(this.link.since !== undefined ? { since: iso(this.link.since) } : {}),
        ...(this.link.reason !== undefined ? { reason: this.link.reason } : {}),
        host: url,
        sessions: agent.link.stats.sessions,
      },
      devices: [this.printerStatus()],
      store: this.storeStatus(),
      queue: {
        counts,
        waiting: counts.READY,
        inProduction: counts.PRODUCING + counts.PRESENTED,
        outbox,
      },
      recentJobs: recent,
      lastErrors,
      supplies: agent.supplies(),
      stock: stock ?? emptyStockReport(iso(clock.wallNow())),
    };
    const swipe = agent.swipePrompt.current;
    if (swipe) snapshot.swipe = swipe;
    const preview = this.previewSummary();
    if (preview) snapshot.preview = preview;
    if (this.simulator) {
      snapshot.simulator = {
        faults: this.simulator.faults,
        injected: this.simulator.injected().map((f) => ({ name: f.name, at: iso(f.at) })),
        printer: this.simulator.printerState(),
      };
    }
    return snapshot;
  }

  /** The job store's health and the free space against the watermark (agent/store/store-health.ts). */
  private storeStatus(): StoreStatus {
    const health = this.agent.store.health;
    const fault = health.fault;
    const freeBytes = health.freeBytes();
    const low = health.lowOnSpace(freeBytes);
    const warnings = health.warnings();
    return {
      state: fault ? "fault" : low ? "low-space" : "ok",
      ...(fault ? { reason: fault.reason, detail: fault.detail, since: fault.since } : {}),
      ...(!fault && low ? { reason: "STORE_FULL" } : {}),
      ...(freeBytes !== undefined ? { freeBytes } : {}),
      minFreeBytes: health.minFreeBytes,
      ...(warnings.length > 0 ? { warnings: warnings.map((w) => ({ ...w })) } : {}),
    };
  }

  /** The supervisor's state and reason (CUPS-like), with the pipeline's step while a card is in hand. */
  private printerStatus(): DeviceStatus {
    const agent = this.agent;
    const s = agent.supervisor.status;
    const current = agent.pipeline.current;
    return {
      name: "printer",
      kind: "printer",
      path: describeLink(agent.config.printer),
      ...(agent.printer.identity ? { identity: agent.printer.identity } : {}),
      state: s.state,
      since: s.since,
      ...(s.reason !== undefined ? { reason: s.reason } : {}),
      ...(current ? { step: current.step, operationId: current.operationId } : {}),
      ...(s.lastFault ? { lastFault: s.lastFault } : {}),
      stats: agent.printer.stats,
    };
  }

  private previewSummary(): PreviewSummary | undefined {
    const p = this.simulator?.latestPreview();
    if (!p) return undefined;
    return {
      serial: p.serial,
      outcome: p.outcome,
      at: iso(p.at),
      sides: (["front", "back"] as const).filter((s) => p.sides[s] !== undefined),
      ...(p.operationId !== undefined ? { operationId: p.operationId } : {}),
      ...(p.withheld !== undefined ? { withheld: p.withheld } : {}),
    };
  }
}

function toSummary(r: RawRow): JobSummary {
  return {
    operationId: r.operation_id,
    // The console shows a card id's last 4 characters only (docs/console.md).
    cardId: maskCardId(r.card_id),
    state: r.state,
    d1Status: d1StatusOf(r.state),
    ...(r.reason !== null ? { reason: r.reason } : {}),
    ...(r.error_code !== null ? { errorCode: r.error_code } : {}),
    ...(r.error !== null ? { error: r.error } : {}),
    ...(r.masked_pan !== null ? { maskedPan: r.masked_pan } : {}),
    acceptedAt: r.accepted_at,
    ...(r.ended_at !== null ? { endedAt: r.ended_at } : {}),
    updatedAt: r.updated_at,
  };
}

/** Local midnight of the day `ms` falls in, as an ISO time: the daily reconciliation's start. */
export function startOfLocalDay(ms: number): string {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.toISOString();
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function safeHost(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return "(invalid url)";
  }
}

/** The day's stock report when the store cannot be read: no lines, no figures. */
function emptyStockReport(until: string): StockReport {
  return {
    since: null,
    until,
    feeders: [],
    printer: { counterDelta: null, ledgerFed: 0, mismatch: null },
  };
}
