import type { z } from "zod";
import { IdSchema, type JobHeader, type ProductionJob, ProductionJobSchema } from "./production-job.js";

/**
 * Turns whatever D1 pushed into one of three outcomes (docs/validation.md is the rule table):
 * - refused: no D1 operation can be formed, or D1's request itself is wrong; answered synchronously.
 * - data-exception: the job is kept and ends as DATA_EXCEPTION with `reason`.
 * - valid: the parsed job, defaults applied and unknown fields stripped.
 *
 * `error` is always a field path, never a value: the job is full of card data.
 */
export type JobValidation =
  | { kind: "valid"; job: ProductionJob }
  | { kind: "refused"; errorCode: string; error: string; operationId?: string }
  | { kind: "data-exception"; header: JobHeader; reason: string; errorCode: string; error: string };

/** FIELD_CARD_DATA: an id or label that holds card data (a Luhn-valid digit run or a track). */
export type FieldErrorCode = "FIELD_MISSING" | "FIELD_INVALID_FORMAT" | "FIELD_CARD_DATA";

export const SATELLITE_REASONS = {
  missing: "MISSING_SATELLITEUID",
  wrong: "WRONG_SATELLITEUID",
} as const;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `["productionData", "print", "front", 0, "xMm"]` → `productionData.print.front[0].xMm`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += out === "" ? String(seg) : `.${String(seg)}`;
  }
  return out;
}

function valueAt(root: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let cur: unknown = root;
  for (const seg of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[seg];
  }
  return cur;
}

function issueErrorCode(issue: z.core.$ZodIssue, raw: unknown): FieldErrorCode {
  if (issue.code === "custom") {
    const code = (issue.params as { errorCode?: FieldErrorCode } | undefined)?.errorCode;
    if (code) return code;
  }
  // A key that is not there at all is "missing"; null, "" or a wrong type is a bad format.
  return valueAt(raw, issue.path) === undefined ? "FIELD_MISSING" : "FIELD_INVALID_FORMAT";
}

function refused(errorCode: string, error: string, operationId?: string): JobValidation {
  return operationId === undefined
    ? { kind: "refused", errorCode, error }
    : { kind: "refused", errorCode, error, operationId };
}

/** FIELD_MISSING when the key is absent, FIELD_CARD_DATA when it holds card data, else FIELD_INVALID_FORMAT. */
function idProblem(v: unknown): FieldErrorCode | undefined {
  if (v === undefined) return "FIELD_MISSING";
  const parsed = IdSchema.safeParse(v);
  if (parsed.success) return undefined;
  const issue = parsed.error.issues[0];
  return issue ? issueErrorCode(issue, v) : "FIELD_INVALID_FORMAT";
}

/** A D1 enum field that defaults when absent; a known value that is not ours is "unsupported". */
function enumProblem(v: unknown, expected: string, unsupported: string): string | undefined {
  if (v === undefined || v === expected) return undefined;
  return typeof v === "string" ? unsupported : "FIELD_INVALID_FORMAT";
}

export function validateJob(raw: unknown, stationId: string): JobValidation {
  try {
    return validate(raw, stationId);
  } catch {
    // Never let a thrown message (which could quote input) escape; the cause is not kept for the same reason.
    return refused("VALIDATION_FAILED", "job");
  }
}

function validate(raw: unknown, stationId: string): JobValidation {
  if (!isRecord(raw)) return refused("FIELD_INVALID_FORMAT", "job");

  const opProblem = idProblem(raw.operationId);
  if (opProblem) return refused(opProblem, "operationId");
  const operationId = raw.operationId as string;

  const cardProblem = idProblem(raw.cardId);
  if (cardProblem) return refused(cardProblem, "cardId", operationId);
  const cardId = raw.cardId as string;

  const operation = enumProblem(raw.operation, "PRODUCE", "UNSUPPORTED_OPERATION");
  if (operation) return refused(operation, "operation", operationId);
  const channel = enumProblem(raw.distributionChannel, "INSTANT", "UNSUPPORTED_CHANNEL");
  if (channel) return refused(channel, "distributionChannel", operationId);

  const header: JobHeader = { operationId, cardId };
  // A bad issuerRequestId is reported below like any other field; it just cannot travel back to D1.
  if (IdSchema.safeParse(raw.issuerRequestId).success) header.issuerRequestId = raw.issuerRequestId as string;

  const station = raw.persoStation;
  if (station === undefined || station === null || station === "") {
    return dataException(header, SATELLITE_REASONS.missing, "FIELD_MISSING", "persoStation");
  }
  const stationProblem = idProblem(station);
  if (stationProblem) return dataException(header, SATELLITE_REASONS.wrong, stationProblem, "persoStation");
  if (station !== stationId) {
    return dataException(header, SATELLITE_REASONS.wrong, "FIELD_INVALID_VALUE", "persoStation");
  }

  const parsed = ProductionJobSchema.safeParse(raw);
  if (parsed.success) return { kind: "valid", job: parsed.data };
  const issue = parsed.error.issues[0];
  if (!issue) return refused("VALIDATION_FAILED", "job", operationId);
  const errorCode = issueErrorCode(issue, raw);
  return dataException(header, errorCode, errorCode, formatPath(issue.path) || "job");
}

function dataException(header: JobHeader, reason: string, errorCode: string, error: string): JobValidation {
  return { kind: "data-exception", header, reason, errorCode, error };
}

/**
 * The job's operationId when it is a valid id (bounded, no control characters, no card data), for
 * answers that judge nothing else about the job (a refusal while stopping): anything else is
 * neither echoed, logged nor audited.
 */
export function readableOperationId(job: unknown): string | undefined {
  const parsed = IdSchema.safeParse(isRecord(job) ? job.operationId : undefined);
  return parsed.success ? parsed.data : undefined;
}
