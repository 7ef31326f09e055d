import { TERMINAL_D1_STATUSES } from "../../agent/d1/operation.js";

/** `card_fed` values that mean a card left the feeder for the job (agent/stock/card-movement.ts). */
const FED: ReadonlySet<string> = new Set(["fed", "presented", "misfed"]);
/**
 * The crash harness's verdict, computed only from what is outside the agent: D1's record (push
 * answers and the status events it received) and the simulated printer's card record. Pure, so the
 * rules themselves are unit-tested (test/crash/checks.test.ts).
 */

/** One status event as D1 recorded it (the emulator's JSONL record), in arrival order. */
export interface RecordedOperation {
  operationId: string;
  details: { status: string; reason?: string };
}

/** A card as the simulated printer recorded it. */
export interface RecordedCard {
  serial: number;
  outcome: string;
  tracks: ReadonlyArray<{ n: number; sha256: string }>;
  frontInkDots: number;
  backInkDots: number;
  /** The printer's own test card (`St`), not a job's. */
  testCard?: boolean;
}

/** One row of the agent's `stock_ledger`, as read from its store after the stop. */
export interface LedgerMovement {
  kind: string;
  reason: string | null;
  quantity: number;
  operationId: string | null;
}

/** What the agent's store says about one job's card. */
export interface LedgerJob {
  operationId: string;
  state: string;
  /** `jobs.card_fed`: fed, presented, misfed, unknown or null. */
  cardFed: string | null;
}

/** The agent's card-stock ledger and jobs after the last, clean stop, and the printer's counter. */
export interface LedgerInput {
  movements: readonly LedgerMovement[];
  jobs: readonly LedgerJob[];
  /** The printer's inserted-cards counter (`Rco;c`): every card it took from a feeder. */
  cardsInserted: number;
  /** The last agent stopped on SIGTERM: no insert is left undecided (`card_fed = 'unknown'`). */
  cleanStop: boolean;
}

/**
 * Where a card ended, as a ledger class: `issued` (taken by the cardholder), `captured` (presented,
 * then pulled into the reject box: CAPTURED_NOT_TAKEN), `rejected` (into the reject box, never
 * presented: REJECTED_AFTER_PRINT, MISFEED or CANCELED_IN_PRODUCTION), `test` (the printer's test
 * card: TEST_CARD).
 */
export type LedgerClass = "issued" | "captured" | "rejected" | "test";

const LEDGER_CLASSES: readonly LedgerClass[] = ["issued", "captured", "rejected", "test"];

/** The ledger class of a movement; undefined for loads, returns and adjustments. */
export function movementClass(m: Pick<LedgerMovement, "kind" | "reason">): LedgerClass | undefined {
  if (m.kind === "issued") return "issued";
  if (m.kind !== "spoiled") return undefined;
  switch (m.reason) {
    case "CAPTURED_NOT_TAKEN":
      return "captured";
    case "TEST_CARD":
      return "test";
    default:
      // REJECTED_AFTER_PRINT, MISFEED, CANCELED_IN_PRODUCTION (and an unknown reason: still a spoil).
      return "rejected";
  }
}

/** The ledger class a card's outcome at the printer calls for; undefined while it is still inside. */
export function cardClass(
  card: Pick<RecordedCard, "outcome" | "testCard">,
): LedgerClass | "other" | undefined {
  if (card.testCard) return "test";
  switch (card.outcome) {
    case "taken":
      return "issued";
    case "captured":
      return "captured";
    case "rejected":
      return "rejected";
    case "in-printer":
      return undefined;
    default:
      return "other";
  }
}

export interface LedgerVerdict {
  /** Cards the printer took from its feeders (its `Rco;c` counter). */
  fed: number;
  /** Cards in the printer's card record; equal to `fed` unless the record was cut. */
  recorded: number;
  /** Cards the ledger counts as gone from the feeders: issued + spoiled (quantities). */
  counted: number;
  issued: number;
  spoiled: number;
  /** Spoiled cards by reason. */
  spoiledByReason: Record<string, number>;
  /** Per class, the printer's cards against the ledger's: `{ printer, ledger }`. */
  byClass: Record<LedgerClass, { printer: number; ledger: number }>;
  /**
   * Cards fed that the ledger does not count: fed − counted, less the stranded cards (a card still
   * in the printer may not be counted yet; the strandedCards check fails on it).
   */
  missing: number;
  /** Movements beyond the cards fed: counted − fed. */
  double: number;
  /**
   * Cards counted, but in another class than where the printer says they went (e.g. a card rejected
   * from inside the printer counted CAPTURED_NOT_TAKEN), or of an outcome no class stands for: the
   * cards of the classes the ledger has fewer of, less the missing ones.
   */
  misclassified: number;
  /** Cards still in the printer or the mouth (the `strandedCards` check fails on them too). */
  stranded: number;
  /** Cards by which the printer's card record differs from its counter (a cut record: 0 expected). */
  recordMismatch: number;
  /** operationIds with more than one issued/spoiled movement (UNIQUE forbids it; checked anyway). */
  multipleMovements: number;
  /** Ended jobs whose card was fed (presented) or misfed, without a movement. */
  feedsWithoutMovement: number;
  /** Movements of a job the store does not have, or whose card_fed says no card left the feeder. */
  movementsWithoutFeed: number;
  /**
   * A movement that contradicts the job's end: `issued` but the job is not DONE (or D1 did not get
   * CARD_PROD_DONE), a DONE job without `issued`, CANCELED_IN_PRODUCTION but not CANCELED, any other
   * spoil but not FAILED.
   */
  stateMismatches: number;
  /**
   * Jobs with a card attributed by its data (tracks, printed front) that went elsewhere than the
   * job's movement says (or the job has none), or counted issued / captured without such a card.
   */
  jobMismatches: number;
  /** Jobs left with `card_fed = 'unknown'`: an insert never settled (a fault after a clean stop). */
  unknownFeedsLeft: number;
  /** Sum of the counts above that make the run fail. */
  discrepancies: number;
}

const EMPTY_CLASSES = (): Record<LedgerClass, { printer: number; ledger: number }> => ({
  issued: { printer: 0, ledger: 0 },
  captured: { printer: 0, ledger: 0 },
  rejected: { printer: 0, ledger: 0 },
  test: { printer: 0, ledger: 0 },
});

export interface CheckInput {
  /** operationIds D1 was told were accepted. */
  accepted: ReadonlySet<string>;
  operations: readonly RecordedOperation[];
  cards: readonly RecordedCard[];
  /** sha256 (hex, latin1) of each pushed job's track 2 → its operationId. */
  jobByTrack2Sha: ReadonlyMap<string, string>;
  /**
   * Attribution for printed cards that never got a magstripe (the crash came before `Smw`), found by
   * comparing printed panels. Absent: such cards are only counted, not attributed.
   */
  jobOfUnencodedCard?: (card: RecordedCard) => string | undefined;
  /** Answers the agent gave to D1's cancels. */
  cancels?: ReadonlyArray<{ operationId: string; result: string }>;
  /** The agent's card-stock ledger: checked against the card record when given. */
  ledger?: LedgerInput;
}

export interface Verdict {
  /** Accepted jobs with no terminal status at D1. */
  lost: number;
  /** operationIds to which more than one card is attributed. */
  duplicateCards: number;
  /** Jobs whose status sequence breaks the state machine (two terminals included). */
  orderViolations: number;
  /** Jobs with more than one terminal event (also counted in orderViolations). */
  multipleTerminals: number;
  /** Cards that carry data of no pushed job. */
  unmatchedCards: number;
  /**
   * Terminal status that contradicts where the card went: DONE while no card of the job reached the
   * cardholder, or a failure while one did. Not part of "lost / twice", reported beside it.
   */
  outcomeMismatches: number;
  /** Cards still inside the printer or the mouth at the end. */
  strandedCards: number;
  /**
   * A cancel answered `canceled` for a job that did not end CARD_PROD_CANCELED, a refused one for a
   * job that did, or `unknown-operation` for a job D1 was told was accepted.
   */
  cancelMismatches: number;
  /** Final D1 status (with reason) → jobs. */
  terminal: Record<string, number>;
  cards: {
    total: number;
    encoded: number;
    printedOnly: number;
    blank: number;
    byOutcome: Record<string, number>;
  };
  /** The card-stock ledger against the printer's card record (when the input had a ledger). */
  ledger?: LedgerVerdict;
  /** Examples of each failure, for the report (operationIds and sequences, no card data). */
  examples: Record<string, string[]>;
}

const MAX_EXAMPLES = 50;

export function checkRun(input: CheckInput): Verdict {
  const examples: Record<string, string[]> = {};
  const note = (kind: string, text: string): void => {
    const list = examples[kind] ?? [];
    examples[kind] = list;
    if (list.length < MAX_EXAMPLES) list.push(text);
  };

  const statuses = new Map<string, string[]>();
  const terminalOf = new Map<string, string>();
  for (const op of input.operations) {
    const list = statuses.get(op.operationId) ?? [];
    list.push(op.details.status);
    statuses.set(op.operationId, list);
    if (TERMINAL_D1_STATUSES.has(op.details.status) && !terminalOf.has(op.operationId)) {
      terminalOf.set(
        op.operationId,
        op.details.reason ? `${op.details.status}/${op.details.reason}` : op.details.status,
      );
    }
  }

  let lost = 0;
  for (const id of input.accepted) {
    if (terminalOf.has(id)) continue;
    lost++;
    note("lost", `${id}: ${(statuses.get(id) ?? []).join(" → ") || "no status at all"}`);
  }

  let orderViolations = 0;
  let multipleTerminals = 0;
  for (const [id, seq] of statuses) {
    const problem = sequenceProblem(seq);
    if (problem === undefined) continue;
    orderViolations++;
    if (seq.filter((s) => TERMINAL_D1_STATUSES.has(s)).length > 1) multipleTerminals++;
    note("orderViolations", `${id}: ${seq.join(" → ")} (${problem})`);
  }

  const cardsOf = new Map<string, RecordedCard[]>();
  let unmatchedCards = 0;
  let encoded = 0;
  let printedOnly = 0;
  let blank = 0;
  let strandedCards = 0;
  const byOutcome: Record<string, number> = {};
  for (const card of input.cards) {
    byOutcome[card.outcome] = (byOutcome[card.outcome] ?? 0) + 1;
    if (card.outcome === "in-printer") strandedCards++;
    let id: string | undefined;
    if (card.tracks.length > 0) {
      encoded++;
      const t2 = card.tracks.find((t) => t.n === 2);
      id = t2 && input.jobByTrack2Sha.get(t2.sha256);
      if (id === undefined) {
        unmatchedCards++;
        note("unmatchedCards", `card #${card.serial}: tracks match no pushed job`);
        continue;
      }
    } else if (card.frontInkDots > 0 || card.backInkDots > 0) {
      printedOnly++;
      id = input.jobOfUnencodedCard?.(card);
      if (id === undefined && input.jobOfUnencodedCard) {
        unmatchedCards++;
        note("unmatchedCards", `card #${card.serial}: printed panels match no pushed job`);
        continue;
      }
    } else {
      // A blank card (fed, then rejected before printing) carries nothing of any job.
      blank++;
    }
    if (id === undefined) continue;
    cardsOf.set(id, [...(cardsOf.get(id) ?? []), card]);
  }

  let duplicateCards = 0;
  for (const [id, cards] of cardsOf) {
    if (cards.length < 2) continue;
    duplicateCards++;
    note(
      "duplicateCards",
      `${id}: ${cards.length} cards (${cards.map((c) => `#${c.serial} ${c.outcome}`).join(", ")})`,
    );
  }

  let outcomeMismatches = 0;
  for (const [id, terminal] of terminalOf) {
    const taken = (cardsOf.get(id) ?? []).filter((c) => c.outcome === "taken");
    const done = terminal === "CARD_PROD_DONE";
    if (done ? taken.length === 1 : taken.length === 0) continue;
    outcomeMismatches++;
    const where = (cardsOf.get(id) ?? []).map((c) => `#${c.serial} ${c.outcome}`).join(", ") || "no card";
    note("outcomeMismatches", `${id}: D1 has ${terminal}, printer record: ${where}`);
  }

  let cancelMismatches = 0;
  for (const c of input.cancels ?? []) {
    const t = terminalOf.get(c.operationId);
    const canceled = t?.startsWith("CARD_PROD_CANCELED") === true;
    const wrong =
      c.result === "unknown-operation"
        ? input.accepted.has(c.operationId)
        : c.result === "canceled"
          ? !canceled
          : canceled;
    if (!wrong) continue;
    cancelMismatches++;
    note(
      "cancelMismatches",
      `${c.operationId}: cancel answered ${c.result}, D1 has ${t ?? "no terminal status"}`,
    );
  }

  const terminal: Record<string, number> = {};
  for (const id of input.accepted) {
    const t = terminalOf.get(id) ?? "none";
    terminal[t] = (terminal[t] ?? 0) + 1;
  }

  const ledger = input.ledger && checkLedger(input.ledger, input.cards, cardsOf, terminalOf, note);

  return {
    lost,
    duplicateCards,
    orderViolations,
    multipleTerminals,
    unmatchedCards,
    outcomeMismatches,
    strandedCards,
    cancelMismatches,
    terminal,
    cards: { total: input.cards.length, encoded, printedOnly, blank, byOutcome },
    ...(ledger ? { ledger } : {}),
    examples,
  };
}

/**
 * The card-stock ledger against the printer (issue 13: "after the kills, every card the simulator
 * fed appears exactly once as issued or spoiled"):
 *   totals    ledger issued + spoiled = cards the printer fed (its counter, and its card record)
 *   classes   per class (LedgerClass) ledger = printer: taken ↔ issued, captured ↔
 *             CAPTURED_NOT_TAKEN, rejected ↔ REJECTED_AFTER_PRINT + MISFEED + CANCELED_IN_PRODUCTION,
 *             test card ↔ TEST_CARD
 *   jobs      every ended job with card_fed fed/presented/misfed has one movement, every movement such a job,
 *             at most one movement per operationId, none left 'unknown' after a clean stop, the
 *             movement agrees with the job's end state and with D1's terminal status
 *   per card  a card attributed to a job by its data went where that job's movement says
 * A card still in the printer (stranded) is reported, not assigned a class: the strandedCards check
 * fails on it; the ledger may or may not count it yet (its job may have ended before it was cleared).
 */
function checkLedger(
  input: LedgerInput,
  cards: readonly RecordedCard[],
  cardsOf: ReadonlyMap<string, RecordedCard[]>,
  terminalOf: ReadonlyMap<string, string>,
  note: (kind: string, text: string) => void,
): LedgerVerdict {
  const byClass = EMPTY_CLASSES();
  const spoiledByReason: Record<string, number> = {};
  let issued = 0;
  let spoiled = 0;
  const movementsOf = new Map<string, LedgerMovement[]>();
  for (const m of input.movements) {
    const cls = movementClass(m);
    if (cls === undefined) continue;
    byClass[cls].ledger += m.quantity;
    if (m.kind === "issued") issued += m.quantity;
    else {
      spoiled += m.quantity;
      const reason = m.reason ?? "none";
      spoiledByReason[reason] = (spoiledByReason[reason] ?? 0) + m.quantity;
    }
    if (m.operationId !== null) {
      movementsOf.set(m.operationId, [...(movementsOf.get(m.operationId) ?? []), m]);
    }
  }

  let stranded = 0;
  let otherOutcomes = 0;
  for (const card of cards) {
    const cls = cardClass(card);
    if (cls === undefined) stranded++;
    else if (cls === "other") {
      otherOutcomes++;
      note("ledgerMissing", `card #${card.serial}: outcome ${card.outcome} has no ledger class`);
    } else byClass[cls].printer++;
  }

  const counted = issued + spoiled;
  const fed = input.cardsInserted;
  // A stranded card may be counted already (its job ended before the card was cleared) or not.
  const missing = Math.max(0, fed - stranded - counted);
  const double = Math.max(0, counted - fed);
  if (missing > 0) note("ledgerMissing", `fed ${fed}, counted ${counted}, stranded ${stranded}`);
  if (double > 0) note("ledgerDouble", `fed ${fed}, counted ${counted}`);
  let short = otherOutcomes;
  for (const cls of LEDGER_CLASSES) {
    const { printer, ledger } = byClass[cls];
    if (ledger !== printer) {
      note("ledgerClasses", `${cls}: the printer has ${printer} cards, the ledger ${ledger} movements`);
    }
    short += Math.max(0, printer - ledger);
  }
  const misclassified = Math.max(0, short - missing);
  // The classes compare the card record; it must hold every card the counter says was fed.
  const recordMismatch = Math.abs(input.cardsInserted - cards.length);
  if (recordMismatch > 0) {
    note(
      "ledgerRecordMismatch",
      `the printer's counter says ${input.cardsInserted} cards fed, its card record holds ${cards.length}`,
    );
  }

  let multipleMovements = 0;
  for (const [id, list] of movementsOf) {
    if (list.length < 2) continue;
    multipleMovements++;
    note("ledgerMultipleMovements", `${id}: ${list.map((m) => m.reason ?? m.kind).join(", ")}`);
  }

  const jobs = new Map(input.jobs.map((j) => [j.operationId, j]));
  const ENDED = new Set(["DONE", "FAILED", "CANCELED", "DATA_EXCEPTION"]);
  let feedsWithoutMovement = 0;
  let unknownFeedsLeft = 0;
  let stateMismatches = 0;
  for (const job of input.jobs) {
    if (job.cardFed === "unknown") {
      unknownFeedsLeft++;
      note("ledgerUnknownFeeds", `${job.operationId}: ${job.state}, card_fed unknown`);
    }
    const fed = FED.has(job.cardFed ?? "");
    const list = movementsOf.get(job.operationId) ?? [];
    if (fed && ENDED.has(job.state) && list.length === 0) {
      feedsWithoutMovement++;
      note(
        "ledgerFeedsWithoutMovement",
        `${job.operationId}: ${job.state}, card_fed ${job.cardFed}, no movement`,
      );
    }
    if (job.state === "DONE" && !list.some((m) => m.kind === "issued")) {
      stateMismatches++;
      note("ledgerStateMismatches", `${job.operationId}: DONE, movement ${movementText(list)}`);
    }
  }
  let movementsWithoutFeed = 0;
  for (const [id, list] of movementsOf) {
    const job = jobs.get(id);
    if (!job || !FED.has(job.cardFed ?? "")) {
      movementsWithoutFeed++;
      note(
        "ledgerMovementsWithoutFeed",
        `${id}: ${movementText(list)}, job ${job ? `${job.state}, card_fed ${job.cardFed ?? "null"}` : "not in the store"}`,
      );
      continue;
    }
    for (const m of list) {
      const d1 = terminalOf.get(id);
      const wanted =
        m.kind === "issued"
          ? job.state === "DONE" && (d1 === undefined || d1 === "CARD_PROD_DONE")
          : m.reason === "CANCELED_IN_PRODUCTION"
            ? job.state === "CANCELED"
            : job.state === "FAILED";
      const misfedRight = (m.reason === "MISFEED") === (job.cardFed === "misfed");
      if (wanted && misfedRight) continue;
      stateMismatches++;
      note(
        "ledgerStateMismatches",
        `${id}: ${movementText([m])}, job ${job.state} card_fed ${job.cardFed}, D1 ${d1 ?? "no terminal status"}`,
      );
    }
  }

  // Per job, for cards attributed by their data: the card went where its job's movement says.
  const mismatchedJobs = new Set<string>();
  for (const [id, list] of cardsOf) {
    const movements = movementsOf.get(id) ?? [];
    for (const card of list) {
      const cls = cardClass(card);
      if (cls === undefined) continue; // stranded: its own check
      if (movements.some((m) => movementClass(m) === cls)) continue;
      mismatchedJobs.add(id);
      const job = jobs.get(id);
      note(
        "ledgerJobMismatches",
        `${id}: card #${card.serial} ${card.outcome}, ledger ${movementText(movements)}, job ${job?.state ?? "?"} card_fed ${job?.cardFed ?? "null"}`,
      );
    }
  }
  // Issued and captured cards were presented, so printed: each has a card attributed to its job.
  for (const [id, list] of movementsOf) {
    if (mismatchedJobs.has(id)) continue;
    for (const m of list) {
      const cls = movementClass(m);
      if (cls !== "issued" && cls !== "captured") continue;
      const want = cls === "issued" ? "taken" : "captured";
      if ((cardsOf.get(id) ?? []).some((c) => c.outcome === want)) continue;
      mismatchedJobs.add(id);
      note(
        "ledgerJobMismatches",
        `${id}: ledger ${movementText([m])}, printer record: ${(cardsOf.get(id) ?? []).map((c) => `#${c.serial} ${c.outcome}`).join(", ") || "no card of the job"}`,
      );
    }
  }
  const jobMismatches = mismatchedJobs.size;

  if (!input.cleanStop) unknownFeedsLeft = 0; // Only a clean stop promises every insert settled.
  const discrepancies =
    missing +
    double +
    misclassified +
    recordMismatch +
    multipleMovements +
    feedsWithoutMovement +
    movementsWithoutFeed +
    stateMismatches +
    jobMismatches +
    unknownFeedsLeft;
  return {
    fed: input.cardsInserted,
    recorded: cards.length,
    counted,
    issued,
    spoiled,
    spoiledByReason,
    byClass,
    missing,
    double,
    misclassified,
    stranded,
    recordMismatch,
    multipleMovements,
    feedsWithoutMovement,
    movementsWithoutFeed,
    stateMismatches,
    jobMismatches,
    unknownFeedsLeft,
    discrepancies,
  };
}

function movementText(movements: readonly LedgerMovement[]): string {
  if (movements.length === 0) return "none";
  return movements.map((m) => (m.kind === "spoiled" ? `spoiled ${m.reason}` : m.kind)).join(" + ");
}

/**
 * What is wrong with one job's statuses in D1's arrival order, or undefined when they follow the
 * state machine (agent/jobs/state-machine.ts): DATA_EXCEPTION alone, or READY once, first, then at
 * most one terminal status, last.
 */
export function sequenceProblem(seq: readonly string[]): string | undefined {
  if (seq.length === 0) return undefined;
  if (seq[0] === "DATA_EXCEPTION") return seq.length === 1 ? undefined : "status after DATA_EXCEPTION";
  if (seq[0] !== "CARD_PROD_READY") return "first status is not CARD_PROD_READY";
  for (let i = 1; i < seq.length; i++) {
    const s = seq[i]!;
    if (s === "CARD_PROD_READY") return "CARD_PROD_READY repeated";
    if (s === "DATA_EXCEPTION") return "DATA_EXCEPTION after CARD_PROD_READY";
    if (!TERMINAL_D1_STATUSES.has(s)) return `unexpected status ${s}`;
    if (i !== seq.length - 1) return "status after a terminal status";
  }
  return undefined;
}
