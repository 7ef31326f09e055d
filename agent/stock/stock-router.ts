/** One `printer.feeders` entry of the configuration. */
export interface FeederConfig {
  id: string;
  /** The card stock the feeder holds; absent: it takes any job (a single-product kiosk). */
  stock?: string | undefined;
  nearEmptyAt: number;
}

export interface Route {
  feeder: string;
  /** The stock the ledger counts the card under: the feeder's configured stock, else its last load. */
  ledgerStock: string;
}

/** The ledger's name for the stock of a feeder that has no configured stock and was never loaded. */
export const UNSPECIFIED_STOCK = "UNSPECIFIED";

/**
 * Picks the feeder for a job's `productionData.cardStock` (docs/stock.md):
 *   a feeder configured with that stock                 → it
 *   else the first feeder configured without a stock    → it (it takes any stock)
 *   no cardStock                                        → the first feeder
 *   otherwise                                           → none: the job fails STOCK_NOT_LOADED
 */
export class StockRouter {
  constructor(
    readonly feeders: readonly FeederConfig[],
    /** The stock of the last load into a feeder, from the ledger. */
    private readonly lastLoadedStock: (feeder: string) => string | undefined,
  ) {}

  route(cardStock: string | null | undefined): Route | undefined {
    const feeder =
      cardStock == null
        ? this.feeders[0]
        : (this.feeders.find((f) => f.stock === cardStock) ??
          this.feeders.find((f) => f.stock === undefined));
    return feeder && { feeder: feeder.id, ledgerStock: this.stockOf(feeder.id) };
  }

  /** What the ledger counts a feeder's cards as. */
  stockOf(feederId: string): string {
    const configured = this.feeders.find((f) => f.id === feederId)?.stock;
    return configured ?? this.lastLoadedStock(feederId) ?? UNSPECIFIED_STOCK;
  }
}
