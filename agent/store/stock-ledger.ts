import type Database from "better-sqlite3";
import { ledgerAuditInsert } from "../audit/audit-chain.js";
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
  /** Every reason, 0 included: scripts rely on the keys. */
  spoiled: Record<SpoilReason, number>;
  returned: number;
  adjusted: number;
  expectedClosing: number;
  /**
   * The printer's inserted-cards counter over the period, when this is the report's only line of a
   * single-feeder printer; null otherwise (the counter is printer-wide: see StockReport.printer).
   */
  printerCounterDelta: number | null;
}

export interface StockReport {
  since: string | null;
  until: string;
  feeders: FeederReport[];
  /** The whole printer: its counter against the cards the ledger says were fed. */
  printer: {
    /** The printer's counter from the reading at or before `since` (else the first) to the last. */
    counterDelta: number | null;
    /**
     * Cards the ledger counted as fed between those same two readings, so that the three figures
     * agree; without readings, the period's issued plus spoiled.
     */
    ledgerFed: number;
    /** counterDelta − ledgerFed; non-zero is reported, never corrected. Null without counter readings. */
    mismatch: number | null;
  };
}

export interface ReportOptions {
  /** ISO time: movements before it make the opening balance. Absent: the period is everything. */
  since?: string;
  /** From the configuration: false (several feeders) leaves every line's printerCounterDelta null. */
  singleFeeder?: boolean;
  /** Lines to show even without a movement (the configured feeders and their stock). */
  include?: ReadonlyArray<{ feeder: string; stock: string }>;
}

export interface LedgerOptions {
  /**
   * An adjustment of more than this many cards (absolute) needs a second operator, another person
   * (config `stock.dualControlAbove`).
   */
  dualControlAbove?: number;
}

/** A technician's correction of a feeder's count: signed `cards`, always with a note. */
export interface Adjustment {
  feeder: string;
  stock: string;
  /** Negative: cards missing; positive: cards found. */
  cards: number;
  operator: string;
  note: string;
  secondOperator?: string;
}

export const DEFAULT_DUAL_CONTROL_ABOVE = 10;

export class StockError extends CodedError<"DUAL_CONTROL_REQUIRED" | "BAD_MOVEMENT"> {}

const MOVEMENT_KINDS: readonly MovementKind[] = ["loaded", "issued", "spoiled", "returned", "adjusted"];

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

/** One group of the report's aggregate: a feeder/stock/kind/reason, before the period or in it. */
interface Total {
  feeder: string;
  stock: string;
  kind: MovementKind;
  reason: SpoilReason | null;
  prior: 0 | 1;
  n: number;
}

type Reading = { cards_inserted: number; ledger_fed: number } | undefined;

export class StockLedger {
  /** An adjustment of more than this many cards needs a second operator. */
  readonly dualControlAbove: number;
  private readonly statements;

  constructor(
    private readonly db: Database.Database,
    private readonly clock: Clock,
    options: LedgerOptions = {},
  ) {
    const above = options.dualControlAbove ?? DEFAULT_DUAL_CONTROL_ABOVE;
    if (!Number.isSafeInteger(above) || above < 0) {
      throw new StockError(
        "BAD_MOVEMENT",
        "the dual-control threshold must be a whole number of cards, 0 or more",
      );
    }
    this.dualControlAbove = above;
    this.statements = {
      // ON CONFLICT names the one constraint a repeat may hit (a job's card recorded again); an
      // `INSERT OR IGNORE` would also swallow a CHECK failure and drop a bad movement silently.
      insert: db.prepare(
        `INSERT INTO stock_ledger (at, feeder, stock, kind, reason, quantity, operation_id, operator,
           second_operator, note)
         VALUES (@at, @feeder, @stock, @kind, @reason, @quantity, @operationId, @operator, @secondOperator, @note)
         ON CONFLICT (operation_id) DO NOTHING`,
      ),
      // The movement's audit row, chained to the row before it (agent/audit/audit-chain.ts).
      audit: ledgerAuditInsert(db),
      // Aggregated in SQLite: balances() runs after every card, and the ledger only grows.
      totals: db.prepare(
        `SELECT feeder, stock, kind, reason, at < @since AS prior, SUM(quantity) AS n
         FROM stock_ledger GROUP BY feeder, stock, kind, reason, prior`,
      ),
      byOperation: db.prepare("SELECT * FROM stock_ledger WHERE operation_id = ?"),
      fedSince: db.prepare(
        "SELECT COALESCE(SUM(quantity), 0) AS n FROM stock_ledger WHERE kind IN ('issued','spoiled') AND at >= ?",
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
   * card already counted is not counted again: returns false and writes nothing. An adjustment
   * above `dualControlAbove` without a second operator (another person) is refused
   * (DUAL_CONTROL_REQUIRED), whoever the caller is.
   */
  record(movement: Movement): boolean {
    const quantity = movement.quantity ?? 1;
    const m = this.checkMovement(movement, quantity);
    const at = this.isoNow();
    return this.db.transaction(() => {
      const inserted =
        this.statements.insert.run({
          at,
          feeder: m.feeder,
          stock: m.stock,
          kind: m.kind,
          reason: m.reason ?? null,
          quantity,
          operationId: m.operationId ?? null,
          operator: m.operator ?? null,
          secondOperator: m.secondOperator ?? null,
          note: m.note ?? null,
        }).changes === 1;
      if (!inserted) return false;
      this.statements.audit.run(
        at,
        "STOCK",
        m.operationId ?? null,
        m.reason ?? null,
        JSON.stringify({
          kind: m.kind,
          feeder: m.feeder,
          stock: m.stock,
          quantity,
          ...(m.operator ? { operator: m.operator } : {}),
          ...(m.secondOperator ? { secondOperator: m.secondOperator } : {}),
          ...(m.note ? { note: m.note } : {}),
        }),
      );
      return true;
    })();
  }

  /** A technician's correction of a feeder's count (signed), held to dual control like any record(). */
  adjust(a: Adjustment): void {
    this.record({
      feeder: a.feeder,
      stock: a.stock,
      kind: "adjusted",
      quantity: a.cards,
      operator: a.operator,
      note: a.note,
      ...(a.secondOperator !== undefined ? { secondOperator: a.secondOperator } : {}),
    });
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
    const last = this.statements.lastCounter.get() as Reading;
    if (last && last.cards_inserted === cardsInserted && last.ledger_fed === fed) return;
    this.statements.insertCounter.run(this.isoNow(), cardsInserted, fed, null, null);
  }

  /**
   * A technician acknowledges the difference between the printer's counter and the ledger so far,
   * saying what explains it: the live check (warning, gauge) counts from here on. Reports over a
   * period that includes it still show the difference. Audited. False without a counter reading.
   */
  acknowledgeCounter(operator: string, note: string): boolean {
    const who = requiredText(operator, "an acknowledgement needs the operator's name");
    const why = requiredText(note, "an acknowledgement needs a note saying what explains the difference");
    const last = this.lastCounter();
    if (!last) return false;
    const before = this.counterCheck();
    const at = this.isoNow();
    this.db.transaction(() => {
      // The pair of the last reading, as read: pairing its counter with the ledger's count *now*
      // would bake any card fed since that reading into the new base as a difference.
      this.statements.insertCounter.run(at, last.cardsInserted, last.ledgerFed, who, why);
      this.statements.audit.run(
        at,
        "STOCK",
        null,
        null,
        JSON.stringify({
          kind: "counter-acknowledged",
          mismatch: before?.mismatch ?? 0,
          operator: who,
          note: why,
        }),
      );
    })();
    return true;
  }

  /** The latest reading of the printer's counter, if any. */
  lastCounter(): { cardsInserted: number; ledgerFed: number } | undefined {
    const last = this.statements.lastCounter.get() as Reading;
    return last && { cardsInserted: last.cards_inserted, ledgerFed: last.ledger_fed };
  }

  /**
   * The printer's counter against the ledger: the difference of their deltas from a base reading to
   * the last one. The base is the reading at or before `since` (else the first); without `since`,
   * the last acknowledgement, else the first reading (the live check). Undefined before any reading.
   */
  counterCheck(since?: string): { counterDelta: number; ledgerFed: number; mismatch: number } | undefined {
    const base =
      since !== undefined
        ? this.readingAtOrBefore(since)
        : ((this.statements.lastAcknowledged.get() as Reading) ??
          (this.statements.firstCounter.get() as Reading));
    return this.compareFrom(base);
  }

  /** A technician emptied a bin: its count starts again from now. Audited. */
  binEmptied(bin: string, cards: number, operator: string): void {
    const name = requiredText(bin, "which bin was emptied?");
    if (!Number.isSafeInteger(cards) || cards < 0) {
      throw new StockError("BAD_MOVEMENT", "the cards taken out of a bin are a whole number, 0 or more");
    }
    const who = requiredText(operator, "emptying a bin needs the operator's name");
    const at = this.isoNow();
    this.db.transaction(() => {
      this.statements.insertBin.run(at, name, cards, who);
      this.statements.audit.run(at, "BIN", null, null, JSON.stringify({ bin: name, cards, operator: who }));
    })();
  }

  /** Spoiled cards since the bin was last emptied, by reason: the caller knows which reasons land there. */
  spoiledSinceEmptied(bin: string): Record<SpoilReason, number> {
    const since = (this.statements.lastBinEmptied.get(bin) as { at: string } | undefined)?.at ?? "";
    const out = zeroSpoiled();
    for (const r of this.statements.spoiledSince.all(since) as Array<{ reason: SpoilReason; n: number }>) {
      out[r.reason] = r.n;
    }
    return out;
  }

  /**
   * Per feeder and stock: the balance before `since` (opening), the period's movements, and the
   * expected closing balance; and the printer's counter against the ledger over the period. Without
   * `since` the period is everything. With `since`, a line with no opening balance and no movement
   * in the period is left out (unless `include` names it).
   */
  report(options: ReportOptions = {}): StockReport {
    const since = options.since ?? "";
    const key = (feeder: string, stock: string) => `${feeder}\u0000${stock}`;
    const lines = new Map<string, FeederReport>();
    const line = (feeder: string, stock: string): FeederReport => {
      let l = lines.get(key(feeder, stock));
      if (!l) {
        l = {
          feeder,
          stock,
          opening: 0,
          loaded: 0,
          issued: 0,
          spoiled: zeroSpoiled(),
          returned: 0,
          adjusted: 0,
          expectedClosing: 0,
          printerCounterDelta: null,
        };
        lines.set(key(feeder, stock), l);
      }
      return l;
    };
    const included = new Set((options.include ?? []).map((i) => key(i.feeder, i.stock)));
    for (const i of options.include ?? []) line(i.feeder, i.stock);
    for (const t of this.statements.totals.all({ since }) as Total[]) {
      const l = line(t.feeder, t.stock);
      if (t.prior) l.opening += t.kind === "loaded" || t.kind === "adjusted" ? t.n : -t.n;
      else if (t.kind === "spoiled") l.spoiled[t.reason!] += t.n;
      else l[t.kind] += t.n;
    }
    const feeders = [...lines.values()]
      .filter((l) => !options.since || included.has(key(l.feeder, l.stock)) || l.opening !== 0 || moved(l))
      .sort((a, b) => a.feeder.localeCompare(b.feeder) || a.stock.localeCompare(b.stock));
    // The report always compares from the reading at the period's start, never from the last
    // acknowledgement: an acknowledged difference inside the period is still shown.
    const check = this.compareFrom(
      options.since !== undefined
        ? this.readingAtOrBefore(options.since)
        : (this.statements.firstCounter.get() as Reading),
    );
    // The counter is printer-wide: on one line only when that line is all the printer fed from.
    const single = options.singleFeeder !== false && feeders.length === 1;
    for (const l of feeders) {
      l.expectedClosing = l.opening + l.loaded + l.adjusted - l.issued - spoiledTotal(l) - l.returned;
      l.printerCounterDelta = single ? (check?.counterDelta ?? null) : null;
    }
    return {
      since: options.since ?? null,
      until: this.isoNow(),
      feeders,
      printer: {
        counterDelta: check?.counterDelta ?? null,
        ledgerFed: check ? check.ledgerFed : (this.statements.fedSince.get(since) as { n: number }).n,
        mismatch: check ? check.mismatch : null,
      },
    };
  }

  private readingAtOrBefore(since: string): Reading {
    return (
      (this.statements.counterAtOrBefore.get(since) as Reading) ??
      (this.statements.firstCounter.get() as Reading)
    );
  }

  private compareFrom(
    base: Reading,
  ): { counterDelta: number; ledgerFed: number; mismatch: number } | undefined {
    const last = this.statements.lastCounter.get() as Reading;
    if (!base || !last) return undefined;
    const counterDelta = last.cards_inserted - base.cards_inserted;
    const ledgerFed = last.ledger_fed - base.ledger_fed;
    return { counterDelta, ledgerFed, mismatch: counterDelta - ledgerFed };
  }

  /** The movement as it will be stored (names trimmed), or a StockError saying what is wrong. */
  private checkMovement(m: Movement, quantity: number): Movement {
    const bad = (why: string) => new StockError("BAD_MOVEMENT", why);
    if (!MOVEMENT_KINDS.includes(m.kind)) throw bad(`unknown movement kind '${String(m.kind)}'`);
    if (m.reason !== undefined && !SPOIL_REASONS.includes(m.reason)) {
      throw bad(`unknown spoil reason '${String(m.reason)}'`);
    }
    if ((m.kind === "spoiled") !== (m.reason !== undefined))
      throw bad("a spoil reason goes with spoiled, only");
    const feeder = requiredText(m.feeder, "a movement needs its feeder");
    const stock = requiredText(m.stock, "a movement needs its stock");
    const operator = optionalText(m.operator);
    const secondOperator = optionalText(m.secondOperator);
    const note = optionalText(m.note);
    if (!Number.isSafeInteger(quantity)) throw bad("quantity must be a whole number of cards");
    if (m.kind === "adjusted") {
      if (quantity === 0) throw bad("an adjustment of 0 cards changes nothing");
      if (!note || !operator) throw bad("an adjustment needs a note and the operator's name");
    } else if (quantity <= 0) {
      throw bad(`a ${m.kind} movement needs a positive quantity`);
    }
    if ((m.kind === "loaded" || m.kind === "returned") && !operator) {
      throw bad(`${m.kind} needs the operator's name`);
    }
    if (secondOperator !== undefined) {
      if (!operator) throw bad("a second operator confirms an operator's movement: name the operator too");
      if (samePerson(operator, secondOperator)) {
        throw new StockError(
          "DUAL_CONTROL_REQUIRED",
          "the second operator must be another person than the operator (dual control)",
        );
      }
    }
    if (m.kind === "adjusted" && Math.abs(quantity) > this.dualControlAbove && secondOperator === undefined) {
      throw new StockError(
        "DUAL_CONTROL_REQUIRED",
        `an adjustment of ${Math.abs(quantity)} cards is above the dual-control threshold (${this.dualControlAbove}): a second operator must confirm it, not the same person`,
      );
    }
    return {
      ...m,
      feeder,
      stock,
      ...(operator !== undefined ? { operator } : {}),
      ...(secondOperator !== undefined ? { secondOperator } : {}),
      ...(note !== undefined ? { note } : {}),
    };
  }

  /**
   * Wall time, as people read a ledger. A backward clock step can give a movement an `at` before an
   * earlier one's: `report --since` and `spoiledSinceEmptied` compare `at`, so a movement made just
   * after such a step may fall before the period or the last emptying (docs/architecture.md#time).
   */
  private isoNow(): string {
    return new Date(this.clock.wallNow()).toISOString();
  }
}

/** Every spoil reason at 0: reports list them all, so scripts can rely on the keys. */
export function zeroSpoiled(): Record<SpoilReason, number> {
  return Object.fromEntries(SPOIL_REASONS.map((r) => [r, 0])) as Record<SpoilReason, number>;
}

export function spoiledTotal(l: Pick<FeederReport, "spoiled">): number {
  return SPOIL_REASONS.reduce((n, r) => n + l.spoiled[r], 0);
}

function moved(l: FeederReport): boolean {
  return l.loaded !== 0 || l.issued !== 0 || spoiledTotal(l) !== 0 || l.returned !== 0 || l.adjusted !== 0;
}

/** Names are compared as people would: "Alice" and " alice" are one person. */
function samePerson(a: string, b: string): boolean {
  return a.trim().toLocaleLowerCase() === b.trim().toLocaleLowerCase();
}

function optionalText(value: string | undefined): string | undefined {
  const t = value?.trim();
  return t ? t : undefined;
}

function requiredText(value: string | undefined, why: string): string {
  const t = typeof value === "string" ? value.trim() : "";
  if (!t) throw new StockError("BAD_MOVEMENT", why);
  return t;
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
