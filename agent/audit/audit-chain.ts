import { createHash } from "node:crypto";
import type Database from "better-sqlite3";

/**
 * The audit trail's hash chain (migration 7; docs/security.md, "Audit trail").
 *
 * Every row of `audit_log` carries `hash`, the SHA-256 of a fixed prefix, the previous row's hash
 * and a canonical encoding of the row's own fields, seq included:
 *
 *   hash(n) = hex(SHA-256("kiosk-agent audit v1\n" ‖ hash(n-1) ‖ "\n" ‖ JSON.stringify([seq, at,
 *             event, operation_id, card_id, issuer_request_id, from_state, to_state, d1_status,
 *             reason, error_code, error, masked_pan, request_id, pushed_by, detail])))
 *
 * with hash(0) = 64 zeros. A row changed after it was written no longer matches its hash; a row
 * deleted leaves a gap in `seq` and a successor whose hash does not follow. The chain has no key on
 * purpose: every writer (the agent, `kiosk-agent stock`, a standalone `kiosk-agent printer`) must
 * extend it, and the data key they would need is a systemd credential only the service sees. So a
 * person who knows this format can recompute the chain after editing rows; what such a person cannot
 * change is the copy each row already left the box as (agent/audit/syslog-forwarder.ts), which
 * `kiosk-agent audit verify --against FILE` compares row by row.
 */

export const GENESIS_HASH = "0".repeat(64);
const DOMAIN = "kiosk-agent audit v1\n";

/** The chained columns, in the order they are hashed (after seq). */
export const CHAINED_COLUMNS = [
  "at",
  "event",
  "operation_id",
  "card_id",
  "issuer_request_id",
  "from_state",
  "to_state",
  "d1_status",
  "reason",
  "error_code",
  "error",
  "masked_pan",
  "request_id",
  "pushed_by",
  "detail",
] as const;
export type ChainedColumn = (typeof CHAINED_COLUMNS)[number];

/** One audit row as stored, by column name. */
export type AuditRow = { seq: number; hash: string | null } & Record<ChainedColumn, string | null>;

/** What a writer gives: `at` and `event`, and whichever other columns the fact has. */
export type AuditFact = { at: string; event: string } & Partial<Record<ChainedColumn, string | null>>;

/** The hash row `row` must carry when `prevHash` is the hash of the row before it. */
export function chainHash(prevHash: string, row: Omit<AuditRow, "hash">): string {
  const canonical = JSON.stringify([row.seq, ...CHAINED_COLUMNS.map((c) => row[c] ?? null)]);
  return createHash("sha256").update(DOMAIN).update(prevHash).update("\n").update(canonical).digest("hex");
}

export const AUDIT_ROW_COLUMNS = `seq, ${CHAINED_COLUMNS.join(", ")}, hash`;

/**
 * Appends audit rows to one connection's `audit_log`, each chained to the row before it. Inside the
 * caller's transaction when one is open (the row commits or rolls back with the state change it
 * records); otherwise in a transaction of its own, taken with the write lock first, so a writer in
 * another process cannot append between the read of the last row and this insert.
 */
export class AuditAppender {
  private readonly last;
  private readonly sequence;
  private readonly insert;
  private readonly appendTx;

  constructor(private readonly db: Database.Database) {
    this.last = db.prepare("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1");
    // AUTOINCREMENT's high-water mark: a seq once used is never used again, even after its row was
    // deleted behind the triggers' back, so a deletion stays a visible gap.
    this.sequence = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'");
    this.insert = db.prepare(
      `INSERT INTO audit_log (${AUDIT_ROW_COLUMNS}) VALUES (@seq, ${CHAINED_COLUMNS.map((c) => `@${c}`).join(", ")}, @hash)`,
    );
    this.appendTx = db.transaction((fact: AuditFact) => this.appendNow(fact));
  }

  /** Writes one fact; returns its seq and hash. */
  append(fact: AuditFact): { seq: number; hash: string } {
    const written = this.db.inTransaction ? this.appendTx(fact) : this.appendTx.immediate(fact);
    const waiting = listeners.get(this.db);
    if (waiting?.size)
      queueMicrotask(() => {
        for (const listener of waiting) listener();
      });
    return written;
  }

  private appendNow(fact: AuditFact): { seq: number; hash: string } {
    const last = this.last.get() as { seq: number; hash: string | null } | undefined;
    const high = (this.sequence.get() as { seq: number } | undefined)?.seq ?? 0;
    const seq = Math.max(high, last?.seq ?? 0) + 1;
    const row = { seq } as Omit<AuditRow, "hash">;
    for (const c of CHAINED_COLUMNS) row[c] = fact[c] ?? null;
    const hash = chainHash(last?.hash ?? GENESIS_HASH, row);
    this.insert.run({ ...row, hash });
    return { seq, hash };
  }
}

/** The ledger's audit statement: `run(at, event, operation_id, reason, detail)`, chained. */
export function ledgerAuditInsert(db: Database.Database): {
  run(at: string, event: string, operationId: string | null, reason: string | null, detail: string): void;
} {
  const appender = new AuditAppender(db);
  return {
    run: (at, event, operationId, reason, detail) => {
      appender.append({ at, event, operation_id: operationId, reason, detail });
    },
  };
}

const listeners = new WeakMap<Database.Database, Set<() => void>>();

/**
 * Calls `listener` after rows were appended on this connection (in a microtask: after the
 * transaction that wrote them, when it is the writer's own). The forwarder sends them at once instead
 * of at its next poll. Returns the unsubscribe function.
 */
export function onAuditAppend(db: Database.Database, listener: () => void): () => void {
  const set = listeners.get(db) ?? new Set<() => void>();
  listeners.set(db, set);
  set.add(listener);
  return () => set.delete(listener);
}

/**
 * Migration 7's step in code: hashes the rows already in `audit_log` (they were written before the
 * chain existed, so the chain vouches for them from now on, not for what happened to them before),
 * records where the chain began, and puts back the triggers. Runs inside the migration's transaction.
 */
export function startChain(db: Database.Database, startedAt: string): void {
  const rows = db.prepare(`SELECT ${AUDIT_ROW_COLUMNS} FROM audit_log ORDER BY seq`).all() as AuditRow[];
  const update = db.prepare("UPDATE audit_log SET hash = ? WHERE seq = ?");
  let prev = GENESIS_HASH;
  for (const row of rows) {
    prev = chainHash(prev, row);
    update.run(prev, row.seq);
  }
  db.prepare("INSERT INTO audit_chain (id, started_at, backfilled_through) VALUES (1, ?, ?)").run(
    startedAt,
    rows.at(-1)?.seq ?? 0,
  );
  db.exec(`
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
      BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    -- A row without its link would be a row the chain cannot vouch for: every writer appends through
    -- agent/audit/audit-chain.ts (AuditAppender).
    CREATE TRIGGER audit_log_chained BEFORE INSERT ON audit_log
      WHEN NEW.hash IS NULL OR length(NEW.hash) != 64
      BEGIN SELECT RAISE(ABORT, 'audit_log rows are hash-chained: append them with AuditAppender'); END;
  `);
}

export type ChainProblemCode = "MISSING" | "CHANGED" | "NOT_CHAINED" | "TRUNCATED" | "DIFFERS_FROM_COPY";

export interface ChainProblem {
  /** The first row that does not verify (for TRUNCATED: the first row missing at the end). */
  seq: number;
  code: ChainProblemCode;
  message: string;
}

export interface ChainReport {
  ok: boolean;
  /** Rows in the table (all of them, also after a problem). */
  rows: number;
  firstSeq: number | null;
  lastSeq: number | null;
  /** The last row's hash: what a later verify, or the collector's copy, can be compared with. */
  head: string | null;
  /** When migration 7 started the chain, and the rows that were already there (hashed then). */
  startedAt: string | null;
  backfilledThrough: number;
  /** The forwarder's cursor: rows the collector confirmed (agent/audit/syslog-forwarder.ts). */
  forwardedThrough: number;
  /** Only the first problem: everything after a broken row is unproven. */
  problem?: ChainProblem;
  /** With a collector's copy: how many of its rows of this store were compared. */
  comparedWithCopy?: number;
}

/**
 * Checks the chain of an open database (read-only is enough): seq runs 1, 2, 3… without a gap,
 * every hash follows from its predecessor, and nothing is missing after the last row by the table's
 * own sequence or the forwarder's cursor. Stops at the first problem and names the row.
 */
export function verifyChain(db: Database.Database): ChainReport {
  const chain = db.prepare("SELECT started_at, backfilled_through FROM audit_chain WHERE id = 1").get() as
    | { started_at: string; backfilled_through: number }
    | undefined;
  const forwarded =
    (db.prepare("SELECT last_seq FROM audit_forward WHERE id = 1").get() as { last_seq: number } | undefined)
      ?.last_seq ?? 0;
  const high = (
    db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'").get() as
      | { seq: number }
      | undefined
  )?.seq;
  const report: ChainReport = {
    ok: true,
    rows: (db.prepare("SELECT COUNT(*) AS n FROM audit_log").get() as { n: number }).n,
    firstSeq: null,
    lastSeq: null,
    head: null,
    startedAt: chain?.started_at ?? null,
    backfilledThrough: chain?.backfilled_through ?? 0,
    forwardedThrough: forwarded,
  };
  const fail = (problem: ChainProblem): ChainReport => ({ ...report, ok: false, problem });
  let prev = GENESIS_HASH;
  let expected = 1;
  for (const row of db
    .prepare(`SELECT ${AUDIT_ROW_COLUMNS} FROM audit_log ORDER BY seq`)
    .iterate() as Iterable<AuditRow>) {
    report.firstSeq ??= row.seq;
    if (row.seq !== expected) {
      const span = row.seq - expected === 1 ? `row ${expected} is` : `rows ${expected}–${row.seq - 1} are`;
      return fail({
        seq: expected,
        code: "MISSING",
        message: `${span} missing: ${expected === 1 ? "the table starts" : `row ${expected - 1} is followed`} at row ${row.seq} (deleted)`,
      });
    }
    if (typeof row.hash !== "string" || !/^[0-9a-f]{64}$/.test(row.hash)) {
      return fail({
        seq: row.seq,
        code: "NOT_CHAINED",
        message: `row ${row.seq} has no hash: it was inserted without the chain (behind the triggers)`,
      });
    }
    if (chainHash(prev, row) !== row.hash) {
      return fail({
        seq: row.seq,
        code: "CHANGED",
        message: `row ${row.seq} (${row.event} at ${row.at}) does not match its hash: the row, or its hash, was changed after it was written`,
      });
    }
    prev = row.hash;
    report.lastSeq = row.seq;
    report.head = row.hash;
    expected = row.seq + 1;
  }
  const last = report.lastSeq ?? 0;
  const end = Math.max(high ?? 0, forwarded);
  if (end > last) {
    const why =
      forwarded > last
        ? `the collector confirmed rows through ${forwarded}`
        : `the table's sequence reached ${end}`;
    return fail({
      seq: last + 1,
      code: "TRUNCATED",
      message: `rows ${last + 1}–${end} are missing at the end (${why}; the last row is ${last || "none"}): deleted`,
    });
  }
  return report;
}

/**
 * A collector's copy of the rows, as `audit verify --against FILE` reads it: any text with one
 * forwarded message per line (rsyslog's file output, a SIEM export). A line counts by the message's
 * structured data (`[kioskAudit@32473 store="…" seq="…" hash="…"]`) or, where the collector kept only
 * the message text, by its JSON (`{"store":…,"seq":…,"hash":…}`). Only this store's rows count.
 */
export function rowsInCopy(text: string, storeId: string): Map<number, string[]> {
  const found = new Map<number, string[]>();
  const element = /\[[^\s\]=@"]+@\d+((?:\s+[^\s=\]"]+="(?:[^"\\]|\\.)*")+)\s*\]/g;
  const param = /([^\s=\]"]+)="((?:[^"\\]|\\.)*)"/g;
  const add = (store: unknown, seq: unknown, hash: unknown): boolean => {
    if (store !== storeId || typeof hash !== "string" || !/^[0-9a-f]{64}$/.test(hash)) return false;
    const n = Number(seq);
    if (!Number.isSafeInteger(n)) return false;
    found.set(n, [...(found.get(n) ?? []), hash]);
    return true;
  };
  for (const line of text.split("\n")) {
    let counted = false;
    for (const m of line.matchAll(element)) {
      const params = new Map<string, string>();
      for (const p of m[1]!.matchAll(param)) params.set(p[1]!, p[2]!.replace(/\\(["\\\]])/g, "$1"));
      if (add(params.get("store"), params.get("seq"), params.get("hash"))) {
        counted = true;
        break;
      }
    }
    const json = line.indexOf('{"store":');
    if (counted || json < 0) continue;
    try {
      const parsed = JSON.parse(line.slice(json).trim()) as {
        store?: unknown;
        seq?: unknown;
        hash?: unknown;
      };
      add(parsed.store, parsed.seq, parsed.hash);
    } catch {
      // not one of ours
    }
  }
  return found;
}

/**
 * Compares the store's rows with a collector's copy: a row the collector received with another hash
 * was rewritten after it left the box, even if the local chain was recomputed to match; a row the
 * collector has and the store lacks was deleted.
 */
export function compareWithCopy(
  db: Database.Database,
  copy: Map<number, string[]>,
  report: ChainReport,
): ChainReport {
  const hashOf = db.prepare("SELECT hash FROM audit_log WHERE seq = ?");
  let compared = 0;
  let first: ChainProblem | undefined;
  for (const seq of [...copy.keys()].sort((a, b) => a - b)) {
    compared++;
    const local = (hashOf.get(seq) as { hash: string | null } | undefined)?.hash;
    const theirs = copy.get(seq)!;
    if (local === undefined) {
      first ??= {
        seq,
        code: "MISSING",
        message: `row ${seq} reached the collector but is not in the store: deleted after it was forwarded`,
      };
    } else if (!theirs.includes(local ?? "")) {
      first ??= {
        seq,
        code: "DIFFERS_FROM_COPY",
        message: `row ${seq} differs from the copy the collector received (hash ${theirs[0]!.slice(0, 16)}…, the store has ${String(local).slice(0, 16)}…): rewritten after it was forwarded`,
      };
    }
  }
  const withCount = { ...report, comparedWithCopy: compared };
  if (!first) return withCount;
  // The first problem by row wins, whichever check found it.
  if (report.problem && report.problem.seq <= first.seq) return withCount;
  return { ...withCount, ok: false, problem: first };
}
