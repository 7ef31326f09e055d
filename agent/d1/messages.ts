import { z } from "zod";
import { IdSchema } from "../jobs/production-job.js";
import { OperationSchema } from "./operation.js";

/**
 * Every message on the agent ↔ D1 WebSocket. One JSON object per text frame, discriminated by
 * `type`. docs/protocol.md documents each (its JSON Schema is generated from these).
 *
 * Requests that expect an answer carry a `requestId` chosen by the sender; the answer echoes it.
 */

// ---- agent → D1 -------------------------------------------------------------------------------

/** First frame after the socket opens. The bearer token travels in the HTTP Authorization header. */
export const HelloMessage = z.object({
  type: z.literal("hello"),
  persoStation: z.string().min(1),
  agentVersion: z.string(),
  /** Identifies this process run; a change tells D1 the agent restarted. */
  sessionId: z.string(),
});

/**
 * Status notifications: `operations` is exactly D1's batch shape. `eventIds[i]` is the outbox id of
 * `operations[i]`; D1 acknowledges ids and de-duplicates with them.
 */
export const NotifyMessage = z
  .object({
    type: z.literal("notify"),
    operations: z.array(OperationSchema).min(1),
    eventIds: z.array(z.string()).min(1),
  })
  .refine((m) => m.operations.length === m.eventIds.length, {
    message: "eventIds must pair one to one with operations",
    path: ["eventIds"],
  });

/** Answer to a push, sent only after the job is committed to disk (or refused). */
export const PushResultMessage = z.object({
  type: z.literal("push-result"),
  requestId: z.string(),
  operationId: z.string().optional(),
  result: z.enum(["accepted", "refused"]),
  /** True when this operationId was already known: the answer is the one given the first time. */
  duplicate: z.boolean().optional(),
  errorCode: z.string().optional(),
  error: z.string().optional(),
});

/** Answer to anything the agent could not read or does not know. The link stays up. */
export const ErrorMessage = z.object({
  type: z.literal("error"),
  requestId: z.string().optional(),
  code: z.enum(["MALFORMED_JSON", "UNKNOWN_TYPE", "INVALID_MESSAGE", "INTERNAL"]),
  message: z.string(),
});

// ---- D1 → agent -------------------------------------------------------------------------------

/**
 * A requestId or operationId D1 sends: bounded like the job's ids (1–128 characters, no control
 * characters, no card data), since the agent logs it, echoes it and writes a push's to the audit.
 */
const D1Id = IdSchema;

export const WelcomeMessage = z.object({
  type: z.literal("welcome"),
  /** D1's clock, for the log only. */
  serverTime: z.string().optional(),
});

/** A production job pushed to this station. `job` is validated separately (production-job.md). */
export const PushMessage = z.object({
  type: z.literal("push"),
  requestId: D1Id,
  job: z.unknown(),
});

export const AckMessage = z.object({
  type: z.literal("ack"),
  eventIds: z.array(z.string()).min(1),
});

export const CancelMessage = z.object({
  type: z.literal("cancel"),
  requestId: D1Id,
  operationId: D1Id,
});

/**
 * The most operations one status-query may name: each costs a store read and an operation object in
 * the answer, so an unbounded list turns a small frame into a large answer. More: ask in parts, or
 * with `since`.
 */
export const MAX_STATUS_QUERY_IDS = 1000;

export const StatusQueryMessage = z.object({
  type: z.literal("status-query"),
  requestId: D1Id,
  /** Some operations by id (at most MAX_STATUS_QUERY_IDS); or omitted, with `since`, for all operations changed since then. */
  operationIds: z.array(D1Id).max(MAX_STATUS_QUERY_IDS).optional(),
  since: z.iso.datetime({ offset: true }).optional(),
});

export const CancelResultMessage = z.object({
  type: z.literal("cancel-result"),
  requestId: z.string(),
  operationId: z.string(),
  result: z.enum(["canceled", "refused", "unknown-operation"]),
  reason: z.string().optional(),
  operation: OperationSchema.optional(),
});

export const StatusResultMessage = z.object({
  type: z.literal("status-result"),
  requestId: z.string(),
  operations: z.array(OperationSchema),
  unknownOperationIds: z.array(z.string()).optional(),
});

export const AgentToD1 = z.discriminatedUnion("type", [
  HelloMessage,
  NotifyMessage,
  PushResultMessage,
  CancelResultMessage,
  StatusResultMessage,
  ErrorMessage,
]);
export type AgentToD1 = z.infer<typeof AgentToD1>;

export const D1ToAgent = z.discriminatedUnion("type", [
  WelcomeMessage,
  PushMessage,
  AckMessage,
  CancelMessage,
  StatusQueryMessage,
  ErrorMessage,
]);
export type D1ToAgent = z.infer<typeof D1ToAgent>;

export type HelloMessage = z.infer<typeof HelloMessage>;
export type NotifyMessage = z.infer<typeof NotifyMessage>;
export type PushResultMessage = z.infer<typeof PushResultMessage>;
export type PushMessage = z.infer<typeof PushMessage>;
export type AckMessage = z.infer<typeof AckMessage>;
export type CancelMessage = z.infer<typeof CancelMessage>;
export type StatusQueryMessage = z.infer<typeof StatusQueryMessage>;
export type ErrorMessage = z.infer<typeof ErrorMessage>;
export type CancelResultMessage = z.infer<typeof CancelResultMessage>;
export type StatusResultMessage = z.infer<typeof StatusResultMessage>;
export type WelcomeMessage = z.infer<typeof WelcomeMessage>;
