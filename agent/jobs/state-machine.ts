import type { D1Status } from "../d1/operation.js";

/**
 * The job state machine. Every state change goes through JobStore.transition(), which refuses any
 * move not in this table and writes the D1 event named here in the same transaction.
 *
 *   (new) ──► READY ──► PRODUCING ──► PRESENTED ──► DONE
 *     │         │           │             │
 *     │         ├──► CANCELED◄┘             ├──► FAILED (CB_TIME, INTERRUPTED, …)
 *     ▼         └──► FAILED ◄──────────────┘
 *  DATA_EXCEPTION
 *
 * PRODUCING is written *before* the first physical command, so a restart can tell that a card may
 * exist and must never re-run the job (docs/recovery.md).
 */
export const JOB_STATES = [
  "READY",
  "PRODUCING",
  "PRESENTED",
  "DONE",
  "DATA_EXCEPTION",
  "FAILED",
  "CANCELED",
] as const;
export type JobState = (typeof JOB_STATES)[number];

/** `NEW` is the pseudo-state of a job that is not in the store yet. */
export type FromState = JobState | "NEW";

/** from → to → the D1 status event that the move emits (null: no event, internal progress only). */
export const TRANSITIONS: Readonly<Record<FromState, Partial<Record<JobState, D1Status | null>>>> = {
  NEW: { READY: "CARD_PROD_READY", DATA_EXCEPTION: "DATA_EXCEPTION" },
  READY: { PRODUCING: null, FAILED: "CARD_PROD_EXCEPTION", CANCELED: "CARD_PROD_CANCELED" },
  PRODUCING: { PRESENTED: null, FAILED: "CARD_PROD_EXCEPTION", CANCELED: "CARD_PROD_CANCELED" },
  PRESENTED: { DONE: "CARD_PROD_DONE", FAILED: "CARD_PROD_EXCEPTION" },
  DONE: {},
  DATA_EXCEPTION: {},
  FAILED: {},
  CANCELED: {},
};

export const TERMINAL_STATES: ReadonlySet<JobState> = new Set([
  "DONE",
  "DATA_EXCEPTION",
  "FAILED",
  "CANCELED",
]);

export function isTerminal(state: JobState): boolean {
  return TERMINAL_STATES.has(state);
}

/** The D1 event a move emits, or `undefined` when the move is not allowed. */
export function transitionEvent(from: FromState, to: JobState): D1Status | null | undefined {
  const row = TRANSITIONS[from];
  return Object.hasOwn(row, to) ? (row[to] as D1Status | null) : undefined;
}

/** The D1 status a job in this state last reported (for on-demand status answers). */
export function d1StatusOf(state: JobState): D1Status {
  switch (state) {
    case "READY":
    case "PRODUCING":
    case "PRESENTED":
      return "CARD_PROD_READY";
    case "DONE":
      return "CARD_PROD_DONE";
    case "DATA_EXCEPTION":
      return "DATA_EXCEPTION";
    case "FAILED":
      return "CARD_PROD_EXCEPTION";
    case "CANCELED":
      return "CARD_PROD_CANCELED";
  }
}
