import { z } from "zod";

/**
 * D1's operation object (shared/d1-contract.md), exactly as D1 defines it. Statuses we do not know
 * are kept as strings: D1 readers must treat unknown statuses as unknown, not as errors.
 */
export const D1_STATUSES = [
  "CARD_PROD_REQUESTED",
  "CARD_PROD_READY",
  "CARD_PROD_DONE",
  "DATA_EXCEPTION",
  "CARD_PROD_EXCEPTION",
  "CARD_PROD_CANCELED",
] as const;
export type D1Status = (typeof D1_STATUSES)[number];

export const TERMINAL_D1_STATUSES: ReadonlySet<string> = new Set([
  "CARD_PROD_DONE",
  "DATA_EXCEPTION",
  "CARD_PROD_EXCEPTION",
  "CARD_PROD_CANCELED",
]);

/** Top-level `status` that goes with each physical issuance status. */
export function topLevelStatus(status: D1Status): "PENDING" | "SUCCESSFUL" | "FAILED" {
  switch (status) {
    case "CARD_PROD_REQUESTED":
    case "CARD_PROD_READY":
      return "PENDING";
    case "CARD_PROD_DONE":
      return "SUCCESSFUL";
    case "DATA_EXCEPTION":
    case "CARD_PROD_EXCEPTION":
    case "CARD_PROD_CANCELED":
      return "FAILED";
  }
}

export const OperationSchema = z
  .object({
    operationId: z.string().min(1),
    operation: z.literal("PRODUCE"),
    status: z.enum(["PENDING", "SUCCESSFUL", "FAILED"]),
    startTime: z.iso.datetime(),
    endTime: z.iso.datetime().optional(),
    cardId: z.string(),
    details: z.object({ status: z.string(), reason: z.string().optional() }),
    errorCode: z.string().optional(),
    error: z.string().optional(),
    issuerRequestId: z.string().optional(),
  })
  .describe("D1 operation object: one status notification or on-demand status answer");
export type Operation = z.infer<typeof OperationSchema>;
