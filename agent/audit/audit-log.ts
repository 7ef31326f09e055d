import { existsSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import type { PushSource } from "../store/job-store.js";
import { CodedError } from "../util/errors.js";

/**
 * Reading the audit trail (table `audit_log`, migration 2; docs/security.md#audit-trail). Rows are
 * written by JobStore in the transaction of the state change they record and can never be updated
 * or deleted (triggers). They carry no card data: a masked PAN, times, states, statuses, reasons,
 * field paths, and who pushed the job.
 */
export interface AuditRecord {
  seq: number;
  at: string;
  /** STOCK: a card-stock ledger movement; BIN: a bin emptied; TECHNICIAN: a printer command run (docs/stock.md). */
  event: "ACCEPTED" | "TRANSITION" | "REFUSED" | "BACKFILL" | "STOCK" | "BIN" | "TECHNICIAN";
  operationId: string | null;
  cardId: string | null;
  issuerRequestId: string | null;
  fromState: string | null;
  toState: string | null;
  d1Status: string | null;
  reason: string | null;
  errorCode: string | null;
  error: string | null;
  maskedPan: string | null;
  requestId: string | null;
  pushedBy: string | null;
  /** STOCK / BIN / TECHNICIAN: what moved or what was run (JSON; no card data). */
  detail: string | null;
  /** The row's link in the hash chain (migration 7; agent/audit/audit-chain.ts): what the collector got. */
  hash?: string | null;
}

export const AUDIT_COLUMNS: ReadonlyArray<keyof AuditRecord> = [
  "seq",
  "at",
  "event",
  "operationId",
  "cardId",
  "issuerRequestId",
  "fromState",
  "toState",
  "d1Status",
  "reason",
  "errorCode",
  "error",
  "maskedPan",
  "requestId",
  "pushedBy",
  "detail",
  "hash",
];

export class AuditError extends CodedError<"NO_DATABASE" | "NO_AUDIT_TABLE"> {}

/** Who delivered a push: D1's endpoint (no credentials), the link's session, D1's requestId. */
export function pushSource(
  requestId: string,
  link: { sessionId: string; stats: { sessions: number } },
  d1Url: string,
): PushSource {
  let endpoint = "(unparseable url)";
  try {
    const u = new URL(d1Url);
    endpoint = `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    // keep the placeholder
  }
  return { requestId, pushedBy: `${endpoint} link ${link.sessionId}#${link.stats.sessions}` };
}

/**
 * Reads audit rows from a data directory's job database, read-only (the agent may be running: WAL
 * lets both work). `since` is an ISO time; rows at or after it are returned, oldest first.
 */
export function readAudit(
  dataDir: string,
  options: { since?: string; operationId?: string } = {},
): AuditRecord[] {
  const file = join(dataDir, "jobs.sqlite");
  if (!existsSync(file)) throw new AuditError("NO_DATABASE", `no job database in ${dataDir} (jobs.sqlite)`);
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const table = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'").get();
    if (!table) {
      throw new AuditError(
        "NO_AUDIT_TABLE",
        `${file} has no audit table yet: start the agent once (migration 2) to create it`,
      );
    }
    const where: string[] = [];
    const params: string[] = [];
    if (options.since) {
      where.push("at >= ?");
      params.push(options.since);
    }
    if (options.operationId) {
      where.push("operation_id = ?");
      params.push(options.operationId);
    }
    // A database the agent has not migrated to version 5 yet has no detail column.
    const columns = db.prepare("SELECT name FROM pragma_table_info('audit_log')").all() as Array<{
      name: string;
    }>;
    const detail = columns.some((c) => c.name === "detail") ? "detail" : "NULL AS detail";
    const hash = columns.some((c) => c.name === "hash") ? "hash" : "NULL AS hash";
    const rows = db
      .prepare(
        `SELECT seq, at, event, operation_id AS operationId, card_id AS cardId,
           issuer_request_id AS issuerRequestId, from_state AS fromState, to_state AS toState,
           d1_status AS d1Status, reason, error_code AS errorCode, error, masked_pan AS maskedPan,
           request_id AS requestId, pushed_by AS pushedBy, ${detail}, ${hash}
         FROM audit_log ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY seq`,
      )
      .all(...params) as AuditRecord[];
    return rows;
  } finally {
    db.close();
  }
}

/** RFC 4180 CSV with a header line; fields with a comma, quote or newline are quoted. */
export function toCsv(records: AuditRecord[]): string {
  const cell = (v: unknown): string => {
    if (v === null || v === undefined) return "";
    let s = String(v);
    // A cell starting with = + - @ is a formula to a spreadsheet; a leading TAB or CR is stripped by
    // some before they read one (OWASP, CSV injection): neutralise all six.
    if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
    return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  const lines = [AUDIT_COLUMNS.join(",")];
  for (const r of records) lines.push(AUDIT_COLUMNS.map((c) => cell(r[c])).join(","));
  return `${lines.join("\r\n")}\r\n`;
}
