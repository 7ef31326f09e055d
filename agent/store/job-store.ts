import { randomUUID } from "node:crypto";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { AuditAppender } from "../audit/audit-chain.js";
import { type D1Status, type Operation, topLevelStatus } from "../d1/operation.js";
import { type FromState, isTerminal, type JobState, transitionEvent } from "../jobs/state-machine.js";
import { type CardFeed, movementFor } from "../stock/card-movement.js";
import type { Clock, TimerHandle } from "../util/clock.js";
import { fsyncPath } from "../util/durable-file.js";
import { CodedError } from "../util/errors.js";
import { restrictMode } from "../util/file-modes.js";
import { migrate, StoreCheckError } from "./migrations.js";
import type { SealedBox } from "./sealed-box.js";
import { type LedgerOptions, StockLedger } from "./stock-ledger.js";
import { StoreHealth, StoreUnavailableError, storeFaultOf } from "./store-health.js";

export interface JobRow {
  operationId: string;
  cardId: string;
  issuerRequestId: string | null;
  state: JobState;
  reason: string | null;
  errorCode: string | null;
  error: string | null;
  maskedPan: string | null;
  collectTimeoutSec: number | null;
  /** Set while a retract from the mouth is under way: the reason it ends the job with. */
  retractReason: string | null;
  /** The stock the job asked for (productionData.cardStock). */
  cardStock: string | null;
  /** The feeder its card is taken from and the stock the ledger counts it under (set before the insert). */
  fedFrom: string | null;
  fedStock: string | null;
  /** How far its card got out of the feeder (agent/stock/card-movement.ts). */
  cardFed: CardFeed | null;
  acceptedAt: string;
  endedAt: string | null;
  updatedAt: string;
}

export interface OutboxEvent {
  seq: number;
  eventId: string;
  operationId: string;
  d1Status: string;
  operation: Operation;
  sendCount: number;
}

/** What a stop carries into the D1 operation object. */
export interface StopDetails {
  reason?: string;
  errorCode?: string;
  error?: string;
}

/** Who delivered a push, for the audit trail (agent/audit/). */
export interface PushSource {
  /** D1's requestId of the push. */
  requestId?: string;
  /** The D1 endpoint and link session that delivered it. */
  pushedBy?: string;
}

export type AcceptInput = (
  | {
      kind: "valid";
      operationId: string;
      cardId: string;
      issuerRequestId?: string;
      /** The whole validated job, sealed at rest. */
      jobJson: string;
      maskedPan?: string;
      collectTimeoutSec?: number;
      /** productionData.cardStock. */
      cardStock?: string;
    }
  | {
      kind: "data-exception";
      operationId: string;
      cardId: string;
      issuerRequestId?: string;
      details: Required<StopDetails>;
    }
) & { source?: PushSource };

export interface AcceptResult {
  duplicate: boolean;
  state: JobState;
  /** The event written by this call (none for a duplicate). */
  event?: OutboxEvent;
}

export class StoreError extends CodedError<"ILLEGAL_TRANSITION" | "UNKNOWN_OPERATION" | "STALE_STATE"> {}

interface RawJobRow {
  operation_id: string;
  card_id: string;
  issuer_request_id: string | null;
  state: JobState;
  reason: string | null;
  error_code: string | null;
  error: string | null;
  masked_pan: string | null;
  collect_timeout_sec: number | null;
  retract_reason: string | null;
  card_stock: string | null;
  fed_from: string | null;
  fed_stock: string | null;
  card_fed: CardFeed | null;
  accepted_at: string;
  ended_at: string | null;
  updated_at: string;
}

interface RawEventRow {
  seq: number;
  event_id: string;
  operation_id: string;
  d1_status: string;
  operation_json: string;
  send_count: number;
}

/** A WAL scrub that could not truncate is retried after 1 s, doubling up to 60 s (docs/security.md). */
const WAL_SCRUB_FIRST_RETRY_MS = 1_000;
const WAL_SCRUB_MAX_RETRY_MS = 60_000;
/** …and raises WAL_NOT_SCRUBBED once it has been failing this long. */
export const WAL_SCRUB_WARN_MS = 60_000;

/** What store_meta.key_check seals: any constant; only whether the key opens it matters. */
const KEY_CHECK = "kiosk-agent data key check";

const JOB_COLUMNS =
  "operation_id, card_id, issuer_request_id, state, reason, error_code, error, masked_pan, collect_timeout_sec, retract_reason, card_stock, fed_from, fed_stock, card_fed, accepted_at, ended_at, updated_at";

/**
 * The job store: a real SQLite file in WAL mode with synchronous=FULL, so a job D1 was told we
 * accepted survives a power cut. Every state change is a guarded UPDATE (… WHERE state = ?) and its
 * D1 event is inserted into the outbox in the same transaction: a status is never lost or invented.
 * The move that ends a job whose card left the feeder also writes that card's stock-ledger movement
 * (agent/stock/card-movement.ts), in the same transaction: a card is counted once, and never lost.
 */
export class JobStore {
  readonly db: Database.Database;
  /** The card-stock ledger, in the same database (docs/stock.md). */
  readonly stock: StockLedger;
  /** This store's identity (store_meta; also in the data directory's store.id). */
  readonly storeId: string;
  /** The write-ahead log, synced after each scrub truncates it. */
  private readonly walFile: string;
  /** Whether writes succeed, and the free-space watermark (docs/operations.md, "A full disk and a damaged store"). */
  readonly health: StoreHealth;
  private readonly statements;

  constructor(
    file: string,
    private readonly box: SealedBox,
    private readonly clock: Clock,
    /** The ledger's dual-control threshold (`stock.dualControlAbove`). */
    ledger: LedgerOptions = {},
    /** Pushes are refused below this much free space on the store's file system (`store.minFreeMb`). */
    storage: { minFreeBytes?: number } = {},
  ) {
    this.walFile = `${file}-wal`;
    this.db = openStore(file);
    try {
      this.db.pragma("journal_mode = WAL");
      this.db.pragma("synchronous = FULL");
      this.db.pragma("foreign_keys = ON");
      this.db.pragma("busy_timeout = 5000");
      // Purged production data (and deleted rows) is overwritten, not just unlinked from the b-tree:
      // the data key sits next to this file, so a freed page must not keep a sealed payload.
      this.db.pragma("secure_delete = ON");
      // better-sqlite3 builds SQLite with a 16 MB page cache; the working set here is a few pages.
      this.db.pragma("cache_size = -2000");
      migrate(this.db, file);
      this.storeId = this.identity(file);
    } catch (err) {
      this.db.close();
      throw refusalAtOpen(file, err);
    }
    this.health = new StoreHealth({
      clock,
      dataDir: dirname(file),
      minFreeBytes: storage.minFreeBytes ?? 0,
      // A real page write, fsynced like a state change, so it succeeds only when one would; and a
      // quick check of every page, so a corrupt store is not declared healthy by one good page.
      probe: () => {
        this.db.prepare("UPDATE store_meta SET writes = writes + 1").run();
        const check = this.db.pragma("quick_check(1)", { simple: true });
        if (check !== "ok") throw Object.assign(new Error("quick_check failed"), { code: "SQLITE_CORRUPT" });
      },
    });
    this.scrubWal();
    this.stock = new StockLedger(this.db, clock, ledger);
    this.statements = {
      getJob: this.db.prepare(`SELECT ${JOB_COLUMNS} FROM jobs WHERE operation_id = ?`),
      insertJob: this.db.prepare(
        `INSERT INTO jobs (operation_id, card_id, issuer_request_id, state, reason, error_code, error, masked_pan,
           sealed_job, collect_timeout_sec, card_stock, accepted_at, ended_at, updated_at, queue_seq)
         VALUES (@operationId, @cardId, @issuerRequestId, @state, @reason, @errorCode, @error, @maskedPan,
           @sealedJob, @collectTimeoutSec, @cardStock, @acceptedAt, @endedAt, @acceptedAt,
           (SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM jobs))`,
      ),
      // ended_at is never before accepted_at: D1 reads them as endTime and startTime, and a wall clock
      // stepped back while the job ran would otherwise end it before it started (ISO strings of one
      // format compare as times; MAX() with a NULL @endedAt is NULL, so a non-terminal move keeps it).
      update: this.db.prepare(
        `UPDATE jobs SET state = @to, reason = COALESCE(@reason, reason), error_code = COALESCE(@errorCode, error_code),
           error = COALESCE(@error, error), ended_at = COALESCE(MAX(@endedAt, accepted_at), ended_at), updated_at = @now,
           sealed_job = CASE WHEN @purge = 1 THEN NULL ELSE sealed_job END
         WHERE operation_id = @operationId AND state = @from`,
      ),
      insertEvent: this.db.prepare(
        `INSERT INTO events (event_id, operation_id, d1_status, operation_json, created_at)
         VALUES (?, ?, ?, ?, ?)`,
      ),
      sealedJob: this.db.prepare("SELECT sealed_job FROM jobs WHERE operation_id = ?"),
      nextReady: this.db.prepare(
        `SELECT ${JOB_COLUMNS} FROM jobs WHERE state = 'READY'
           AND COALESCE(card_stock, '') NOT IN (SELECT value FROM json_each(?)) ORDER BY queue_seq LIMIT 1`,
      ),
      readyStocks: this.db.prepare(
        "SELECT DISTINCT card_stock FROM jobs WHERE state = 'READY' ORDER BY card_stock",
      ),
      readyOfStock: this.db.prepare(
        `SELECT ${JOB_COLUMNS} FROM jobs WHERE state = 'READY' AND COALESCE(card_stock, '') = ? ORDER BY queue_seq`,
      ),
      route: this.db.prepare(
        "UPDATE jobs SET fed_from = ?, fed_stock = ? WHERE operation_id = ? AND state = 'PRODUCING'",
      ),
      setFed: this.db.prepare("UPDATE jobs SET card_fed = ? WHERE operation_id = ?"),
      unknownFeeds: this.db.prepare(
        `SELECT ${JOB_COLUMNS} FROM jobs WHERE card_fed = 'unknown' ORDER BY queue_seq DESC`,
      ),
      inStates: this.db.prepare(
        `SELECT ${JOB_COLUMNS} FROM jobs WHERE state IN (SELECT value FROM json_each(?)) ORDER BY queue_seq`,
      ),
      unacked: this.db.prepare(
        `SELECT seq, event_id, operation_id, d1_status, operation_json, send_count FROM events
         WHERE acked_at IS NULL AND seq > ? ORDER BY seq LIMIT ?`,
      ),
      markSent: this.db.prepare(
        "UPDATE events SET send_count = send_count + 1, last_sent_at = ? WHERE event_id = ?",
      ),
      ack: this.db.prepare("UPDATE events SET acked_at = ? WHERE event_id = ? AND acked_at IS NULL"),
      latestEvent: this.db.prepare(
        "SELECT operation_json FROM events WHERE operation_id = ? ORDER BY seq DESC LIMIT 1",
      ),
      countByState: this.db.prepare("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"),
      unackedCount: this.db.prepare("SELECT COUNT(*) AS n FROM events WHERE acked_at IS NULL"),
      eventsOf: this.db.prepare("SELECT d1_status FROM events WHERE operation_id = ? ORDER BY seq"),
      // Each row chained to the one before it (agent/audit/audit-chain.ts, migration 7).
      insertAudit: new AuditAppender(this.db),
      changedSince: this.db.prepare(
        `SELECT ${JOB_COLUMNS} FROM jobs WHERE updated_at >= ? ORDER BY updated_at, queue_seq LIMIT ?`,
      ),
    };
  }

  /**
   * The store's id and a constant sealed with the data key, made at the store's first open; later
   * opens check the key against it, so a key that is not this store's is refused at start instead
   * of failing every pending job SEALED_DATA_CORRUPT.
   */
  private identity(file: string): string {
    const row = this.db.prepare("SELECT store_id, key_check FROM store_meta WHERE id = 1").get() as
      | { store_id: string; key_check: Buffer }
      | undefined;
    if (!row) {
      const storeId = randomUUID();
      this.db
        .prepare("INSERT INTO store_meta (id, store_id, key_check, created_at) VALUES (1, ?, ?, ?)")
        .run(storeId, this.box.seal(KEY_CHECK, storeId), new Date(this.clock.wallNow()).toISOString());
      return storeId;
    }
    try {
      this.box.open(row.key_check, row.store_id);
    } catch {
      throw new StoreCheckError(
        "KEY_MISMATCH",
        `the data key does not open ${file} (store ${row.store_id}): it is not this store's key; restore this store's data key (data.key, or the kiosk-agent-data-key credential) from its backup; if 'kiosk-agent store rekey' was cut short, run it again`,
      );
    }
    return row.store_id;
  }

  /**
   * Runs a write. A store fault (full disk, I/O error, corrupt page, read-only file) is reported to
   * `health` and thrown as a StoreUnavailableError with its reason; a write that succeeds tells
   * `health` the store is writable again.
   */
  private write<T>(run: () => T): T {
    let result: T;
    try {
      result = run();
    } catch (err) {
      const reason = this.health.report(err);
      if (!reason) throw err;
      const code = (err as { code?: unknown }).code;
      throw new StoreUnavailableError(
        reason,
        `the job store could not take a write (${String(code ?? reason)})`,
        {
          cause: err,
        },
      );
    }
    this.health.writeSucceeded();
    return result;
  }

  close(): void {
    this.health.stop();
    if (this.scrub.timer) this.clock.clearTimeout(this.scrub.timer);
    this.scrub.timer = undefined;
    try {
      this.commitBatch();
    } finally {
      this.db.close();
    }
  }

  private batchOpen = false;
  /** Why a batch committed early (by a state change) failed, until endBatch() reports it. */
  private batchFailure: unknown;

  /**
   * Group commit: accept() calls until endBatch() share one transaction, so one fsync makes a whole
   * socket read of pushes durable. Any state change commits an open batch first, so a job is durable
   * before the printer moves for it; whoever opened the batch still learns from endBatch() whether it
   * reached the disk.
   */
  beginBatch(): void {
    if (this.batchOpen) return;
    this.write(() => this.db.exec("BEGIN IMMEDIATE"));
    this.batchOpen = true;
    this.batchFailure = undefined;
  }

  /** Commits the batch (if still open); throws when it did not reach the disk, now or earlier. */
  endBatch(): void {
    const failure = this.batchFailure;
    this.batchFailure = undefined;
    if (failure !== undefined) throw failure;
    this.commitBatch();
  }

  private commitBatch(): void {
    if (!this.batchOpen) return;
    this.batchOpen = false;
    try {
      this.write(() => this.db.exec("COMMIT"));
    } catch (err) {
      if (this.db.inTransaction) this.db.exec("ROLLBACK");
      this.batchFailure = err;
      throw err;
    }
  }

  /**
   * Stores a pushed job and its first event (READY or DATA_EXCEPTION) in one transaction. The same
   * operationId pushed again changes nothing and is reported as a duplicate: one operation, one card.
   */
  accept(input: AcceptInput): AcceptResult {
    return this.write(
      this.db.transaction((): AcceptResult => {
        const existing = this.statements.getJob.get(input.operationId) as RawJobRow | undefined;
        if (existing) return { duplicate: true, state: existing.state };
        const now = this.isoNow();
        const to: JobState = input.kind === "valid" ? "READY" : "DATA_EXCEPTION";
        const details = input.kind === "data-exception" ? input.details : undefined;
        // The row as inserted: the event and the audit line are built from it, not read back.
        const row: JobRow = {
          operationId: input.operationId,
          cardId: input.cardId,
          issuerRequestId: input.issuerRequestId ?? null,
          state: to,
          reason: details?.reason ?? null,
          errorCode: details?.errorCode ?? null,
          error: details?.error ?? null,
          maskedPan: input.kind === "valid" ? (input.maskedPan ?? null) : null,
          collectTimeoutSec: input.kind === "valid" ? (input.collectTimeoutSec ?? null) : null,
          retractReason: null,
          cardStock: input.kind === "valid" ? (input.cardStock ?? null) : null,
          fedFrom: null,
          fedStock: null,
          cardFed: null,
          acceptedAt: now,
          endedAt: to === "DATA_EXCEPTION" ? now : null,
          updatedAt: now,
        };
        this.statements.insertJob.run({
          operationId: row.operationId,
          cardId: row.cardId,
          issuerRequestId: row.issuerRequestId,
          state: row.state,
          reason: row.reason,
          errorCode: row.errorCode,
          error: row.error,
          maskedPan: row.maskedPan,
          collectTimeoutSec: row.collectTimeoutSec,
          cardStock: row.cardStock,
          acceptedAt: row.acceptedAt,
          endedAt: row.endedAt,
          sealedJob: input.kind === "valid" ? this.box.seal(input.jobJson, input.operationId) : null,
        });
        const event = this.writeEvent(row, transitionEvent("NEW", to)!);
        this.writeAudit("ACCEPTED", row, null, event.d1Status, input.source);
        return { duplicate: false, state: to, event };
      }),
    );
  }

  /** Audit row for a push refused without storing a job (docs/validation.md). */
  auditRefusal(refusal: {
    operationId?: string;
    errorCode: string;
    error: string;
    source?: PushSource;
  }): void {
    this.write(() =>
      this.statements.insertAudit.append({
        at: this.isoNow(),
        event: "REFUSED",
        operation_id: refusal.operationId ?? null,
        error_code: refusal.errorCode,
        error: refusal.error,
        request_id: refusal.source?.requestId ?? null,
        pushed_by: refusal.source?.pushedBy ?? null,
      }),
    );
  }

  /**
   * Moves a job from `from` to `to` if the table allows it and the job is still in `from`; writes the
   * move's D1 event in the same transaction. Terminal moves purge the sealed production data.
   */
  transition(
    operationId: string,
    from: JobState,
    to: JobState,
    stop: StopDetails = {},
    /** READY → PRODUCING: the feeder its card will come from, committed with the move. */
    route?: { feeder: string; ledgerStock: string },
  ): OutboxEvent | null {
    const d1Status = transitionEvent(from as FromState, to);
    if (d1Status === undefined) {
      throw new StoreError(
        "ILLEGAL_TRANSITION",
        `job ${operationId}: ${from} → ${to} is not a legal transition`,
      );
    }
    const terminal = isTerminal(to);
    this.commitBatch();
    const event = this.write(
      this.db.transaction((): OutboxEvent | null => {
        const now = this.isoNow();
        const changed = this.statements.update.run({
          operationId,
          from,
          to,
          reason: stop.reason ?? null,
          errorCode: stop.errorCode ?? null,
          error: stop.error ?? null,
          endedAt: terminal ? now : null,
          now,
          purge: terminal ? 1 : 0,
        }).changes;
        if (changed === 1 && route) this.statements.route.run(route.feeder, route.ledgerStock, operationId);
        const row = this.get(operationId);
        if (changed === 0) {
          if (!row) throw new StoreError("UNKNOWN_OPERATION", `job ${operationId} is not in the store`);
          throw new StoreError("STALE_STATE", `job ${operationId} is ${row.state}, not ${from}`);
        }
        const written = d1Status === null ? null : this.writeEvent(row!, d1Status);
        this.writeAudit("TRANSITION", row!, from, d1Status);
        if (terminal) this.recordCardMovement(row!, from);
        return written;
      }),
    );
    // After the caller has sent the status (same turn): the checkpoint must not delay CARD_PROD_DONE.
    if (terminal) queueMicrotask(() => this.db.open && this.scrubWal());
    return event;
  }

  /**
   * Commits, before the retract command is sent, that the card of this PRESENTED job is being pulled
   * back from the mouth and why; recovery reads it if the agent dies before the job ends.
   */
  setRetractIntent(operationId: string, reason: string): void {
    this.commitBatch();
    const changed = this.write(
      () =>
        this.db
          .prepare("UPDATE jobs SET retract_reason = ? WHERE operation_id = ? AND state = 'PRESENTED'")
          .run(reason, operationId).changes,
    );
    if (changed === 0) throw new StoreError("STALE_STATE", `job ${operationId} is not PRESENTED`);
  }

  /** How far the job's card got out of the feeder; committed before the job's next move. */
  markCardFed(operationId: string, feed: CardFeed | null): void {
    this.commitBatch();
    this.write(() => this.statements.setFed.run(feed, operationId));
  }

  /**
   * The card path was looked at after inserts that never answered: a card found there is the newest
   * such job's (MISFEED, counted now); every other one took no card.
   */
  resolveUnknownFeeds(cardFound: boolean): void {
    const pending = (this.statements.unknownFeeds.all() as RawJobRow[]).map(toJobRow);
    if (pending.length === 0) return;
    this.commitBatch();
    this.write(
      this.db.transaction(() => {
        pending.forEach((row, i) => {
          const misfed = cardFound && i === 0;
          this.statements.setFed.run(misfed ? "misfed" : null, row.operationId);
          if (misfed && row.fedFrom && row.fedStock) {
            this.stock.record({
              feeder: row.fedFrom,
              stock: row.fedStock,
              kind: "spoiled",
              reason: "MISFEED",
              operationId: row.operationId,
            });
          }
        });
      }),
    );
  }

  get(operationId: string): JobRow | undefined {
    const raw = this.statements.getJob.get(operationId) as RawJobRow | undefined;
    return raw && toJobRow(raw);
  }

  /** The production job of a non-terminal job, decrypted in memory only. */
  loadJobJson(operationId: string): string {
    const row = this.statements.sealedJob.get(operationId) as { sealed_job: Buffer | null } | undefined;
    if (!row?.sealed_job)
      throw new StoreError("UNKNOWN_OPERATION", `job ${operationId} has no production data`);
    return this.box.open(row.sealed_job, operationId);
  }

  /** The oldest READY job, skipping jobs for the stocks in `held` (null: jobs that name no stock). */
  nextReady(held: ReadonlyArray<string | null> = []): JobRow | undefined {
    const skip = JSON.stringify(held.map((s) => s ?? ""));
    const raw = this.statements.nextReady.get(skip) as RawJobRow | undefined;
    return raw && toJobRow(raw);
  }

  /** The stocks READY jobs ask for (null: jobs that name none). */
  readyStocks(): Array<string | null> {
    return (this.statements.readyStocks.all() as Array<{ card_stock: string | null }>).map(
      (r) => r.card_stock,
    );
  }

  /** READY jobs asking for `stock` (null: naming none), oldest first. */
  readyJobsOfStock(stock: string | null): JobRow[] {
    return (this.statements.readyOfStock.all(stock ?? "") as RawJobRow[]).map(toJobRow);
  }

  jobsIn(states: JobState[]): JobRow[] {
    return (this.statements.inStates.all(JSON.stringify(states)) as RawJobRow[]).map(toJobRow);
  }

  /** Jobs whose status changed at or after `since` (ISO time), oldest first. */
  jobsChangedSince(since: string, limit = 10_000): JobRow[] {
    return (this.statements.changedSince.all(since, limit) as RawJobRow[]).map(toJobRow);
  }

  /** Outbox events not acknowledged yet, in the order they were written. */
  unackedEvents(afterSeq = 0, limit = 100): OutboxEvent[] {
    return (this.statements.unacked.all(afterSeq, limit) as RawEventRow[]).map(toEvent);
  }

  markSent(eventIds: string[]): void {
    const now = this.isoNow();
    this.bookkeeping(() => {
      for (const id of eventIds) this.statements.markSent.run(now, id);
    });
  }

  /** Returns how many of the ids were newly acknowledged. Acked events stay for audit. */
  ack(eventIds: string[]): number {
    const now = this.isoNow();
    return this.bookkeeping(() => {
      let n = 0;
      for (const id of eventIds) n += this.statements.ack.run(now, id).changes;
      return n;
    });
  }

  /**
   * A write whose loss in a power cut costs only a resend (D1 drops events it already has, by
   * eventId): committed without its own fsync. WAL keeps it consistent, and the next state change's
   * fsync makes it durable too. Takes a sent/ack write off the card's path (docs/performance.md).
   */
  private bookkeeping<T>(write: () => T): T {
    return this.write(() => this.bookkeepingUnguarded(write));
  }

  private bookkeepingUnguarded<T>(write: () => T): T {
    const mode = this.db.pragma("synchronous", { simple: true }) as number;
    // Inside a transaction the pragma cannot change; at NORMAL (1) or OFF (0) there is no fsync anyway.
    if (this.db.inTransaction || mode <= 1) return this.db.transaction(write)();
    this.db.pragma("synchronous = NORMAL");
    try {
      return this.db.transaction(write)();
    } finally {
      this.db.pragma(`synchronous = ${mode}`);
    }
  }

  /** The last operation object written for this job: what D1 should believe now. */
  latestOperation(operationId: string): Operation | undefined {
    const row = this.statements.latestEvent.get(operationId) as { operation_json: string } | undefined;
    return row && (JSON.parse(row.operation_json) as Operation);
  }

  /** D1 statuses written for a job, in order (tests and the crash harness read this). */
  eventStatuses(operationId: string): string[] {
    return (this.statements.eventsOf.all(operationId) as { d1_status: string }[]).map((r) => r.d1_status);
  }

  countsByState(): Partial<Record<JobState, number>> {
    const out: Partial<Record<JobState, number>> = {};
    for (const r of this.statements.countByState.all() as { state: JobState; n: number }[])
      out[r.state] = r.n;
    return out;
  }

  /**
   * Audit retention: deletes finished jobs that ended before `beforeIso` together with their events,
   * provided every one of those events was acknowledged. Returns how many jobs went.
   */
  purgeFinishedBefore(beforeIso: string): number {
    return this.write(
      this.db.transaction(() => {
        const victims = `SELECT operation_id FROM jobs j
         WHERE j.state IN ('DONE','DATA_EXCEPTION','FAILED','CANCELED') AND j.ended_at < ?
           AND NOT EXISTS (SELECT 1 FROM events e WHERE e.operation_id = j.operation_id AND e.acked_at IS NULL)`;
        this.db.prepare(`DELETE FROM events WHERE operation_id IN (${victims})`).run(beforeIso);
        return this.db.prepare(`DELETE FROM jobs WHERE operation_id IN (${victims})`).run(beforeIso).changes;
      }),
    );
  }

  outboxDepth(): number {
    return (this.statements.unackedCount.get() as { n: number }).n;
  }

  /** The ledger movement of a job's card, by the one table (agent/stock/card-movement.ts). */
  private recordCardMovement(row: JobRow, from: JobState): void {
    const movement = movementFor(row.cardFed, from, row.state);
    if (!movement || !row.fedFrom || !row.fedStock) return;
    this.stock.record({
      feeder: row.fedFrom,
      stock: row.fedStock,
      ...movement,
      operationId: row.operationId,
    });
  }

  private writeEvent(row: JobRow, d1Status: D1Status): OutboxEvent {
    const { operationId } = row;
    const operation = buildOperation(row, d1Status);
    const eventId = randomUUID();
    const json = JSON.stringify(operation);
    const info = this.statements.insertEvent.run(eventId, operationId, d1Status, json, this.isoNow());
    return { seq: Number(info.lastInsertRowid), eventId, operationId, d1Status, operation, sendCount: 0 };
  }

  private writeAudit(
    kind: "ACCEPTED" | "TRANSITION",
    row: JobRow,
    from: JobState | null,
    d1Status: string | null,
    source?: PushSource,
  ): void {
    this.statements.insertAudit.append({
      at: row.updatedAt,
      event: kind,
      operation_id: row.operationId,
      card_id: row.cardId,
      issuer_request_id: row.issuerRequestId,
      from_state: from,
      to_state: row.state,
      d1_status: d1Status,
      reason: row.reason,
      error_code: row.errorCode,
      error: row.error,
      masked_pan: row.maskedPan,
      request_id: source?.requestId ?? null,
      pushed_by: source?.pushedBy ?? null,
    });
  }

  private scrub: { timer?: TimerHandle; since?: number; delayMs: number; attempts: number } = {
    delayMs: WAL_SCRUB_FIRST_RETRY_MS,
    attempts: 0,
  };

  /**
   * Whether a purged payload may still sit in the WAL: the last scrub could not truncate it (another
   * connection reads the database) and is being retried. `since`: monotonic ms of the first failure.
   */
  get walScrub(): { pending: boolean; since?: number; attempts: number } {
    const { since, attempts } = this.scrub;
    return since === undefined ? { pending: false, attempts } : { pending: true, since, attempts };
  }

  /**
   * After a purge: folds the WAL into the database and truncates it, so no old WAL frame keeps the
   * sealed payload of a finished job. Never waits for another connection: while one reads (an
   * `audit export`, a backup, an sqlite3 shell), SQLite cannot truncate and says so (busy, frames
   * left); the scrub is then retried on the clock, 1 s doubling to 60 s, until the WAL is empty. A
   * scrub still pending after WAL_SCRUB_WARN_MS raises the store warning WAL_NOT_SCRUBBED (status,
   * console, metrics) until it succeeds. Returns whether the WAL is truncated now.
   */
  scrubWal(): boolean {
    if (!this.db.open) return false;
    if (this.scrub.timer) this.clock.clearTimeout(this.scrub.timer);
    this.scrub.timer = undefined;
    let done = false;
    let detail = "busy";
    try {
      this.db.pragma("busy_timeout = 0");
      const [result] = this.db.pragma("wal_checkpoint(TRUNCATE)") as Array<{
        busy: number;
        log: number;
        checkpointed: number;
      }>;
      done = result !== undefined && result.busy === 0 && result.log <= 0;
      if (result && !done) detail = `busy=${result.busy}, ${result.checkpointed} of ${result.log} frames`;
    } catch (err) {
      // SQLITE_BUSY / LOCKED: another connection holds the WAL.
      detail = String((err as { code?: unknown }).code ?? "error");
    } finally {
      this.db.pragma("busy_timeout = 5000");
    }
    if (done) {
      // SQLite truncates the -wal without syncing the truncation: a power cut before the log's next
      // sync brings the old frames, sealed payloads included, back (found on LazyFS; docs/crash-harness.md).
      try {
        fsyncPath(this.walFile);
      } catch {
        // No -wal (never written): nothing to make durable; a failure changes nothing committed.
      }
      this.scrub = { delayMs: WAL_SCRUB_FIRST_RETRY_MS, attempts: 0 };
      this.health.clearWarning("WAL_NOT_SCRUBBED");
      return true;
    }
    const now = this.clock.now();
    this.scrub.since ??= now;
    this.scrub.attempts += 1;
    if (now - this.scrub.since >= WAL_SCRUB_WARN_MS) {
      this.health.setWarning(
        "WAL_NOT_SCRUBBED",
        `another process has held the database open for ${Math.round((now - this.scrub.since) / 1000)} s: sealed data of finished jobs may remain in jobs.sqlite-wal (${detail})`,
      );
    }
    const delay = this.scrub.delayMs;
    this.scrub.delayMs = Math.min(delay * 2, WAL_SCRUB_MAX_RETRY_MS);
    this.scrub.timer = this.clock.setTimeout(() => {
      this.scrub.timer = undefined;
      this.scrubWal();
    }, delay);
    return false;
  }

  /** Wall time: every time the store writes is a timestamp, never a deadline (docs/architecture.md#time). */
  private isoNow(): string {
    return new Date(this.clock.wallNow()).toISOString();
  }
}

function openStore(file: string): Database.Database {
  let db: Database.Database;
  try {
    db = new Database(file);
  } catch (err) {
    throw refusalAtOpen(file, err);
  }
  // 0600 whatever the umask (a start outside systemd, or files an older version made). SQLite makes
  // the -wal and -shm with the database file's mode, so this is done before they are touched.
  for (const f of [file, `${file}-wal`, `${file}-shm`]) restrictMode(f, 0o600);
  return db;
}

/**
 * A store that cannot be opened for writing at start is refused with one line naming the file and
 * what to do (docs/operations.md, "A full disk and a damaged store"); a running agent reports the
 * same faults as device-level state instead (StoreHealth).
 */
function refusalAtOpen(file: string, err: unknown): unknown {
  if (err instanceof StoreCheckError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const what = `${String(code ?? (err as Error)?.message)}`;
  switch (storeFaultOf(err)) {
    case "STORE_FULL":
      return new StoreCheckError(
        "STORE_FULL",
        `${file} cannot be opened for writing: its file system is full (${what}); free space on it and start again`,
        { cause: err },
      );
    case "STORE_CORRUPT":
      return new StoreCheckError(
        "STORE_CORRUPT",
        `${file} is damaged (${what}): run 'kiosk-agent store check', then restore it from its backup`,
        { cause: err },
      );
    case "STORE_READONLY":
    case "STORE_IO_ERROR":
      return new StoreCheckError(
        "STORE_READONLY",
        `${file} cannot be opened for writing (${what}): its file system is read-only or failing; check the disk (dmesg), remount it read-write, and start again`,
        { cause: err },
      );
    default:
      return err;
  }
}

/** The D1 operation object for a job that just reached `d1Status` (shared/d1-contract.md). */
export function buildOperation(row: JobRow, d1Status: D1Status): Operation {
  const failed = topLevelStatus(d1Status) === "FAILED";
  const op: Operation = {
    operationId: row.operationId,
    operation: "PRODUCE",
    status: topLevelStatus(d1Status),
    startTime: row.acceptedAt,
    cardId: row.cardId,
    details: failed && row.reason ? { status: d1Status, reason: row.reason } : { status: d1Status },
  };
  if (row.endedAt && isTerminal(row.state)) op.endTime = row.endedAt;
  if (failed && row.errorCode) op.errorCode = row.errorCode;
  if (failed && row.error) op.error = row.error;
  if (row.issuerRequestId) op.issuerRequestId = row.issuerRequestId;
  return op;
}

function toJobRow(r: RawJobRow): JobRow {
  return {
    operationId: r.operation_id,
    cardId: r.card_id,
    issuerRequestId: r.issuer_request_id,
    state: r.state,
    reason: r.reason,
    errorCode: r.error_code,
    error: r.error,
    maskedPan: r.masked_pan,
    collectTimeoutSec: r.collect_timeout_sec,
    retractReason: r.retract_reason,
    cardStock: r.card_stock,
    fedFrom: r.fed_from,
    fedStock: r.fed_stock,
    cardFed: r.card_fed,
    acceptedAt: r.accepted_at,
    endedAt: r.ended_at,
    updatedAt: r.updated_at,
  };
}

function toEvent(r: RawEventRow): OutboxEvent {
  return {
    seq: r.seq,
    eventId: r.event_id,
    operationId: r.operation_id,
    d1Status: r.d1_status,
    operation: JSON.parse(r.operation_json) as Operation,
    sendCount: r.send_count,
  };
}
