import type { DeviceFault } from "../../drivers/device-fault.js";

/**
 * D1 `details.reason` keywords for CARD_PROD_EXCEPTION. docs/reasons.md is the catalogue: one row
 * per keyword, the device signal behind it, and the test that proves it.
 */
export const REASONS = {
  /** Presented, not taken within collectTimeoutSec, captured (the capture bin, or an Evolis's reject box). */
  CB_TIME: "CB_TIME",
  /** The agent stopped (crash, power loss) while the card was in production; never re-run. */
  INTERRUPTED: "INTERRUPTED",
  CHIP_ERROR: "CHIP_ERROR",
  /** The agent was stopped (SIGTERM) with this card in hand: rejected, or retracted after the grace period. */
  SHUTDOWN: "SHUTDOWN",
  /** D1 canceled the operation before the card was presented. */
  ISSUER_CANCEL: "ISSUER_CANCEL",
  RENDER_ERROR: "RENDER_ERROR",
  /** The job's productionData.cardStock is in no feeder (printer.feeders); no card was used. */
  STOCK_NOT_LOADED: "STOCK_NOT_LOADED",
  INTERNAL_ERROR: "INTERNAL_ERROR",
} as const;

/** Device faults map one-to-one onto reason keywords of the same name. */
export function reasonForDeviceFault(fault: DeviceFault): string {
  return fault;
}
