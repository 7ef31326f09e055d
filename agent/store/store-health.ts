import { EventEmitter } from "node:events";
import { statfsSync } from "node:fs";
import type { Clock, TimerHandle } from "../util/clock.js";
import { CodedError } from "../util/errors.js";

/**
 * Why the store cannot take writes, as the operator sees it (/readyz, status, console, metrics;
 * docs/operations.md, "A full disk and a damaged store").
 */
export const STORE_FAULTS = ["STORE_FULL", "STORE_CORRUPT", "STORE_READONLY", "STORE_IO_ERROR"] as const;
export type StoreFaultReason = (typeof STORE_FAULTS)[number];

/**
 * The store fault an error means, or undefined for any other error. better-sqlite3 throws SqliteError
 * with SQLite's extended code (SQLITE_FULL, SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED…); file
 * operations throw Node errors (ENOSPC, EROFS, EIO).
 */
export function storeFaultOf(err: unknown): StoreFaultReason | undefined {
  if (err instanceof StoreUnavailableError) return err.code;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return undefined;
  if (code === "SQLITE_FULL" || code === "ENOSPC" || code === "EDQUOT") return "STORE_FULL";
  if (code.startsWith("SQLITE_CORRUPT") || code === "SQLITE_NOTADB") return "STORE_CORRUPT";
  if (code.startsWith("SQLITE_READONLY") || code === "EROFS" || code === "EACCES" || code === "EPERM")
    return "STORE_READONLY";
  // A write that hit a full disk inside SQLite's own I/O layer comes back as an IOERR whose errno is
  // lost; the free-space reading tells the two apart (see StoreHealth.report).
  if (code.startsWith("SQLITE_IOERR") || code === "SQLITE_CANTOPEN" || code === "EIO")
    return "STORE_IO_ERROR";
  return undefined;
}

/**
 * Store warnings: the store takes writes, but something the operator must know about is wrong.
 * WAL_NOT_SCRUBBED: another process has held the database open so long that the WAL could not be
 * truncated after a purge; sealed data of finished jobs may remain in jobs.sqlite-wal (docs/security.md).
 */
export const STORE_WARNINGS = ["WAL_NOT_SCRUBBED"] as const;
export type StoreWarningKeyword = (typeof STORE_WARNINGS)[number];

export interface StoreWarning {
  keyword: StoreWarningKeyword;
  /** Wall time it was raised. */
  since: string;
  detail: string;
}

/** A write the store could not take; the job keeps its last committed state. */
export class StoreUnavailableError extends CodedError<StoreFaultReason> {}

export interface StoreFault {
  reason: StoreFaultReason;
  /** Wall time it began (a timestamp people read). */
  since: string;
  /** SQLite's or the OS's code (SQLITE_FULL, SQLITE_IOERR_WRITE…): never card data. */
  detail: string;
}

export interface StoreHealthOptions {
  clock: Clock;
  /** The data directory: its file system's free space is read with statfs. */
  dataDir: string;
  /** Pushes are refused below this much free space, so a job in production can still finish. */
  minFreeBytes: number;
  /** A small real write (a transaction that changes a page): succeeds once the store is writable again. */
  probe: () => void;
  /** First re-try of the probe after a fault; doubles up to `maxProbeMs`. */
  probeMs?: number;
  maxProbeMs?: number;
  /** For tests: the free bytes of the data directory's file system. */
  freeBytes?: () => number;
}

/**
 * Whether the job store can take writes, and why not. Any write that fails with a store fault
 * reports it here; the first write that succeeds afterwards (the pipeline's retry, a push, or the
 * probe this object runs with backoff while faulted) clears it, so production resumes without a
 * restart. Separately, the free space of the data directory's file system is compared with a
 * watermark: below it new pushes are refused while production goes on.
 */
export class StoreHealth extends EventEmitter<{ change: []; warning: [StoreWarningKeyword, boolean] }> {
  private current: StoreFault | undefined;
  private readonly raised = new Map<StoreWarningKeyword, StoreWarning>();
  private readonly counts = new Map<StoreFaultReason, number>();
  private waiters: Array<() => void> = [];
  private probeTimer: TimerHandle | undefined;
  private probeDelay: number;
  private stopped = false;

  constructor(private readonly options: StoreHealthOptions) {
    super();
    this.probeDelay = options.probeMs ?? 1_000;
  }

  /** The fault in force, if any. */
  get fault(): StoreFault | undefined {
    return this.current;
  }

  /** The warnings in force (status, console, metrics), oldest first. */
  warnings(): StoreWarning[] {
    return [...this.raised.values()];
  }

  /** Raises a warning (or updates its detail); emits `warning` (keyword, true) when it begins. */
  setWarning(keyword: StoreWarningKeyword, detail: string): void {
    const existing = this.raised.get(keyword);
    if (existing) {
      existing.detail = detail;
      return;
    }
    this.raised.set(keyword, {
      keyword,
      since: new Date(this.options.clock.wallNow()).toISOString(),
      detail,
    });
    this.emit("warning", keyword, true);
  }

  /** Ends a warning; emits `warning` (keyword, false) if it was raised. */
  clearWarning(keyword: StoreWarningKeyword): void {
    if (this.raised.delete(keyword)) this.emit("warning", keyword, false);
  }

  /** How many times each fault began (kiosk_agent_store_faults_total). */
  faultCounts(): ReadonlyMap<StoreFaultReason, number> {
    return this.counts;
  }

  /** Free bytes for unprivileged writers on the data directory's file system (undefined if unreadable). */
  freeBytes(): number | undefined {
    try {
      if (this.options.freeBytes) return this.options.freeBytes();
      const s = statfsSync(this.options.dataDir);
      return s.bavail * s.bsize;
    } catch {
      return undefined;
    }
  }

  get minFreeBytes(): number {
    return this.options.minFreeBytes;
  }

  /**
   * Why a new push must be refused now, if it must: a store fault, or free space under the
   * watermark (STORE_FULL before the disk is full, so the job in production can still be written).
   */
  refusesPushes(): StoreFaultReason | undefined {
    if (this.current) return this.current.reason;
    return this.lowOnSpace() ? "STORE_FULL" : undefined;
  }

  /** Whether `free` bytes (by default, read now) are under the watermark; unknown free space is not. */
  lowOnSpace(free = this.freeBytes()): boolean {
    return free !== undefined && free < this.options.minFreeBytes;
  }

  /**
   * Records a failed write. Returns the fault it is (undefined: not a store fault, nothing changed).
   * An I/O error on a file system with no free space left is a full disk.
   */
  report(err: unknown): StoreFaultReason | undefined {
    let reason = storeFaultOf(err);
    if (!reason) return undefined;
    if (reason === "STORE_IO_ERROR" && (this.freeBytes() ?? 1) <= 0) reason = "STORE_FULL";
    const code = (err as { code?: unknown }).code;
    const detail = typeof code === "string" ? code : reason;
    if (this.current?.reason !== reason) {
      this.counts.set(reason, (this.counts.get(reason) ?? 0) + 1);
      this.current = { reason, since: new Date(this.options.clock.wallNow()).toISOString(), detail };
      this.probeDelay = this.options.probeMs ?? 1_000;
      this.emit("change");
    }
    this.scheduleProbe();
    return reason;
  }

  /** A write succeeded: the store takes writes again. Cheap when nothing was wrong. */
  writeSucceeded(): void {
    if (!this.current) return;
    this.current = undefined;
    if (this.probeTimer) this.options.clock.clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    const waiters = this.waiters;
    this.waiters = [];
    this.emit("change");
    for (const w of waiters) w();
  }

  /**
   * Resolves once the store is writable (at once if it is); rejects with `signal`'s abort. The
   * pipeline waits here before it writes a card's state again.
   */
  writable(signal?: AbortSignal): Promise<void> {
    if (!this.current) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.waiters = this.waiters.filter((w) => w !== done);
        reject(
          new StoreUnavailableError(
            this.current?.reason ?? "STORE_IO_ERROR",
            "stopping while the store is unwritable",
          ),
        );
      };
      const done = (): void => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(done);
    });
  }

  /** Ends the probe timer (the agent is stopping). */
  stop(): void {
    this.stopped = true;
    if (this.probeTimer) this.options.clock.clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
  }

  private scheduleProbe(): void {
    if (this.probeTimer || this.stopped) return;
    const delay = this.probeDelay;
    this.probeDelay = Math.min(delay * 2, this.options.maxProbeMs ?? 15_000);
    this.probeTimer = this.options.clock.setTimeout(() => {
      this.probeTimer = undefined;
      if (!this.current) return;
      try {
        this.options.probe();
        this.writeSucceeded();
      } catch (err) {
        // Still faulted (perhaps differently: a full disk found corrupt once space is back).
        if (!this.report(err)) this.scheduleProbe();
      }
    }, delay);
  }
}
