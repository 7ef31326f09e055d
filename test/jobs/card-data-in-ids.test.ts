import { describe, expect, it } from "vitest";
import { D1ToAgent } from "../../agent/d1/messages.js";
import { makeSampleJob } from "../../agent/jobs/sample-jobs.js";
import { readableOperationId, validateJob } from "../../agent/jobs/validate.js";

/**
 * Issue 14, finding 1: ids and labels are stored in clear, logged, shown and audited for good, so the
 * door screens them for card data (docs/validation.md, "Card data in ids and labels"). Every outcome
 * names the field, never the value.
 */

const STATION = "KIOSK-PS-101";
const OP = "01c5a05e-e197-11ec-8fea-0242ac120002";
const PAN = "5266092201416174";

const job = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  operationId: OP,
  operation: "PRODUCE",
  cardId: "271b-6e47-8ec3-7f3f",
  issuerId: "ISSUER-01",
  issuerRequestId: "req-20250117-0001",
  distributionChannel: "INSTANT",
  persoStation: STATION,
  requestedAt: "2025-01-17T06:28:02.492Z",
  productionData: {
    cardStock: "DEBIT-CLASSIC",
    print: { front: [{ text: "SUALEH FATEHI", xMm: 8, yMm: 42, sizePt: 10 }] },
  },
  ...over,
});

const fw = (s: string): string => s.replace(/[0-9]/g, (c) => String.fromCharCode(0xff10 + Number(c)));

/**
 * [title, value, errorCode]: each holds the PAN (or a track of it) in a form the door must see
 * through. A tab is a control character, which ids never allow: that rule is checked first.
 */
const CARD_DATA: Array<[string, string, string?]> = [
  ["the PAN", PAN],
  ["the PAN as a card id", `card-${PAN}`],
  ["PAN + CSC", `${PAN}123`],
  ["grouped by spaces", "5266 0922 0141 6174"],
  ["grouped by dashes", "5266-0922-0141-6174"],
  ["dots", "5266.0922.0141.6174"],
  ["slashes", "5266/0922/0141/6174"],
  ["underscores", "5266_0922_0141_6174"],
  ["tabs", "5266\t0922\t0141\t6174", "FIELD_INVALID_FORMAT"],
  ["double spaces", "5266  0922  0141  6174"],
  ["full-width digits", fw(PAN)],
  ["inside a longer run", `00${PAN}00`],
  ["followed by a UUID tail", `${PAN}-6839-4560-8835-51c5e95a5e8a`],
  ["track 2", `;${PAN}=2804201000?`],
  ["track 2, D separator", `${PAN}D2804201`],
  ["track 1", `%B${PAN}^FATEHI/SUALEH^2804201?`],
];

/** A verdict as text, with every digit of it joined: the PAN must not be in there in any form. */
function leaks(verdict: unknown): boolean {
  const digits = JSON.stringify(verdict)
    .normalize("NFKC")
    .replace(/[^0-9]/g, "");
  return digits.includes(PAN) || digits.includes(PAN.slice(6, 12));
}

describe("card data in a job's ids and labels", () => {
  describe.each(CARD_DATA)("%s", (_title, value, errorCode = "FIELD_CARD_DATA") => {
    it("operationId → refused, FIELD_CARD_DATA, no operationId echoed", () => {
      const v = validateJob(job({ operationId: value }), STATION);
      expect(v).toEqual({ kind: "refused", errorCode, error: "operationId" });
      expect(leaks(v)).toBe(false);
      expect(readableOperationId({ operationId: value })).toBeUndefined();
    });

    it("cardId → refused, FIELD_CARD_DATA", () => {
      const v = validateJob(job({ cardId: value }), STATION);
      expect(v).toEqual({ kind: "refused", errorCode, error: "cardId", operationId: OP });
      expect(leaks(v)).toBe(false);
    });

    it("persoStation → DATA_EXCEPTION WRONG_SATELLITEUID, FIELD_CARD_DATA", () => {
      const v = validateJob(job({ persoStation: value }), STATION);
      expect(v).toMatchObject({
        kind: "data-exception",
        reason: "WRONG_SATELLITEUID",
        errorCode,
        error: "persoStation",
      });
      expect(leaks(v)).toBe(false);
    });

    for (const path of ["issuerId", "issuerRequestId"]) {
      it(`${path} → DATA_EXCEPTION FIELD_CARD_DATA, left out of the header`, () => {
        const v = validateJob(job({ [path]: value }), STATION);
        expect(v).toEqual({
          kind: "data-exception",
          header: {
            operationId: OP,
            cardId: "271b-6e47-8ec3-7f3f",
            ...(path === "issuerRequestId" ? {} : { issuerRequestId: "req-20250117-0001" }),
          },
          reason: errorCode,
          errorCode,
          error: path,
        });
        expect(leaks(v)).toBe(false);
      });
    }

    it("productionData.cardStock → DATA_EXCEPTION FIELD_CARD_DATA", () => {
      const v = validateJob(
        job({ productionData: { ...(job().productionData as object), cardStock: value } }),
        STATION,
      );
      expect(v).toMatchObject({
        kind: "data-exception",
        reason: errorCode,
        errorCode,
        error: "productionData.cardStock",
      });
      expect(leaks(v)).toBe(false);
    });
  });

  it("requestedAt: a PAN in the fractional seconds → DATA_EXCEPTION FIELD_CARD_DATA", () => {
    const v = validateJob(job({ requestedAt: `2025-01-17T06:28:02.${PAN}Z` }), STATION);
    expect(v).toMatchObject({ kind: "data-exception", errorCode: "FIELD_CARD_DATA", error: "requestedAt" });
  });

  it("a too-long id stays FIELD_INVALID_FORMAT, whatever it holds", () => {
    expect(validateJob(job({ cardId: `${PAN}${"x".repeat(120)}` }), STATION)).toMatchObject({
      errorCode: "FIELD_INVALID_FORMAT",
      error: "cardId",
    });
  });

  it("ordinary ids and labels pass: the contract's example, UUIDs, sample jobs", () => {
    expect(validateJob(job(), STATION).kind).toBe("valid");
    for (const operationId of [
      "0ece5562-6839-8560-8835-51c5e95a5e8a", // dashes joined, its digits hold a Luhn-valid run
      "op-000123",
      "push-4711",
      "20250117-000123",
    ]) {
      expect(validateJob(job({ operationId }), STATION).kind, operationId).toBe("valid");
    }
    for (let i = 0; i < 3000; i++) {
      const sample = makeSampleJob(i * 7919, { runId: `r${i % 50}` });
      expect(validateJob(sample, STATION).kind).toBe("valid");
    }
  });

  it("print text is not screened: a sensitive line is meant to hold the PAN", () => {
    const v = validateJob(
      job({
        productionData: {
          print: { front: [{ text: "5266 0922 0141 6174", xMm: 8, yMm: 30, sizePt: 14, sensitive: true }] },
        },
      }),
      STATION,
    );
    expect(v.kind).toBe("valid");
  });
});

describe("D1's requestId and a cancel's operationId are bounded and screened like the job's ids", () => {
  const push = (requestId: unknown) => D1ToAgent.safeParse({ type: "push", requestId, job: {} });

  it("accepts 1–128 characters", () => {
    expect(push("push-4711").success).toBe(true);
    expect(push("r".repeat(128)).success).toBe(true);
  });

  it.each([
    ["empty", ""],
    ["129 characters", "r".repeat(129)],
    ["a control character", "push\n1"],
    ["a PAN", PAN],
    ["a grouped PAN", "5266 0922 0141 6174"],
    ["a track", `;${PAN}=2804201?`],
  ])("refuses %s, naming the path only", (_t, requestId) => {
    const r = push(requestId);
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => i.path.join("."))).toEqual(["requestId"]);
  });

  it("cancel and status-query requestIds, and a cancel's operationId", () => {
    expect(D1ToAgent.safeParse({ type: "cancel", requestId: PAN, operationId: OP }).success).toBe(false);
    expect(D1ToAgent.safeParse({ type: "cancel", requestId: "c-1", operationId: PAN }).success).toBe(false);
    expect(D1ToAgent.safeParse({ type: "cancel", requestId: "c-1", operationId: OP }).success).toBe(true);
    expect(D1ToAgent.safeParse({ type: "status-query", requestId: "x".repeat(129) }).success).toBe(false);
  });
});
