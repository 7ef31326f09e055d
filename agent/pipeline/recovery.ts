import type { PrinterDriver } from "../../drivers/printer/driver.js";
import type { Logger } from "../log/logger.js";
import type { JobStore, OutboxEvent } from "../store/job-store.js";
import { REASONS } from "./reasons.js";

export interface RecoveryOptions {
  store: JobStore;
  printer: PrinterDriver;
  logger: Logger;
  onEvent: (event: OutboxEvent) => void;
}

/**
 * Jobs a previous run left in physical production are never re-run (a card may exist). Decision
 * table, docs/recovery.md:
 *   PRODUCING, card in the printer   → reject it to the reject box → FAILED / INTERRUPTED
 *   PRODUCING, no card found         → FAILED / INTERRUPTED
 *   PRESENTED, card still in mouth   → retract to the capture bin  → FAILED / INTERRUPTED
 *   PRESENTED, mouth empty           → the cardholder took it      → DONE
 * READY jobs simply stay queued.
 */
export async function recoverInterruptedJobs(options: RecoveryOptions): Promise<void> {
  const { store, printer } = options;
  const log = options.logger.child({ component: "recovery" });
  const interrupted = store.jobsIn(["PRODUCING", "PRESENTED"]);
  if (interrupted.length === 0) return;
  let position: string | undefined;
  try {
    position = (await printer.readStatus()).cardPosition;
  } catch (err) {
    log.error({ err }, "could not read the printer's card position during recovery");
  }
  for (const row of interrupted) {
    const id = row.operationId;
    let event: OutboxEvent | null;
    if (row.state === "PRESENTED" && position === "NONE") {
      log.warn(
        { operationId: id },
        "agent stopped while the card was presented; the mouth is empty: card taken",
      );
      event = store.transition(id, "PRESENTED", "DONE");
    } else {
      try {
        if (position === "BEZEL") await printer.retractToCaptureBin();
        else if (position && position !== "NONE") await printer.rejectCard();
        position = "NONE";
      } catch (err) {
        log.error({ err, operationId: id }, "could not clear the card left by an interrupted job");
      }
      log.warn({ operationId: id, state: row.state }, "job interrupted by an agent stop; not re-run");
      event = store.transition(id, row.state, "FAILED", {
        reason: REASONS.INTERRUPTED,
        errorCode: REASONS.INTERRUPTED,
        error: `agent stopped during ${row.state.toLowerCase()}`,
      });
    }
    if (event) options.onEvent(event);
  }
}
