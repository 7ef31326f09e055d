import { z } from "zod";
import {
  checkTrack3,
  parseTrack1,
  parseTrack2,
  type TrackFields,
  type TrackResult,
} from "../../drivers/magstripe/iso7813.js";
import { containsCardData } from "../log/mask.js";

/**
 * The production job D1 pushes (shared/production-job.md), as a zod schema. docs/validation.md lists
 * every rule and the D1 outcome its failure leads to; validate.ts maps schema issues to those outcomes.
 *
 * Key order in each object is the order fields are checked in: zod reports issues in shape order, and
 * validateJob reports the first one, so reordering keys changes which error a bad job gets.
 *
 * No message here carries a value: custom issues say which rule failed, never with what.
 */

/** Set on custom issues whose D1 errorCode is not the default FIELD_INVALID_FORMAT. */
export interface IssueParams {
  errorCode: "FIELD_MISSING" | "FIELD_INVALID_FORMAT" | "FIELD_CARD_DATA";
}

const missing: IssueParams = { errorCode: "FIELD_MISSING" };

// C0/C1 controls and DEL: ids and labels end up in logs, file names and D1 messages.
const NO_CONTROL = /^[^\u0000-\u001f\u007f-\u009f]*$/;

/**
 * Ids and labels are stored in clear, logged, shown and written to the audit trail for good: one
 * that holds a Luhn-valid 13–19 digit run (any separators, any digit script) or a track-like string
 * is refused (FIELD_CARD_DATA, docs/validation.md). The same detector masks logs (agent/log/mask.ts),
 * so an id that passes here is never mangled there.
 */
function noCardData<T extends z.ZodType<string>>(schema: T): T {
  return schema.superRefine((s, ctx) => {
    if (containsCardData(s)) {
      ctx.addIssue({ code: "custom", message: "holds card data", params: { errorCode: "FIELD_CARD_DATA" } });
    }
  }) as unknown as T;
}

/** Ids D1 hands us and we echo back: bounded, no control characters, no card data. */
export const IdSchema = noCardData(z.string().min(1).max(128).regex(NO_CONTROL)).describe(
  "An id: 1-128 characters, no control characters, no card data (no Luhn-valid 13-19 digit run, no track; docs/validation.md)",
);

export const CARD_WIDTH_MM = 85.6;
export const CARD_HEIGHT_MM = 54;
export const MAX_LINES_PER_SIDE = 20;
export const MAX_APDUS = 512;

// Anything a font can draw on one line: no controls, no line/paragraph separators, no lone surrogates.
const PRINTABLE = /^[^\p{Cc}\p{Cs}\p{Zl}\p{Zp}]*$/u;

export const PrintLineSchema = z.object({
  text: z.string().refine((s) => {
    const chars = [...s].length;
    return chars >= 1 && chars <= 64 && PRINTABLE.test(s) && s.trim().length > 0;
  }, "text must be 1-64 printable characters"),
  xMm: z.number().min(0).max(CARD_WIDTH_MM),
  yMm: z.number().min(0).max(CARD_HEIGHT_MM),
  sizePt: z.number().min(4).max(48),
  sensitive: z.boolean().optional(),
});
export type PrintLine = z.infer<typeof PrintLineSchema>;

const PrintSideSchema = z.array(PrintLineSchema).max(MAX_LINES_PER_SIDE).default([]);

export const PrintSchema = z
  .object({ front: PrintSideSchema, back: PrintSideSchema })
  .superRefine((print, ctx) => {
    if (print.front.length + print.back.length === 0) {
      ctx.addIssue({ code: "custom", message: "print has no line on either side", params: missing });
    }
  });

function trackRule(parse: (data: string) => TrackResult<unknown>, what: string) {
  return z.string().superRefine((data, ctx) => {
    const r = parse(data);
    // Only the rule's code goes into the message: the data is a secret.
    if (!r.ok) ctx.addIssue({ code: "custom", message: `${what}: ${r.error}` });
  });
}

function parsedOrUndefined(r: TrackResult<TrackFields>): TrackFields | undefined {
  return r.ok ? r.value : undefined;
}

export const MagstripeSchema = z
  .object({
    coercivity: z.enum(["HICO", "LOCO"]).default("HICO"),
    track1: trackRule(parseTrack1, "track 1").optional(),
    track2: trackRule(parseTrack2, "track 2").optional(),
    track3: trackRule(checkTrack3, "track 3").optional(),
  })
  .superRefine((m, ctx) => {
    if (m.track1 === undefined && m.track2 === undefined && m.track3 === undefined) {
      ctx.addIssue({ code: "custom", message: "magstripe has no track", params: missing });
      return;
    }
    if (m.track1 === undefined || m.track2 === undefined) return;
    // Each track's own issue (if any) is already reported; compare only two well-formed tracks.
    const t1 = parsedOrUndefined(parseTrack1(m.track1));
    const t2 = parsedOrUndefined(parseTrack2(m.track2));
    if (!t1 || !t2) return;
    // Expiry and service code are compared as well as the PAN: a card whose tracks disagree is
    // rejected by terminals, and the contract only spells out the PAN.
    if (t1.pan !== t2.pan || t1.expiry !== t2.expiry || t1.serviceCode !== t2.serviceCode) {
      ctx.addIssue({ code: "custom", message: "track 2 disagrees with track 1", path: ["track2"] });
    }
  });

const HEX = /^(?:[0-9A-Fa-f]{2})+$/;

export const ApduSchema = z.object({
  // 4 bytes (CLA INS P1 P2) up to a short APDU's maximum of 261 bytes (5 + 255 + 1).
  command: z.string().min(8).max(522).regex(HEX),
  expectSw: z.string().regex(/^[0-9A-Fa-f]{4}$/),
});
export type Apdu = z.infer<typeof ApduSchema>;

export const ChipSchema = z.object({
  apdus: z
    .array(ApduSchema)
    .max(MAX_APDUS)
    .superRefine((a, ctx) => {
      if (a.length === 0) ctx.addIssue({ code: "custom", message: "no APDU", params: missing });
    }),
});

export const DeliverySchema = z.object({
  /** Absent: the agent's configured default applies. */
  collectTimeoutSec: z.number().int().min(5).max(600).optional(),
});

export const ProductionDataSchema = z
  .object({
    cardStock: noCardData(z.string().min(1).max(64).regex(NO_CONTROL)).optional(),
    print: PrintSchema.optional(),
    magstripe: MagstripeSchema.optional(),
    chip: ChipSchema.optional(),
    delivery: DeliverySchema.optional(),
  })
  .superRefine((d, ctx) => {
    if (d.print === undefined && d.magstripe === undefined && d.chip === undefined) {
      ctx.addIssue({ code: "custom", message: "nothing to produce", params: missing });
    }
  });
export type ProductionData = z.infer<typeof ProductionDataSchema>;

export const ProductionJobSchema = z
  .object({
    operationId: IdSchema,
    operation: z.literal("PRODUCE").default("PRODUCE"),
    cardId: IdSchema,
    issuerId: IdSchema.optional(),
    issuerRequestId: IdSchema.optional(),
    distributionChannel: z.literal("INSTANT").default("INSTANT"),
    persoStation: IdSchema,
    // Fractional seconds are unbounded: a PAN could ride in them.
    requestedAt: noCardData(z.iso.datetime({ offset: true })).optional(),
    productionData: ProductionDataSchema,
  })
  .describe("Production job pushed by D1 to a perso station (shared/production-job.md)");
export type ProductionJob = z.infer<typeof ProductionJobSchema>;

/** What is known of a job that failed validation: enough to report it to D1, nothing secret. */
export type JobHeader = { operationId: string; cardId: string; issuerRequestId?: string };
