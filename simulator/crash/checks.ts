import { TERMINAL_D1_STATUSES } from "../../agent/d1/operation.js";

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
}

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
    examples,
  };
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
