import type Database from "better-sqlite3";
import { startChain } from "../audit/audit-chain.js";
import { CodedError } from "../util/errors.js";

/**
 * Numbered schema migrations, applied in order at start inside one transaction each: the SQL, then
 * `apply` (what SQL alone cannot do), in the same transaction. Never edit a released migration: add
 * the next number.
 */
export const MIGRATIONS: ReadonlyArray<{
  version: number;
  sql: string;
  apply?: (db: Database.Database, appliedAt: string) => void;
}> = [
  {
    version: 1,
    sql: `
      -- One row per operationId D1 pushed and we accepted (refused pushes are never stored).
      CREATE TABLE jobs (
        operation_id        TEXT PRIMARY KEY,
        card_id             TEXT NOT NULL,
        issuer_request_id   TEXT,
        state               TEXT NOT NULL CHECK (state IN
                              ('READY','PRODUCING','PRESENTED','DONE','DATA_EXCEPTION','FAILED','CANCELED')),
        reason              TEXT,      -- details.reason of the last stop (CB_TIME, FEEDER_EMPTY, …)
        error_code          TEXT,
        error               TEXT,      -- a field path or a short text, never card data
        masked_pan          TEXT,      -- first 6 / last 4 only, for audit
        sealed_job          BLOB,      -- AES-256-GCM production job; NULL once the job is terminal
        collect_timeout_sec INTEGER,
        accepted_at         TEXT NOT NULL,  -- D1 startTime
        ended_at            TEXT,           -- D1 endTime
        updated_at          TEXT NOT NULL,
        queue_seq           INTEGER NOT NULL -- production order
      );
      CREATE INDEX jobs_by_state ON jobs(state, queue_seq);
      CREATE INDEX jobs_by_update ON jobs(updated_at);

      -- The outbox: every D1 status event, written in the same transaction as its state change,
      -- read forward in seq order and re-sent until D1 acknowledges its event_id.
      CREATE TABLE events (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id       TEXT NOT NULL UNIQUE,
        operation_id   TEXT NOT NULL REFERENCES jobs(operation_id),
        d1_status      TEXT NOT NULL,
        operation_json TEXT NOT NULL,   -- the D1 operation object, exactly as sent
        created_at     TEXT NOT NULL,
        send_count     INTEGER NOT NULL DEFAULT 0,
        last_sent_at   TEXT,
        acked_at       TEXT
      );
      CREATE INDEX events_unacked ON events(seq) WHERE acked_at IS NULL;
      CREATE INDEX events_by_operation ON events(operation_id, seq);
    `,
  },
  {
    version: 2,
    sql: `
      -- The audit trail (docs/security.md#audit-trail): one row per fact about a card, written in the
      -- same transaction as the state change it records. Append-only: the triggers below abort any
      -- UPDATE or DELETE, so retention of jobs/events (purgeFinishedBefore) never touches it.
      -- No card data: the PAN only masked (first 6 / last 4), errors are field paths and codes.
      CREATE TABLE audit_log (
        seq               INTEGER PRIMARY KEY AUTOINCREMENT,
        at                TEXT NOT NULL,
        event             TEXT NOT NULL CHECK (event IN ('ACCEPTED','TRANSITION','REFUSED','BACKFILL')),
        operation_id      TEXT,            -- NULL for a refused push that had none
        card_id           TEXT,
        issuer_request_id TEXT,
        from_state        TEXT,            -- NULL for ACCEPTED / REFUSED
        to_state          TEXT,
        d1_status         TEXT,            -- the CARD_PROD_* status this fact emitted, if any
        reason            TEXT,
        error_code        TEXT,
        error             TEXT,
        masked_pan        TEXT,
        request_id        TEXT,            -- D1's push requestId
        pushed_by         TEXT             -- D1 endpoint and link session that delivered the push
      );
      CREATE INDEX audit_by_operation ON audit_log(operation_id, seq);
      CREATE INDEX audit_by_time ON audit_log(at);
      CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
      CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
      -- Jobs accepted before this migration: one row with the state they are in.
      INSERT INTO audit_log (at, event, operation_id, card_id, issuer_request_id, to_state, reason,
                             error_code, error, masked_pan)
        SELECT updated_at, 'BACKFILL', operation_id, card_id, issuer_request_id, state, reason,
               error_code, error, masked_pan
        FROM jobs ORDER BY queue_seq;
    `,
  },
  {
    version: 3,
    sql: `
      -- A physical action the agent committed to *before* sending it (docs/recovery.md): a card about
      -- to be retracted from the mouth is recorded here first, so a restart that finds the mouth empty
      -- can tell "retracted by us" from "taken by the cardholder". Value: the D1 reason the retract
      -- ends the job with (CB_TIME, SHUTDOWN, …). NULL: no action pending.
      ALTER TABLE jobs ADD COLUMN retract_reason TEXT;
    `,
  },
  {
    version: 4,
    sql: `
      -- insertJob computes MAX(queue_seq) + 1: without an index led by queue_seq that is a scan of
      -- every job ever kept (docs/performance.md, accept).
      CREATE INDEX jobs_by_queue_seq ON jobs(queue_seq);
    `,
  },
  {
    version: 5,
    sql: `
      -- The card-stock ledger (docs/stock.md): every movement of card blanks, per feeder and stock.
      -- A job's card is one row (operation_id UNIQUE: never counted twice), written in the
      -- transaction that ends the job; loads, returns and adjustments are the technician's.
      -- Append-only, like the audit trail.
      CREATE TABLE stock_ledger (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        at              TEXT NOT NULL,
        feeder          TEXT NOT NULL,
        stock           TEXT NOT NULL,
        kind            TEXT NOT NULL CHECK (kind IN ('loaded','issued','spoiled','returned','adjusted')),
        reason          TEXT CHECK (reason IN ('REJECTED_AFTER_PRINT','CAPTURED_NOT_TAKEN','MISFEED',
                                               'TEST_CARD','CANCELED_IN_PRODUCTION')),
        quantity        INTEGER NOT NULL,   -- cards; signed for 'adjusted', positive otherwise
        operation_id    TEXT UNIQUE,        -- the job whose card this was (NULL: a technician's movement)
        operator        TEXT,
        second_operator TEXT,               -- dual control: an adjustment above the threshold
        note            TEXT,
        CHECK ((kind = 'spoiled') = (reason IS NOT NULL)),
        CHECK (kind = 'adjusted' OR quantity > 0)
      );
      CREATE INDEX stock_by_feeder ON stock_ledger(feeder, stock, seq);
      CREATE INDEX stock_by_time ON stock_ledger(at);
      CREATE TRIGGER stock_ledger_no_update BEFORE UPDATE ON stock_ledger
        BEGIN SELECT RAISE(ABORT, 'stock_ledger is append-only'); END;
      CREATE TRIGGER stock_ledger_no_delete BEFORE DELETE ON stock_ledger
        BEGIN SELECT RAISE(ABORT, 'stock_ledger is append-only'); END;

      -- Where a job's card comes from. card_stock: the stock the job asked for (productionData.cardStock,
      -- not a secret; the pipeline skips jobs whose feeder is empty by it). fed_from / fed_stock: the
      -- feeder routed to and the stock the ledger counts there, committed before the insert (intent).
      -- card_fed: 'fed' once the printer took the card, 'presented' once it is in the mouth (before
      -- that a PRESENTED job's card is still inside: rejected, not captured), 'misfed' when the feed itself failed with a
      -- card taken, 'unknown' when the insert ended without an answer (resolved by the next look at
      -- the card path). The job's ledger movement is derived from these and its last move.
      ALTER TABLE jobs ADD COLUMN card_stock TEXT;
      ALTER TABLE jobs ADD COLUMN fed_from TEXT;
      ALTER TABLE jobs ADD COLUMN fed_stock TEXT;
      ALTER TABLE jobs ADD COLUMN card_fed TEXT CHECK (card_fed IN ('fed','presented','misfed','unknown'));

      -- The printer's own inserted-cards counter, read at start and after every card, beside the
      -- ledger's count of fed cards at that moment: the two are compared, never reconciled silently.
      -- A row with acknowledged_by is a technician's acknowledgement of the difference so far (with a
      -- note saying what explains it): the live check counts from there; reports still show it.
      CREATE TABLE printer_counter_log (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        at              TEXT NOT NULL,
        cards_inserted  INTEGER NOT NULL,
        ledger_fed      INTEGER NOT NULL,
        acknowledged_by TEXT,
        note            TEXT
      );

      -- A bin (reject box, capture bin) emptied by a technician: its count starts again.
      CREATE TABLE bin_log (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        at       TEXT NOT NULL,
        bin      TEXT NOT NULL,
        cards    INTEGER NOT NULL,   -- how many the technician took out
        operator TEXT NOT NULL
      );

      -- The audit trail gains the stock, bin and technician events (a CHECK cannot be altered in
      -- place): the same rows, copied in order, into a table that allows them, with a detail column.
      DROP TRIGGER audit_log_no_update;
      DROP TRIGGER audit_log_no_delete;
      DROP INDEX audit_by_operation;
      DROP INDEX audit_by_time;
      ALTER TABLE audit_log RENAME TO audit_log_v4;
      CREATE TABLE audit_log (
        seq               INTEGER PRIMARY KEY AUTOINCREMENT,
        at                TEXT NOT NULL,
        event             TEXT NOT NULL CHECK (event IN ('ACCEPTED','TRANSITION','REFUSED','BACKFILL',
                                                         'STOCK','BIN','TECHNICIAN')),
        operation_id      TEXT,
        card_id           TEXT,
        issuer_request_id TEXT,
        from_state        TEXT,
        to_state          TEXT,
        d1_status         TEXT,
        reason            TEXT,
        error_code        TEXT,
        error             TEXT,
        masked_pan        TEXT,
        request_id        TEXT,
        pushed_by         TEXT,
        detail            TEXT             -- STOCK / BIN / TECHNICIAN: what moved or what was run, JSON
      );
      INSERT INTO audit_log (seq, at, event, operation_id, card_id, issuer_request_id, from_state, to_state,
                             d1_status, reason, error_code, error, masked_pan, request_id, pushed_by)
        SELECT seq, at, event, operation_id, card_id, issuer_request_id, from_state, to_state, d1_status,
               reason, error_code, error, masked_pan, request_id, pushed_by
        FROM audit_log_v4 ORDER BY seq;
      DROP TABLE audit_log_v4;
      CREATE INDEX audit_by_operation ON audit_log(operation_id, seq);
      CREATE INDEX audit_by_time ON audit_log(at);
      CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
      CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    `,
  },
  {
    version: 6,
    sql: `
      -- Who this store is (docs/operations.md, "The data directory at start"). store_id is also in
      -- the data directory's store.id file, so a store that went missing, or a write-ahead log of
      -- another store replayed onto this one, is noticed instead of silently accepted. key_check is
      -- a constant sealed with the data key: a key that does not open it is not this store's key.
      -- The row is written by JobStore right after the migrations (it needs the key).
      CREATE TABLE store_meta (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        store_id   TEXT NOT NULL,
        key_check  BLOB NOT NULL,
        created_at TEXT NOT NULL,
        writes     INTEGER NOT NULL DEFAULT 0
      );
      -- Every transaction that writes a job, an event, an audit row or a ledger movement also writes
      -- the store_meta page, so any write-ahead log of this store carries its store_id: a log of
      -- another store replayed onto this file shows the other id and is refused.
      CREATE TRIGGER meta_on_job_insert AFTER INSERT ON jobs
        BEGIN UPDATE store_meta SET writes = writes + 1; END;
      CREATE TRIGGER meta_on_job_update AFTER UPDATE ON jobs
        BEGIN UPDATE store_meta SET writes = writes + 1; END;
      CREATE TRIGGER meta_on_event_insert AFTER INSERT ON events
        BEGIN UPDATE store_meta SET writes = writes + 1; END;
      CREATE TRIGGER meta_on_event_update AFTER UPDATE ON events
        BEGIN UPDATE store_meta SET writes = writes + 1; END;
      CREATE TRIGGER meta_on_audit_insert AFTER INSERT ON audit_log
        BEGIN UPDATE store_meta SET writes = writes + 1; END;
      CREATE TRIGGER meta_on_stock_insert AFTER INSERT ON stock_ledger
        BEGIN UPDATE store_meta SET writes = writes + 1; END;
    `,
  },
  {
    version: 7,
    sql: `
      -- The audit trail becomes a hash chain (agent/audit/audit-chain.ts; docs/security.md#audit-trail):
      -- each row's hash covers its fields and the previous row's hash, so a row changed or deleted
      -- behind the triggers' back is named by 'kiosk-agent audit verify'.
      -- Where the chain began: the rows already there were hashed by this migration (the chain vouches
      -- for them from then on). Written once.
      CREATE TABLE audit_chain (
        id                 INTEGER PRIMARY KEY CHECK (id = 1),
        started_at         TEXT NOT NULL,
        backfilled_through INTEGER NOT NULL
      );
      ALTER TABLE audit_log ADD COLUMN hash TEXT;
      CREATE TRIGGER audit_chain_no_update BEFORE UPDATE ON audit_chain
        BEGIN SELECT RAISE(ABORT, 'audit_chain is write-once'); END;
      CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain
        BEGIN SELECT RAISE(ABORT, 'audit_chain is write-once'); END;
      -- The syslog forwarder's durable cursor (agent/audit/syslog-forwarder.ts): the last row the
      -- collector confirmed, and its hash (the next row must follow from it).
      CREATE TABLE audit_forward (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        last_seq     INTEGER NOT NULL,
        last_hash    TEXT NOT NULL,
        collector    TEXT,            -- host:port it went to
        forwarded_at TEXT
      );
      INSERT INTO audit_forward (id, last_seq, last_hash) VALUES (1, 0, '${"0".repeat(64)}');
      CREATE TRIGGER meta_on_forward_update AFTER UPDATE ON audit_forward
        BEGIN UPDATE store_meta SET writes = writes + 1; END;
      -- Put back, with the insert check, once the existing rows are hashed (apply).
      DROP TRIGGER audit_log_no_update;
    `,
    apply: startChain,
  },
];

/** The newest schema this code knows. */
export const SCHEMA_VERSION = Math.max(...MIGRATIONS.map((m) => m.version));

/** Why a data directory's store cannot be used; the message names the file and what to do. */
export class StoreCheckError extends CodedError<
  | "STORE_SCHEMA_NEWER"
  | "STORE_MIGRATION_FAILED"
  | "STORE_MISSING"
  | "STORE_EMPTY"
  | "STORE_MISMATCH"
  | "STORE_UNREADABLE"
  | "KEY_MISMATCH"
  | "STORE_FULL"
  | "STORE_CORRUPT"
  | "STORE_READONLY"
> {}

/** The schema versions a store has applied, newest last (none for a new file). */
export function appliedVersions(db: Database.Database): number[] {
  const table = db
    .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
    .get();
  if (!table) return [];
  return (
    db.prepare("SELECT version FROM schema_migrations ORDER BY version").all() as { version: number }[]
  ).map((r) => r.version);
}

/**
 * Brings the store to SCHEMA_VERSION, one transaction per migration. A store written by a newer
 * agent is refused before anything is written (an older agent would misread it); a migration that
 * fails rolls back whole and is refused with its reason: the store is left as it was.
 */
export function migrate(db: Database.Database, file = "jobs.sqlite"): void {
  const done = appliedVersions(db);
  const newest = done.at(-1) ?? 0;
  if (newest > SCHEMA_VERSION) {
    throw new StoreCheckError(
      "STORE_SCHEMA_NEWER",
      `${file} has schema version ${newest}, this agent knows up to ${SCHEMA_VERSION}: it was written by a newer kiosk-agent; install that version again (the store was not changed)`,
    );
  }
  db.exec(
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
  );
  const applied = new Set(done);
  for (const m of MIGRATIONS) {
    if (applied.has(m.version)) continue;
    try {
      db.transaction(() => {
        const appliedAt = new Date().toISOString();
        db.exec(m.sql);
        m.apply?.(db, appliedAt);
        db.prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)").run(
          m.version,
          appliedAt,
        );
      })();
    } catch (err) {
      throw new StoreCheckError(
        "STORE_MIGRATION_FAILED",
        `${file}: schema migration ${m.version} failed (${(err as Error).message}) and was rolled back; the store is as it was. Its schema does not match its migration record: restore it from a backup, or run 'kiosk-agent store check' and contact support`,
        { cause: err },
      );
    }
  }
}
