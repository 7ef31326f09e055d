import { describe, expect, it } from "vitest";
import { AUDIT_COLUMNS, type AuditRecord, toCsv } from "../../agent/audit/audit-log.js";

/**
 * Issue 14, finding 9: `audit export --format csv` neutralises every cell a spreadsheet would run as
 * a formula: one starting with = + - @, and one starting with TAB or CR (OWASP's CSV injection list:
 * some spreadsheets strip them and read what follows).
 */
function record(overrides: Partial<AuditRecord>): AuditRecord {
  const empty = Object.fromEntries(AUDIT_COLUMNS.map((c) => [c, null]));
  return { ...empty, seq: 1, at: "2026-01-01T00:00:00.000Z", event: "REFUSED", ...overrides } as AuditRecord;
}

/** How RFC 4180 writes a cell: quoted (quotes doubled) when it holds a comma, quote, CR or LF. */
const encoded = (cell: string) => (/[",\r\n]/.test(cell) ? `"${cell.replaceAll('"', '""')}"` : cell);

describe("CSV export: formula injection", () => {
  it.each([
    ['=HYPERLINK("http://x")', `'=HYPERLINK("http://x")`],
    ["+1+1", "'+1+1"],
    ["-2+3", "'-2+3"],
    ["@SUM(A1)", "'@SUM(A1)"],
    ["\t=1+1", "'\t=1+1"],
    ["\r=1+1", "'\r=1+1"],
    ["\tplain", "'\tplain"],
    ["op-1", "op-1"],
    ["a=b", "a=b"],
  ])("%j is exported as %j", (value, expected) => {
    const csv = toCsv([record({ requestId: value })]);
    // Every other cell of the record is empty, a number, a timestamp or REFUSED.
    expect(csv).toContain(`,${encoded(expected)},`);
    if (expected !== value) expect(csv).not.toContain(`,${encoded(value)},`);
  });
});
