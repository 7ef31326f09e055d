/**
 * What the local console serves (GET /api/status, the `status` SSE event) and what it needs from the
 * simulator in simulator mode. The service itself never imports simulator code: the demo hands the
 * console a `SimulatorControls` (agent/console/sim-controls.ts builds one).
 *
 * Card data never appears here: jobs carry the store's masked PAN only, previews are masked PNGs.
 */
import type { PrinterState } from "../devices/printer-supervisor.js";
import type { JobState } from "../jobs/state-machine.js";
import type { SuppliesSnapshot } from "../stock/supplies.js";
import type { StockReport } from "../store/stock-ledger.js";

/** The printer supervisor's states: connecting, idle, busy, stopped (with a reason), offline. */
export type DeviceState = PrinterState;

export interface DeviceStatus {
  name: string;
  kind: "printer";
  /** The link from the configuration: `usb:/dev/usb/lp0`, `tcp:10.0.0.5:9100`, `serial:/dev/ttyUSB0`. */
  path: string;
  /** What the printer said about itself at the last open (model, serial number, firmware). */
  identity?: { model?: string; serial?: string; firmware?: string };
  state: DeviceState;
  /** Why it is stopped or offline: a reason keyword (docs/reasons.md), e.g. CARD_JAM. */
  reason?: string;
  /** When the state last changed (ISO). */
  since?: string;
  /** The production step and job in hand, while a card is being made. */
  step?: string;
  operationId?: string;
  /** The last device fault seen, even if the printer has recovered since. */
  lastFault?: { reason: string; at: string };
  stats: { commands: number; droppedFrames: number; unexpectedReplies: number; bytesWritten: number };
}

export interface StoreStatus {
  state: "ok" | "fault" | "low-space";
  reason?: string;
  /** SQLite's or the OS's code (SQLITE_FULL…). */
  detail?: string;
  since?: string;
  /** Free bytes on the data directory's file system, and the watermark below which pushes are refused. */
  freeBytes?: number;
  minFreeBytes: number;
  /** Store warnings in force (WAL_NOT_SCRUBBED): the store takes writes, but something needs a look. */
  warnings?: Array<{ keyword: string; since: string; detail: string }>;
}

export interface JobSummary {
  operationId: string;
  /** Masked: `…` and its last 4 characters. */
  cardId: string;
  state: JobState;
  /** The D1 status this job last reported. */
  d1Status: string;
  reason?: string;
  errorCode?: string;
  /** Field path or step text (never a value). */
  error?: string;
  maskedPan?: string;
  acceptedAt: string;
  endedAt?: string;
  updatedAt: string;
}

export interface ErrorSummary {
  at: string;
  source: "job" | "d1";
  operationId?: string;
  d1Status?: string;
  reason: string;
  error?: string;
}

export interface PreviewSummary {
  serial: number;
  operationId?: string;
  outcome: string;
  at: string;
  /** Sides with a masked PNG at /api/preview/SERIAL/SIDE.png. */
  sides: Array<"front" | "back">;
  withheld?: string;
}

export interface ConsoleSnapshot {
  version: 1;
  generatedAt: string;
  agentVersion: string;
  station: string;
  mode: "simulator" | "hardware";
  d1: {
    state: "up" | "down" | "connecting";
    since?: string;
    reason?: string;
    /** host:port of D1, never credentials. */
    host: string;
    sessions: number;
  };
  devices: DeviceStatus[];
  /**
   * The job store: `ok`, or the fault that stops it taking writes (STORE_FULL, STORE_CORRUPT,
   * STORE_READONLY, STORE_IO_ERROR), or `low-space` below the free-space watermark (pushes refused).
   * Absent from agents older than it.
   */
  store?: StoreStatus;
  queue: {
    counts: Record<JobState, number>;
    /** READY jobs waiting for the printer. */
    waiting: number;
    /** PRODUCING + PRESENTED. */
    inProduction: number;
    /** Status events not yet acknowledged by D1. */
    outbox: number;
  };
  recentJobs: JobSummary[];
  lastErrors: ErrorSummary[];
  /** Ribbon, feeders (ledger balance and sensors), bins, cleaning, counter check, warnings (docs/stock.md). */
  supplies: SuppliesSnapshot;
  /** The card-stock report since local midnight: the day's reconciliation so far. */
  stock: StockReport;
  /** Teller-assisted magstripe: the hand-swipe encoder waits for a person to swipe the card. */
  swipe?: { operation: string; since: string; until: string };
  preview?: PreviewSummary;
  simulator?: {
    faults: readonly string[];
    injected: Array<{ name: string; at: string }>;
    printer: Record<string, unknown>;
  };
}

/** A preview the console may serve: masked PNGs only. */
export interface ConsolePreview {
  serial: number;
  operationId?: string;
  outcome: string;
  at: number;
  sides: { front?: Buffer; back?: Buffer };
  withheld?: string;
}

/** Simulator mode: the console's buttons act on these. */
export interface SimulatorControls {
  readonly faults: readonly string[];
  /** Arms a fault for the next time its step comes (once). Throws a RangeError for an unknown name. */
  injectFault(name: string): void;
  clearFaults(): void;
  /** The simulated cardholder takes the card in the mouth now; false if there is none. */
  takeCard(): boolean;
  /** Pushes a generated sample job through the D1 emulator; resolves with the agent's answer. */
  pushSampleJob(): Promise<{ operationId?: string; result: string; errorCode?: string }>;
  injected(): Array<{ name: string; at: number }>;
  printerState(): Record<string, unknown>;
  latestPreview(): ConsolePreview | undefined;
  preview(serial: number): ConsolePreview | undefined;
  /** Calls `listener` when anything above changed; returns the unsubscribe function. */
  onChange(listener: () => void): () => void;
}
