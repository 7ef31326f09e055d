import {
  type FeederReport,
  SPOIL_REASONS,
  type SpoilReason,
  type StockReport,
  spoiledTotal,
} from "../store/stock-ledger.js";

/**
 * The stock report as text and as the JSON scripts read (`kiosk-agent stock report`, docs/cli.md).
 * Shared by the command line and the console, so the two never tell a technician different things.
 */

/**
 * One line of `stock report --json`: exactly the ledger report's keys, in this order (scripts rely on
 * them; docs/cli.md). A field added to the ledger's report changes this type, and the builder below
 * then says so at compile time.
 */
export type FeederReportJson = FeederReport;
export type StockReportJson = StockReport;

/**
 * The report in the documented JSON shape. Built key by key rather than passed through, so a field
 * added to the ledger's report later cannot change what scripts see.
 */
export function stockReportJson(report: StockReport): StockReportJson {
  return {
    since: report.since,
    until: report.until,
    feeders: report.feeders.map((f) => ({
      feeder: f.feeder,
      stock: f.stock,
      opening: f.opening,
      loaded: f.loaded,
      issued: f.issued,
      spoiled: Object.fromEntries(SPOIL_REASONS.map((r) => [r, f.spoiled[r] ?? 0])) as Record<
        SpoilReason,
        number
      >,
      returned: f.returned,
      adjusted: f.adjusted,
      expectedClosing: f.expectedClosing,
      printerCounterDelta: f.printerCounterDelta,
    })),
    printer: {
      counterDelta: report.printer.counterDelta,
      ledgerFed: report.printer.ledgerFed,
      mismatch: report.printer.mismatch,
    },
  };
}

const COLUMNS: ReadonlyArray<{ title: string; left?: boolean; cell: (f: FeederReport) => string }> = [
  { title: "FEEDER", left: true, cell: (f) => f.feeder },
  { title: "STOCK", left: true, cell: (f) => f.stock },
  { title: "OPENING", cell: (f) => String(f.opening) },
  { title: "LOADED", cell: (f) => String(f.loaded) },
  { title: "ISSUED", cell: (f) => String(f.issued) },
  { title: "SPOILED", cell: (f) => String(spoiledTotal(f)) },
  { title: "RETURNED", cell: (f) => String(f.returned) },
  { title: "ADJUSTED", cell: (f) => signed(f.adjusted) },
  { title: "EXPECTED CLOSING", cell: (f) => String(f.expectedClosing) },
  {
    title: "PRINTER COUNTER",
    cell: (f) => (f.printerCounterDelta === null ? "-" : String(f.printerCounterDelta)),
  },
];

/**
 * The human report: a period line, a table with one line per feeder and stock (spoiled cards by
 * reason under it), and the printer's counter against the ledger. A difference between the two is
 * its own line, never folded into a column.
 */
export function formatStockReport(report: StockReport): string {
  const out: string[] = [
    report.since
      ? `Card stock from ${report.since} to ${report.until}`
      : `Card stock, every movement up to ${report.until}`,
    "",
  ];
  if (report.feeders.length === 0) {
    out.push("No card-stock movement recorded for this period.");
  } else {
    const rows = report.feeders.map((f) => COLUMNS.map((c) => c.cell(f)));
    const widths = COLUMNS.map((c, i) => Math.max(c.title.length, ...rows.map((r) => r[i]!.length)));
    const render = (cells: string[]) =>
      cells
        .map((cell, i) => (COLUMNS[i]!.left ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
        .join("  ")
        .trimEnd();
    out.push(render(COLUMNS.map((c) => c.title)));
    report.feeders.forEach((f, i) => {
      out.push(render(rows[i]!));
      const reasons = SPOIL_REASONS.filter((r) => (f.spoiled[r] ?? 0) !== 0);
      if (reasons.length > 0) {
        out.push(
          `${" ".repeat(widths[0]! + 2)}spoiled: ${reasons.map((r) => `${r} ${f.spoiled[r]}`).join(", ")}`,
        );
      }
    });
    for (const f of report.feeders) {
      if (f.expectedClosing < 0) {
        out.push(
          `feeder ${f.feeder} (${f.stock}): the ledger's balance is negative (${f.expectedClosing}): count the cards in the feeder and record an adjustment`,
        );
      }
    }
  }
  out.push("", printerLine(report.printer));
  const periodFed = report.feeders.reduce((n, f) => n + f.issued + spoiledTotal(f), 0);
  if (report.printer.counterDelta !== null && periodFed !== report.printer.ledgerFed) {
    // The counter is read at start and after each card: a card fed after the last reading (or
    // before the first) is in the table but not yet comparable.
    out.push(
      `  (the counter's readings cover ${plural(report.printer.ledgerFed)} of the ${plural(periodFed)} the ledger counted fed in the period)`,
    );
  }
  if (report.printer.mismatch) out.push(mismatchLine(report.printer.counterDelta!, report.printer.ledgerFed));
  return out.join("\n");
}

function printerLine(p: StockReport["printer"]): string {
  if (p.counterDelta === null) {
    return `Printer counter: no reading recorded; nothing to compare the ledger's ${plural(p.ledgerFed)} fed with`;
  }
  const verdict = p.mismatch === 0 ? "they agree" : `mismatch ${signed(p.mismatch!)}`;
  return `Printer counter: ${signed(p.counterDelta)} cards inserted; the ledger counted ${plural(p.ledgerFed)} fed between the same readings: ${verdict}`;
}

function mismatchLine(counterDelta: number, ledgerFed: number): string {
  const diff = counterDelta - ledgerFed;
  const which =
    diff > 0
      ? `the printer took ${plural(diff)} more than the ledger counted`
      : `the ledger counted ${plural(-diff)} more than the printer took`;
  return `MISMATCH: ${which}. Find the difference (a test card, a card cleared by hand, a missed load), then record what explains it: kiosk-agent stock acknowledge-counter --operator NAME --note TEXT`;
}

function signed(n: number): string {
  return n > 0 ? `+${n}` : String(n);
}

function plural(n: number): string {
  return `${n} card${Math.abs(n) === 1 ? "" : "s"}`;
}
