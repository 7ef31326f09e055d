import { describe, expect, it } from "vitest";
import {
  checkRun,
  type RecordedCard,
  type RecordedOperation,
  sequenceProblem,
} from "../../simulator/crash/checks.js";

const READY = "CARD_PROD_READY";
const DONE = "CARD_PROD_DONE";
const EXC = "CARD_PROD_EXCEPTION";

function ops(id: string, ...statuses: string[]): RecordedOperation[] {
  return statuses.map((status) => ({ operationId: id, details: { status } }));
}

function card(serial: number, sha: string | undefined, outcome: string): RecordedCard {
  return {
    serial,
    outcome,
    tracks: sha ? [{ n: 2, sha256: sha }] : [],
    frontInkDots: sha ? 100 : 0,
    backInkDots: 0,
  };
}

const jobs = new Map([
  ["sha-a", "A"],
  ["sha-b", "B"],
]);

describe("crash harness verdict", () => {
  it("passes a clean run", () => {
    const v = checkRun({
      accepted: new Set(["A", "B"]),
      operations: [...ops("A", READY), ...ops("B", READY), ...ops("A", DONE), ...ops("B", EXC)],
      cards: [card(1, "sha-a", "taken"), card(2, "sha-b", "rejected"), card(3, undefined, "rejected")],
      jobByTrack2Sha: jobs,
    });
    expect(v).toMatchObject({
      lost: 0,
      duplicateCards: 0,
      orderViolations: 0,
      unmatchedCards: 0,
      outcomeMismatches: 0,
    });
    expect(v.cards).toMatchObject({ total: 3, encoded: 2, blank: 1 });
    expect(v.terminal).toEqual({ [DONE]: 1, [EXC]: 1 });
  });

  it("counts an accepted job without a terminal status as lost", () => {
    const v = checkRun({
      accepted: new Set(["A", "B"]),
      operations: [...ops("A", READY, DONE), ...ops("B", READY)],
      cards: [card(1, "sha-a", "taken")],
      jobByTrack2Sha: jobs,
    });
    expect(v.lost).toBe(1);
    expect(v.examples["lost"]?.[0]).toContain("B");
  });

  it("counts two cards carrying one job's track 2 as a duplicate", () => {
    const v = checkRun({
      accepted: new Set(["A"]),
      operations: ops("A", READY, EXC),
      cards: [card(1, "sha-a", "rejected"), card(2, "sha-a", "taken"), card(3, "sha-x", "taken")],
      jobByTrack2Sha: jobs,
    });
    expect(v.duplicateCards).toBe(1);
    expect(v.unmatchedCards).toBe(1);
    // A failure reported for a card the cardholder walked away with.
    expect(v.outcomeMismatches).toBe(1);
  });

  it("attributes printed, unencoded cards through the callback", () => {
    const printedOnly: RecordedCard = {
      serial: 9,
      outcome: "rejected",
      tracks: [],
      frontInkDots: 5,
      backInkDots: 1,
    };
    const v = checkRun({
      accepted: new Set(["A"]),
      operations: ops("A", READY, DONE),
      cards: [printedOnly, card(10, "sha-a", "taken")],
      jobByTrack2Sha: jobs,
      jobOfUnencodedCard: (c) => (c.serial === 9 ? "A" : undefined),
    });
    expect(v.duplicateCards).toBe(1);
    expect(v.cards.printedOnly).toBe(1);
  });

  it("counts order violations, two terminals among them", () => {
    const v = checkRun({
      accepted: new Set(["A", "B", "C", "D"]),
      operations: [
        ...ops("A", READY, DONE, EXC),
        ...ops("B", DONE, READY),
        ...ops("C", "DATA_EXCEPTION", READY),
        ...ops("D", READY, READY, DONE),
      ],
      cards: [],
      jobByTrack2Sha: jobs,
    });
    expect(v.orderViolations).toBe(4);
    expect(v.multipleTerminals).toBe(1);
  });

  it("checks cancel answers against the final status", () => {
    const v = checkRun({
      accepted: new Set(["A", "B", "C"]),
      operations: [
        ...ops("A", READY, "CARD_PROD_CANCELED"),
        ...ops("B", READY, DONE),
        ...ops("C", READY, EXC),
      ],
      cards: [card(1, "sha-b", "taken")],
      jobByTrack2Sha: jobs,
      cancels: [
        { operationId: "A", result: "canceled" },
        { operationId: "B", result: "canceled" },
        { operationId: "C", result: "unknown-operation" },
      ],
    });
    expect(v.cancelMismatches).toBe(2);
  });

  it("knows the state machine's order", () => {
    expect(sequenceProblem([READY])).toBeUndefined();
    expect(sequenceProblem([READY, "CARD_PROD_CANCELED"])).toBeUndefined();
    expect(sequenceProblem(["DATA_EXCEPTION"])).toBeUndefined();
    expect(sequenceProblem([READY, "DATA_EXCEPTION"])).toBeDefined();
    expect(sequenceProblem([EXC])).toBeDefined();
    expect(sequenceProblem([READY, "CARD_PROD_REQUESTED"])).toBeDefined();
  });
});
