import { AuditError, readAudit, toCsv } from "../audit/audit-log.js";
import { parseOrExitCode } from "./args.js";

const HELP = `Usage: kiosk-agent audit export --data-dir DIR [--format csv|json] [--since ISO] [--operation ID]

Writes the audit trail (every card: who pushed it, when, each status, reason, masked PAN) to stdout,
oldest first. Reads DATA_DIR/jobs.sqlite read-only; safe while the agent runs. json is one JSON array.
See docs/security.md#audit-trail.`;

export async function auditCommand(
  argv: string[],
  write: (text: string) => void = (t) => process.stdout.write(t),
): Promise<number> {
  const parsed = parseOrExitCode(
    argv,
    {
      "data-dir": { type: "string", short: "d" },
      format: { type: "string", short: "f" },
      since: { type: "string" },
      operation: { type: "string" },
    },
    HELP,
    { allowPositionals: true },
  );
  if (typeof parsed === "number") return parsed;
  const v = parsed.values;
  const [sub, ...extra] = parsed.positionals;
  const dataDir = v["data-dir"];
  const format = v.format ?? "csv";
  if (
    sub !== "export" ||
    extra.length > 0 ||
    typeof dataDir !== "string" ||
    (format !== "csv" && format !== "json")
  ) {
    console.error(HELP);
    return 2;
  }
  let since: string | undefined;
  if (typeof v.since === "string") {
    const t = Date.parse(v.since);
    if (Number.isNaN(t)) {
      console.error(
        `--since must be an ISO date or time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)\n\n${HELP}`,
      );
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
  } catch (err) {
    if (err instanceof AuditError) {
      console.error(`kiosk-agent audit: ${err.message}`);
      return 1;
    }
    throw err;
  }
}
