import type { SupplyReadings } from "../devices/printer-supervisor.js";
import type { SpoilReason, StockLedger } from "../store/stock-ledger.js";
import type { StockRouter } from "./stock-router.js";

/**
 * Supplies and cleaning as device state (docs/stock.md): what the printer's last status read said,
 * joined with the ledger's balances and the bins' counts. The console, `kiosk-agent status` and
 * /metrics all show this one picture. Warnings keep production going, like CUPS `*-warning`
 * keywords; what stops the printer is the supervisor's reason (RIBBON_OUT, FEEDER_EMPTY for the
 * last feeder, REJECT_BOX_FULL, CLEANING_REQUIRED), shown here too.
 */
export interface SuppliesSnapshot {
  /** When the printer's status was last read (ISO); null before the first read. */
  readAt: string | null;
  ribbon: { remaining: number | null; capacity: number | null };
  feeders: FeederSupply[];
  bins: BinSupply[];
  /** `advised`: clean soon; `required`: the printer refused to print until it is cleaned. */
  cleaning: "none" | "advised" | "required";
  counter: {
    /** The printer's own inserted-cards counter at the last read. */
    cardsInserted: number | null;
    /** Its delta minus the ledger's fed cards over the same readings; non-zero is reported, never fixed. */
    mismatch: number | null;
  };
  warnings: SupplyWarning[];
}

export interface FeederSupply {
  feeder: string;
  stock: string;
  /** The ledger's balance; null while no load into it was ever recorded (the ledger is not kept yet). */
  cards: number | null;
  /** The sensor (or a refused insert) says empty. */
  empty: boolean;
  /** The sensor says near empty, or the ledger's balance is at or below `nearEmptyAt`. */
  nearEmpty: boolean;
}

export interface BinSupply {
  /** `reject`: the reject box; `capture`: a separate capture bin (an Evolis captures into its reject box). */
  bin: "reject" | "capture";
  /** Cards the ledger sent there since a technician last emptied it. */
  cards: number;
  capacity: number;
  nearFull: boolean;
  full: boolean;
}

export type SupplyWarningKeyword =
  | "RIBBON_LOW"
  | "FEEDER_NEAR_EMPTY"
  | "FEEDER_EMPTY"
  | "BIN_NEAR_FULL"
  | "BIN_FULL"
  | "CLEANING_ADVISED"
  | "CLEANING_REQUIRED"
  | "LEDGER_MISMATCH";

export interface SupplyWarning {
  keyword: SupplyWarningKeyword;
  /** What to tell the technician, with the feeder or bin named. */
  message: string;
  feeder?: string;
  bin?: string;
}

export interface SuppliesConfig {
  bins: { reject: BinConfig; capture: BinConfig };
  /** Where the printer puts a card it takes back from the mouth. */
  capturedCardsGoTo: "capture-bin" | "reject-box";
}

interface BinConfig {
  capacity: number;
  nearFullAt: number;
}

/** Spoil reasons whose card lands in the reject box (MISFEED: a jam is cleared into it). */
const TO_REJECT_BOX: readonly SpoilReason[] = ["REJECTED_AFTER_PRINT", "MISFEED", "CANCELED_IN_PRODUCTION"];

export function suppliesSnapshot(
  readings: SupplyReadings,
  ledger: Pick<
    StockLedger,
    "balances" | "spoiledSinceEmptied" | "counterCheck" | "lastCounter" | "lastLoadedStock"
  >,
  router: StockRouter,
  config: SuppliesConfig,
): SuppliesSnapshot {
  const status = readings.status;
  const warnings: SupplyWarning[] = [];
  const warn = (
    keyword: SupplyWarningKeyword,
    message: string,
    where: { feeder?: string; bin?: string } = {},
  ) => warnings.push({ keyword, message, ...where });

  const ribbon = { remaining: status?.ribbon?.remaining ?? null, capacity: status?.ribbon?.capacity ?? null };
  if (status?.warnings.includes("RIBBON_LOW")) {
    warn("RIBBON_LOW", `ribbon low: ${ribbon.remaining ?? "?"} panels left; have a new ribbon ready`);
  }

  const balances = ledger.balances();
  const feeders: FeederSupply[] = router.feeders.map((f) => {
    const stock = router.stockOf(f.id);
    const line = balances.find((b) => b.feeder === f.id && b.stock === stock);
    const cards = ledger.lastLoadedStock(f.id) === undefined ? null : (line?.cards ?? 0);
    const sensor = status?.feeders.find((s) => s.id === f.id);
    const empty = readings.emptyFeeders.has(f.id);
    const nearEmpty = !empty && ((sensor?.nearEmpty ?? false) || (cards !== null && cards <= f.nearEmptyAt));
    if (empty)
      warn(
        "FEEDER_EMPTY",
        `feeder ${f.id} (${stock}) is empty: its jobs wait; load cards and record the load`,
        { feeder: f.id },
      );
    else if (nearEmpty)
      warn(
        "FEEDER_NEAR_EMPTY",
        `feeder ${f.id} (${stock}) is nearly empty (${cards ?? "?"} cards by the ledger)`,
        { feeder: f.id },
      );
    return { feeder: f.id, stock, cards, empty, nearEmpty };
  });

  const bins: BinSupply[] = (["reject", "capture"] as const)
    .filter((bin) => bin === "reject" || config.capturedCardsGoTo === "capture-bin")
    .map((bin) => {
      const spoiled = ledger.spoiledSinceEmptied(bin);
      const reasons: SpoilReason[] =
        bin === "reject"
          ? [
              ...TO_REJECT_BOX,
              ...(config.capturedCardsGoTo === "reject-box" ? (["CAPTURED_NOT_TAKEN"] as const) : []),
            ]
          : ["CAPTURED_NOT_TAKEN"];
      const cards = reasons.reduce((n, r) => n + (spoiled[r] ?? 0), 0);
      const { capacity, nearFullAt } = config.bins[bin];
      const full =
        cards >= capacity || (bin === "reject" && (status?.stopReasons.includes("REJECT_BOX_FULL") ?? false));
      const nearFull = !full && cards >= nearFullAt;
      const name = bin === "reject" ? "reject box" : "capture bin";
      if (full) warn("BIN_FULL", `${name} full (${cards}/${capacity}): empty it and record it`, { bin });
      else if (nearFull) warn("BIN_NEAR_FULL", `${name} nearly full (${cards}/${capacity})`, { bin });
      return { bin, cards, capacity, nearFull, full };
    });

  const cleaning = readings.cleaningRequired ? "required" : (status?.cleaning ?? "none");
  if (cleaning === "required") warn("CLEANING_REQUIRED", "the printer refuses to print until it is cleaned");
  else if (cleaning === "advised") warn("CLEANING_ADVISED", "the printer asks for a cleaning soon");

  const check = ledger.counterCheck();
  const mismatch = check ? check.mismatch : null;
  if (mismatch) {
    warn(
      "LEDGER_MISMATCH",
      `the printer counted ${check!.counterDelta} cards, the ledger ${check!.ledgerFed}: find the difference (docs/operations.md)`,
    );
  }
  return {
    readAt: readings.readAt ?? null,
    ribbon,
    feeders,
    bins,
    cleaning,
    counter: {
      cardsInserted: readings.counters?.cardsInserted ?? ledger.lastCounter()?.cardsInserted ?? null,
      mismatch,
    },
    warnings,
  };
}
