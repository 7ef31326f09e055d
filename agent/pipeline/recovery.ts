import { isDeviceError } from "../../drivers/device-fault.js";
import type { CardPosition, CardPrinter } from "../../drivers/printer/card-printer.js";
import type { Logger } from "../log/logger.js";
import type { JobRow, JobStore, OutboxEvent } from "../store/job-store.js";
import { REASONS } from "./reasons.js";

export interface RecoveryOptions {
  store: JobStore;
  printer: CardPrinter;
  logger: Logger;
  onEvent: (event: OutboxEvent) => void;
}

/**
 * Jobs a previous run left in physical production are never re-run (a card may exist). The decision
 * table is docs/recovery.md; in short:
 *   PRESENTED with a retract under way → finish the retract if the card is still there → FAILED with
 *                                         the retract's reason (CB_TIME, SHUTDOWN, …)
 *   PRESENTED, mouth empty            → the cardholder took it → DONE
 *   anything else                     → clear the card (reject, or retract from the mouth) →
 *                                         FAILED / INTERRUPTED
 * READY jobs simply stay queued. Throws if the printer cannot tell where the card is: the supervisor
 * then retries, so no decision is ever made blind.
 */
export async function recoverInterruptedJobs(options: RecoveryOptions): Promise<void> {
  const { store, printer } = options;
  const log = options.logger.child({ component: "recovery" });
  const interrupted = store.jobsIn(["PRODUCING", "PRESENTED"]);
  if (interrupted.length === 0) return;
  let position = (await printer.readStatus()).cardPosition;
  for (const row of interrupted) {
    const id = row.operationId;
    let decision = decide(row, position);
    log.warn({ operationId: id, state: row.state, position, outcome: decision.outcome }, "recovering a job");
    if (row.state === "PRESENTED" && position === "MOUTH" && row.cardFed === "fed") {
      // Killed after the eject, before it was recorded: the card did reach the mouth.
      store.markCardFed(id, "presented");
    }
    if (
      row.state === "PRODUCING" &&
      row.fedFrom !== null &&
      row.cardFed !== "fed" &&
      row.cardFed !== "misfed"
    ) {
      // It died inside the insert: a card in the printer is this job's, taken by a feed that never
      // answered (docs/stock.md); none there means none was taken.
      store.markCardFed(id, position === "NONE" ? null : "misfed");
    }
    if (decision.clear) {
      // A retract is recorded before it is sent, so dying inside it again leads to the same decision.
      // Also before rejecting a PRESENTED job's card still inside (killed before the eject): dying
      // after that reject would otherwise leave PRESENTED with an empty path, read as "taken" (DONE).
      if (row.state === "PRESENTED") {
        store.setRetractIntent(id, row.retractReason ?? REASONS.INTERRUPTED);
      }
      try {
        if (position === "MOUTH") await printer.captureCard();
        else if (position !== "NONE") await printer.rejectCard();
        position = "NONE";
      } catch (err) {
        if (isDeviceError(err, "NO_CARD") && row.state === "PRESENTED" && !row.retractReason) {
          // The cardholder took the presented card while the agent was coming back.
          position = "NONE";
          decision = { outcome: "DONE", clear: false };
        } else {
          log.error({ err, operationId: id }, "could not clear the card left by an interrupted job");
        }
      }
    }
    const event =
      decision.outcome === "DONE"
        ? store.transition(id, "PRESENTED", "DONE")
        : store.transition(id, row.state, "FAILED", {
            reason: decision.reason,
            errorCode: decision.reason,
            error: `agent stopped during ${row.state.toLowerCase()}`,
          });
    if (event) options.onEvent(event);
  }
}

type Decision = { outcome: "DONE"; clear: false } | { outcome: "FAILED"; reason: string; clear: boolean };

function decide(row: JobRow, position: CardPosition): Decision {
  if (row.state === "PRESENTED" && row.retractReason) {
    return { outcome: "FAILED", reason: row.retractReason, clear: position !== "NONE" };
  }
  if (row.state === "PRESENTED" && position === "NONE") return { outcome: "DONE", clear: false };
  return { outcome: "FAILED", reason: REASONS.INTERRUPTED, clear: position !== "NONE" };
}
