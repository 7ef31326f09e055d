import type Database from "better-sqlite3";
import type { Clock } from "../util/clock.js";
import { CodedError } from "../util/errors.js";

/**
 * The card-stock ledger (docs/stock.md): every movement of card blanks, per feeder and stock, in the
 * job store's own database. A job's card is one row, keyed by its operationId, so it can never be
 * counted twice whoever records it (the pipeline when the job ends, crash recovery, the supervisor
 * clearing a misfed card); every row is also an audit-trail row. The printer's own counter is kept
 * beside it and compared, never used to correct it.
 */

export const SPOIL_REASONS = [
  /** Fed, then taken out of production and dropped into the reject box (any step after the feed). */
  "REJECTED_AFTER_PRINT",
  /** Presented, not taken by the cardholder, captured back (CB_TIME, SHUTDOWN, a restart). */
  "CAPTURED_NOT_TAKEN",
  /** The feed itself went wrong (a jam at the insert, a card the printer fed without a reply). */
  "MISFEED",
  /** Used by a technician's test print. */
  "TEST_CARD",
  /** D1 canceled the job after its card was fed. */
  "CANCELED_IN_PRODUCTION",
] as const;
export type SpoilReason = (typeof SPOIL_REASONS)[number];

export type MovementKind = "loaded" | "issued" | "spoiled" | "returned" | "adjusted";

export interface Movement {
  feeder: string;
  stock: string;
  kind: MovementKind;
  /** `spoiled` only. */
  reason?: SpoilReason;
  /** Cards: positive, except an adjustment, which is signed. Default 1. */
  quantity?: number;
  operationId?: string;
  operator?: string;
  secondOperator?: string;
  note?: string;
}

export interface LedgerRow extends Required<Pick<Movement, "feeder" | "stock" | "kind">> {
  seq: number;
  at: string;
  reason: SpoilReason | null;
  quantity: number;
  operationId: string | null;
  operator: string | null;
  secondOperator: string | null;
  note: string | null;
}

/** One feeder and stock over a period: the `stock report --json` line (docs/stock.md). */
export interface FeederReport {
  feeder: string;
  stock: string;
  opening: number;
  loaded: number;
  issued: number;
  spoiled: Partial<Record<SpoilReason, number>>;
  returned: number;
  adjusted: number;
  expectedClosing: number;
  /** The printer's inserted-cards counter over the period; null when the printer has several feeders. */
  printerCounterDelta: number | null;
}

export interface StockReport {
  since: string | null;
  until: string;
  feeders: FeederReport[];
  /** The whole printer: its counter against the cards the ledger says were fed. */
  printer: {
    counterDelta: number | null;
    ledgerFed: number;
    /** counterDelta − ledgerFed; non-zero is reported, never corrected. Null without counter readings. */
    mismatch: number | null;
  };
}

export class StockError extends CodedError<"DUAL_CONTROL_REQUIRED" | "BAD_MOVEMENT"> {}

interface RawRow {
  seq: number;
  at: string;
  feeder: string;
  stock: string;
  kind: MovementKind;
  reason: SpoilReason | null;
  quantity: number;
  operation_id: string | null;
  operator: string | null;
  second_operator: string | null;
  note: string | null;
}

export class StockLedger {
  private readonly statements;

  constructor(
    private readonly db: Database.Database,
    private readonly clock: Clock,
  ) {
    this.statements = {
      insert: db.prepare(
        `INSERT OR IGNORE INTO stock_ledger (at, feeder, stock, kind, reason, quantity, operation_id, operator,
           second_operator, note)
         VALUES (@at, @feeder, @stock, @kind, @reason, @quantity, @operationId, @operator, @secondOperator, @note)`,
      ),
      audit: db.prepare(
        `INSERT INTO audit_log (at, event, operation_id, reason, detail) VALUES (?, ?, ?, ?, ?)`,
      ),
      rows: db.prepare("SELECT * FROM stock_ledger WHERE at >= ? ORDER BY seq"),
      byOperation: db.prepare("SELECT * FROM stock_ledger WHERE operation_id = ?"),
      fedBefore: db.prepare(
        "SELECT COALESCE(SUM(quantity), 0) AS n FROM stock_ledger WHERE kind IN ('issued','spoiled') AND at < ?",
      ),
      fedTotal: db.prepare(
        "SELECT COALESCE(SUM(quantity), 0) AS n FROM stock_ledger WHERE kind IN ('issued','spoiled')",
      ),
      lastLoad: db.prepare(
        "SELECT stock FROM stock_ledger WHERE feeder = ? AND kind = 'loaded' ORDER BY seq DESC LIMIT 1",
      ),
      insertCounter: db.prepare(
        "INSERT INTO printer_counter_log (at, cards_inserted, ledger_fed, acknowledged_by, note) VALUES (?, ?, ?, ?, ?)",
      ),
      lastAcknowledged: db.prepare(
        "SELECT cards_inserted, ledger_fed FROM printer_counter_log WHERE acknowledged_by IS NOT NULL ORDER BY seq DESC LIMIT 1",
      ),
      counterAtOrBefore: db.prepare(
        "SELECT cards_inserted, ledger_fed FROM printer_counter_log WHERE at <= ? ORDER BY seq DESC LIMIT 1",
      ),
      firstCounter: db.prepare(
        "SELECT cards_inserted, ledger_fed FROM printer_counter_log ORDER BY seq LIMIT 1",
      ),
      lastCounter: db.prepare(
        "SELECT cards_inserted, ledger_fed FROM printer_counter_log ORDER BY seq DESC LIMIT 1",
      ),
      insertBin: db.prepare("INSERT INTO bin_log (at, bin, cards, operator) VALUES (?, ?, ?, ?)"),
      lastBinEmptied: db.prepare("SELECT at FROM bin_log WHERE bin = ? ORDER BY seq DESC LIMIT 1"),
      spoiledSince: db.prepare(
        "SELECT reason, COALESCE(SUM(quantity), 0) AS n FROM stock_ledger WHERE kind = 'spoiled' AND at >= ? GROUP BY reason",
      ),
    };
  }

  /**
   * Writes one movement and its audit row, inside the caller's transaction if one is open. A job's
   * card already counted is not counted again: returns false and writes nothing.
   */
  record(movement: Movement): boolean {
    const quantity = movement.quantity ?? 1;
    checkMovement(movement, quantity);
    const at = this.isoNow();
    return this.db.transaction(() => {
      const inserted =
        this.statements.insert.run({
          at,
          feeder: movement.feeder,
          stock: movement.stock,
          kind: movement.kind,
          reason: movement.reason ?? null,
          quantity,
          operationId: movement.operationId ?? null,
          operator: movement.operator ?? null,
          secondOperator: movement.secondOperator ?? null,
          note: movement.note ?? null,
        }).changes === 1;
      if (!inserted) return false;
      this.statements.audit.run(
        at,
        "STOCK",
        movement.operationId ?? null,
        movement.reason ?? null,
        JSON.stringify({
          kind: movement.kind,
          feeder: movement.feeder,
          stock: movement.stock,
          quantity,
          ...(movement.operator ? { operator: movement.operator } : {}),
          ...(movement.secondOperator ? { secondOperator: movement.secondOperator } : {}),
          ...(movement.note ? { note: movement.note } : {}),
        }),
      );
      return true;
    })();
  }

  /** The movement of a job's card, if it was counted. */
  movementOf(operationId: string): LedgerRow | undefined {
    const raw = this.statements.byOperation.get(operationId) as RawRow | undefined;
    return raw && toRow(raw);
  }

  /** What a feeder holds now, by the ledger. */
  balances(): Array<{ feeder: string; stock: string; cards: number }> {
    return this.report().feeders.map((f) => ({ feeder: f.feeder, stock: f.stock, cards: f.expectedClosing }));
  }

  /** The stock of the last load into `feeder`, if it was ever loaded. */
  lastLoadedStock(feeder: string): string | undefined {
    return (this.statements.lastLoad.get(feeder) as { stock: string } | undefined)?.stock;
  }

  /** Cards the ledger says the printer took from its feeders: issued plus spoiled. */
  fedTotal(): number {
    return (this.statements.fedTotal.get() as { n: number }).n;
  }

  /**
   * Stores a reading of the printer's inserted-cards counter beside the ledger's fed count, taken
   * between cards; a reading that changes neither is not stored again.
   */
  recordCounter(cardsInserted: number): void {
    const fed = this.fedTotal();
    const last = this.statements.lastCounter.get() as
      | { cards_inserted: number; ledger_fed: number }
      | undefined;
    if (last && last.cards_inserted === cardsInserted && last.ledger_fed === fed) return;
    this.statements.insertCounter.run(this.isoNow(), cardsInserted, fed, null, null);
  }

  /**
   * A technician acknowledges the difference between the printer's counter and the ledger so far,
   * saying what explains it: the live check (warning, gauge) counts from here on. Reports over a
   * period that includes it still show the difference. Audited. False without a counter reading.
   */
  acknowledgeCounter(operator: string, note: string): boolean {
    if (!operator || !note)
      throw new StockError("BAD_MOVEMENT", "an acknowledgement needs the operator's name and a note");
    const last = this.lastCounter();
    if (!last) return false;
    const before = this.counterCheck();
    const at = this.isoNow();
    this.db.transaction(() => {
      this.statements.insertCounter.run(at, last.cardsInserted, this.fedTotal(), operator, note);
      this.statements.audit.run(
        at,
        "STOCK",
        null,
        null,
        JSON.stringify({ kind: "counter-acknowledged", mismatch: before?.mismatch ?? 0, operator, note }),
      );
    })();
    return true;
  }

  /** The latest reading of the printer's counter, if any. */
  lastCounter(): { cardsInserted: number; ledgerFed: number } | undefined {
    const last = this.statements.lastCounter.get() as
      | { cards_inserted: number; ledger_fed: number }
      | undefined;
    return last && { cardsInserted: last.cards_inserted, ledgerFed: last.ledger_fed };
  }

  /**
   * The printer's counter against the ledger: the difference of their deltas from a base reading to
   * the last one. The base is the reading at or before `since`; without `since`, the last
   * acknowledgement, else the first reading. Undefined before any reading.
   */
  counterCheck(since?: string): { counterDelta: number; ledgerFed: number; mismatch: number } | undefined {
    type Reading = { cards_inserted: number; ledger_fed: number } | undefined;
    const first = (
      since
        ? this.statements.counterAtOrBefore.get(since)
        : (this.statements.lastAcknowledged.get() ?? this.statements.firstCounter.get())
    ) as Reading;
    const last = this.statements.lastCounter.get() as Reading;
    const base = first ?? (since ? (this.statements.firstCounter.get() as Reading) : undefined);
    if (!base || !last) return undefined;
    const counterDelta = last.cards_inserted - base.cards_inserted;
    const ledgerFed = last.ledger_fed - base.ledger_fed;
    return { counterDelta, ledgerFed, mismatch: counterDelta - ledgerFed };
  }

  /** A technician emptied a bin: its count starts again from now. */
  binEmptied(bin: string, cards: number, operator: string): void {
    const at = this.isoNow();
    this.db.transaction(() => {
      this.statements.insertBin.run(at, bin, cards, operator);
      this.statements.audit.run(at, "BIN", null, null, JSON.stringify({ bin, cards, operator }));
    })();
  }

  /** Spoiled cards since the bin was last emptied, by reason: the caller knows which reasons land there. */
  spoiledSinceEmptied(bin: string): Partial<Record<SpoilReason, number>> {
    const since = (this.statements.lastBinEmptied.get(bin) as { at: string } | undefined)?.at ?? "";
    const out: Partial<Record<SpoilReason, number>> = {};
    for (const r of this.statements.spoiledSince.all(since) as Array<{ reason: SpoilReason; n: number }>) {
      out[r.reason] = r.n;
    }
    return out;
  }

  /**
   * Per feeder and stock: the balance before `since` (opening), the period's movements, and the
   * expected closing balance. Without `since` the period is everything.
   */
  report(options: { since?: string; singleFeeder?: boolean } = {}): StockReport {
    const since = options.since ?? "";
    const all = (this.statements.rows.all("") as RawRow[]).map(toRow);
    const lines = new Map<string, FeederReport>();
    const line = (feeder: string, stock: string): FeederReport => {
      const key = `${feeder}\u0000${stock}`;
      let l = lines.get(key);
      if (!l) {
        l = {
          feeder,
          stock,
          opening: 0,
          loaded: 0,
          issued: 0,
          spoiled: {},
          returned: 0,
          adjusted: 0,
          expectedClosing: 0,
          printerCounterDelta: null,
        };
        lines.set(key, l);
      }
      return l;
    };
    for (const row of all) {
      const l = line(row.feeder, row.stock);
      const delta = signedDelta(row);
      if (row.at < since) {
        l.opening += delta;
        continue;
      }
      if (row.kind === "spoiled") l.spoiled[row.reason!] = (l.spoiled[row.reason!] ?? 0) + row.quantity;
      else l[row.kind] += row.quantity;
    }
    const check = this.counterCheck(options.since);
    const feeders = [...lines.values()].sort(
      (a, b) => a.feeder.localeCompare(b.feeder) || a.stock.localeCompare(b.stock),
    );
    for (const l of feeders) {
      const spoiled = Object.values(l.spoiled).reduce((a, b) => a + (b ?? 0), 0);
      l.expectedClosing = l.opening + l.loaded + l.adjusted - l.issued - spoiled - l.returned;
      l.printerCounterDelta = options.singleFeeder === false ? null : (check?.counterDelta ?? null);
    }
    const ledgerFed = options.since
      ? this.fedTotal() - (this.statements.fedBefore.get(since) as { n: number }).n
      : this.fedTotal();
    return {
      since: options.since ?? null,
      until: this.isoNow(),
      feeders,
      printer: {
        counterDelta: check?.counterDelta ?? null,
        ledgerFed,
        mismatch: check ? check.mismatch : null,
      },
    };
  }

  private isoNow(): string {
    return new Date(this.clock.now()).toISOString();
  }
}

function signedDelta(row: LedgerRow): number {
  switch (row.kind) {
    case "loaded":
    case "adjusted":
      return row.quantity;
    default:
      return -row.quantity;
  }
}

function checkMovement(m: Movement, quantity: number): void {
  const bad = (why: string) => new StockError("BAD_MOVEMENT", why);
  if (!Number.isInteger(quantity)) throw bad("quantity must be a whole number of cards");
  if (m.kind === "adjusted") {
    if (quantity === 0) throw bad("an adjustment of 0 cards changes nothing");
    if (!m.note || !m.operator) throw bad("an adjustment needs a note and the operator's name");
  } else if (quantity <= 0) {
    throw bad(`a ${m.kind} movement needs a positive quantity`);
  }
  if ((m.kind === "spoiled") !== (m.reason !== undefined))
    throw bad("a spoil reason goes with spoiled, only");
  if ((m.kind === "loaded" || m.kind === "returned") && !m.operator)
    throw bad(`${m.kind} needs the operator's name`);
  if (m.secondOperator !== undefined && m.secondOperator === m.operator) {
    throw new StockError("DUAL_CONTROL_REQUIRED", "the second operator must be another person");
  }
}

function toRow(r: RawRow): LedgerRow {
  return {
    seq: r.seq,
    at: r.at,
    feeder: r.feeder,
    stock: r.stock,
    kind: r.kind,
    reason: r.reason,
    quantity: r.quantity,
    operationId: r.operation_id,
    operator: r.operator,
    secondOperator: r.second_operator,
    note: r.note,
  };
}
