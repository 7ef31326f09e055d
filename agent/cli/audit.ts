import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { type ChainReport, compareWithCopy, rowsInCopy, verifyChain } from "../audit/audit-chain.js";
import { AuditError, readAudit, toCsv } from "../audit/audit-log.js";
import { ConfigError, loadConfig } from "../config/load.js";
import { type CommandIo, parseOrExitCode } from "./args.js";

const HELP = `Usage: kiosk-agent audit export --data-dir DIR [--format csv|json] [--since ISO] [--operation ID]
       kiosk-agent audit verify [--data-dir DIR | --config FILE] [--against FILE] [--json]

export: writes the audit trail (every card: who pushed it, when, each status, reason, masked PAN) to
stdout, oldest first. json is one JSON array.

verify: checks the audit trail's hash chain: rows numbered 1, 2, 3… without a gap, each row's hash
following from its contents and the row before it, nothing missing at the end. Names the first row
that fails and what is wrong with it. --against FILE also compares every row with the copy the syslog
collector received (its log file, or an export of it): a row rewritten after it was forwarded differs
from that copy even when the chain was recomputed.

Both read DATA_DIR/jobs.sqlite read-only; safe while the agent runs. No key is needed.
Exit codes (verify): 0 intact; 1 a row is changed, missing or differs from the collector's copy;
2 usage, or nothing to verify (no store, a store from before the chain). See docs/security.md#audit-trail.`;

export async function auditCommand(
  argv: string[],
  write: (text: string) => void = (t) => process.stdout.write(t),
  err: (text: string) => void = (t) => console.error(t),
): Promise<number> {
  const io: CommandIo = { out: (t) => write(`${t}\n`), err };
  const parsed = parseOrExitCode(
    argv,
    {
      "data-dir": { type: "string", short: "d" },
      config: { type: "string", short: "c" },
      format: { type: "string", short: "f" },
      since: { type: "string" },
      operation: { type: "string" },
      against: { type: "string" },
      json: { type: "boolean" },
    },
    HELP,
    { allowPositionals: true, io },
  );
  if (typeof parsed === "number") return parsed;
  const v = parsed.values;
  const [sub, ...extra] = parsed.positionals;
  if (sub === "verify" && extra.length === 0) return verifyCommand(v, io);
  const dataDir = v["data-dir"];
  const format = v.format ?? "csv";
  if (
    sub !== "export" ||
    extra.length > 0 ||
    typeof dataDir !== "string" ||
    (format !== "csv" && format !== "json")
  ) {
    err(HELP);
    return 2;
  }
  let since: string | undefined;
  if (typeof v.since === "string") {
    const t = Date.parse(v.since);
    if (Number.isNaN(t)) {
      err(`--since must be an ISO date or time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)\n\n${HELP}`);
      return 2;
    }
    since = new Date(t).toISOString();
  }
  try {
    const records = readAudit(dataDir, {
      ...(since ? { since } : {}),
      ...(typeof v.operation === "string" ? { operationId: v.operation } : {}),
    });
    write(format === "json" ? `${JSON.stringify(records, null, 2)}\n` : toCsv(records));
    return 0;
  } catch (e) {
    if (e instanceof AuditError) {
      err(`kiosk-agent audit: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

/** `audit verify`: 0 intact, 1 broken (the first broken row named), 2 nothing to verify / usage. */
function verifyCommand(v: Record<string, string | boolean | undefined>, io: CommandIo): number {
  let dataDir = typeof v["data-dir"] === "string" ? v["data-dir"] : undefined;
  if (typeof v.config === "string") {
    try {
      dataDir ??= loadConfig(v.config).dataDir;
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      io.err(e.message);
      return 2;
    }
  }
  if (!dataDir) {
    io.err(`kiosk-agent audit verify: give --data-dir DIR or --config FILE\n\n${HELP}`);
    return 2;
  }
  const file = join(dataDir, "jobs.sqlite");
  if (!existsSync(file)) {
    io.err(`kiosk-agent audit verify: no job database in ${dataDir} (jobs.sqlite)`);
    return 2;
  }
  let copy: string | undefined;
  if (typeof v.against === "string") {
    try {
      copy = readFileSync(v.against, "utf8");
    } catch (e) {
      io.err(
        `kiosk-agent audit verify: cannot read ${v.against} (${(e as NodeJS.ErrnoException).code ?? "error"})`,
      );
      return 2;
    }
  }
  const db = new Database(file, { readonly: true, fileMustExist: true });
  let report: ChainReport;
  let storeId: string | undefined;
  try {
    const chained = db
      .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_chain'")
      .get();
    if (!chained) {
      io.err(
        `kiosk-agent audit verify: ${file} has no hash chain yet (a store from before kiosk-agent's migration 7): start the agent once to make it`,
      );
      return 2;
    }
    storeId = (
      db.prepare("SELECT store_id FROM store_meta WHERE id = 1").get() as { store_id: string } | undefined
    )?.store_id;
    report = verifyChain(db);
    if (copy !== undefined) {
      if (!storeId) {
        io.err(`kiosk-agent audit verify: ${file} has no store id yet, so no forwarded copy can be its own`);
        return 2;
      }
      report = compareWithCopy(db, rowsInCopy(copy, storeId), report);
    }
  } finally {
    db.close();
  }
  if (v.json) {
    io.out(JSON.stringify({ dataDir, storeId: storeId ?? null, ...report }, null, 2));
    return report.ok ? 0 : 1;
  }
  const lines: string[] = [];
  const range = report.rows === 0 ? "no rows yet" : `rows ${report.firstSeq}–${report.lastSeq}`;
  if (report.problem) {
    const p = report.problem;
    lines.push(`audit trail BROKEN at row ${p.seq}: ${p.message}`);
    lines.push(
      p.seq > 1
        ? `rows 1–${p.seq - 1} verify; nothing from row ${p.seq} on can be trusted (docs/operations.md, "Audit trail")`
        : `nothing can be trusted from the first row on (docs/operations.md, "Audit trail")`,
    );
  } else {
    lines.push(`audit trail intact: ${range}${report.head ? `, head ${report.head}` : ""}`);
  }
  if (report.startedAt) {
    lines.push(
      report.backfilledThrough > 0
        ? `the chain began ${report.startedAt} (migration 7): rows 1–${report.backfilledThrough} were already there and are vouched for from then on`
        : `the chain began ${report.startedAt} (migration 7), with the first row`,
    );
  }
  lines.push(
    report.forwardedThrough > 0
      ? `the syslog collector confirmed rows through ${report.forwardedThrough}`
      : "no row was confirmed by a syslog collector (audit.forward)",
  );
  if (report.comparedWithCopy !== undefined) {
    lines.push(`compared with ${v.against}: ${report.comparedWithCopy} row(s) of store ${storeId}`);
  }
  io.out(lines.join("\n"));
  return report.ok ? 0 : 1;
}
