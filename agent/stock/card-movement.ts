import type { JobState } from "../jobs/state-machine.js";
import type { SpoilReason } from "../store/stock-ledger.js";

/**
 * How far a job's card got out of the feeder (the jobs table's `card_fed`):
 *   fed      the printer took it (`insertCard()` answered)
 *   presented it reached the mouth (`presentCard()` answered, or a restart found it there)
 *   misfed   the feed itself failed with a card taken (a jam at the insert, or a card found in the
 *            path after an insert that never answered)
 *   unknown  the insert never answered; the next look at the card path decides (misfed, or none)
 *   null     no card left the feeder for this job
 */
export type CardFeed = "fed" | "presented" | "misfed" | "unknown";

export type CardMovement = { kind: "issued" } | { kind: "spoiled"; reason: SpoilReason };

/**
 * Where a job's card went, from how it was fed and the job's last move: the one table that turns
 * pipeline outcomes into ledger movements (docs/stock.md). JobStore.transition() applies it in the
 * transaction that ends the job, so a card is counted exactly when its job ends, and once.
 *
 *   presented PRESENTED → DONE     issued                  the cardholder took it
 *   presented PRESENTED → FAILED   CAPTURED_NOT_TAKEN      retracted from the mouth (CB_TIME, SHUTDOWN, restart)
 *   fed     PRESENTED → DONE       issued                  it left the printer; the mouth was found empty
 *   fed     PRESENTED → FAILED     REJECTED_AFTER_PRINT    it never reached the mouth (the eject failed, or
 *                                                          a restart found it inside): into the reject box
 *   fed     PRODUCING → FAILED     REJECTED_AFTER_PRINT    any step after the feed failed: into the reject box
 *   fed     PRODUCING → CANCELED   CANCELED_IN_PRODUCTION  D1 canceled it after the feed: into the reject box
 *   misfed  PRODUCING → FAILED     MISFEED                 the feed failed with a card taken
 *   (anything else: no movement: no card, or not decided yet)
 */
const TABLE: ReadonlyArray<{ feed: CardFeed; from: JobState; to: JobState; movement: CardMovement }> = [
  { feed: "presented", from: "PRESENTED", to: "DONE", movement: { kind: "issued" } },
  {
    feed: "presented",
    from: "PRESENTED",
    to: "FAILED",
    movement: { kind: "spoiled", reason: "CAPTURED_NOT_TAKEN" },
  },
  { feed: "fed", from: "PRESENTED", to: "DONE", movement: { kind: "issued" } },
  {
    feed: "fed",
    from: "PRESENTED",
    to: "FAILED",
    movement: { kind: "spoiled", reason: "REJECTED_AFTER_PRINT" },
  },
  {
    feed: "fed",
    from: "PRODUCING",
    to: "FAILED",
    movement: { kind: "spoiled", reason: "REJECTED_AFTER_PRINT" },
  },
  {
    feed: "fed",
    from: "PRODUCING",
    to: "CANCELED",
    movement: { kind: "spoiled", reason: "CANCELED_IN_PRODUCTION" },
  },
  { feed: "misfed", from: "PRODUCING", to: "FAILED", movement: { kind: "spoiled", reason: "MISFEED" } },
];

export function movementFor(feed: CardFeed | null, from: JobState, to: JobState): CardMovement | undefined {
  if (feed === null) return undefined;
  return TABLE.find((row) => row.feed === feed && row.from === from && row.to === to)?.movement;
}

/**
 * How far the card got when the insert itself failed: a jam took a card from the feeder; a printer
 * that never answered may or may not have (decided by the next look at the card path); any other
 * refusal (feeder empty, cover open, a refused command) took none.
 */
export function feedAfterInsertFailure(fault: string | undefined): CardFeed | null {
  switch (fault) {
    case "CARD_JAM":
    case "MECHANICAL_ERROR":
      return "misfed";
    case "DEVICE_TIMEOUT":
    case "DEVICE_DISCONNECTED":
    case "PROTOCOL_ERROR":
    case "PRINTER_ERROR":
      return "unknown";
    default:
      return null;
  }
}

/** The rows, for docs and the test that every one of them is reachable. */
export const CARD_MOVEMENT_TABLE = TABLE;
