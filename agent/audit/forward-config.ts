import { z } from "zod";
import { CREDENTIAL_NAME } from "../util/credentials.js";

const FACILITY_NAMES = [
  "kern",
  "user",
  "mail",
  "daemon",
  "auth",
  "syslog",
  "lpr",
  "news",
  "uucp",
  "cron",
  "authpriv",
  "ftp",
  "ntp",
  "audit",
  "alert",
  "clock",
  "local0",
  "local1",
  "local2",
  "local3",
  "local4",
  "local5",
  "local6",
  "local7",
] as const;

/**
 * `audit` in the configuration (agent/config/schema.ts; docs/operations.md, "Audit trail").
 * `forward`: every audit row goes to a syslog collector as it is written (agent/audit/syslog-forwarder.ts).
 */
export const AuditConfigSchema = z
  .strictObject({
    forward: z
      .strictObject({
        /** The collector (rsyslog, syslog-ng, a SIEM's syslog input). */
        host: z.string().min(1).max(255),
        /** Conventionally 6514 for TLS (RFC 5425), 514 or 601 for plain TCP. */
        port: z.number().int().min(1).max(65_535),
        /**
         * RFC 5425: the collector's certificate is verified against `caFile` (the system CAs when
         * absent); `certFile` + `keyFile` (or `keyCredential`) present the kiosk's client certificate.
         */
        tls: z
          .strictObject({
            caFile: z.string().min(1).optional(),
            certFile: z.string().min(1).optional(),
            keyFile: z.string().min(1).optional(),
            keyCredential: z.string().regex(CREDENTIAL_NAME, "a systemd credential name").optional(),
            /** The name the collector's certificate must carry, when not `host`. */
            serverName: z.string().min(1).max(255).optional(),
          })
          .refine((t) => (t.certFile === undefined) === ((t.keyFile ?? t.keyCredential) === undefined), {
            message: "a client certificate needs both certFile and keyFile (or keyCredential)",
          })
          .refine((t) => t.keyFile === undefined || t.keyCredential === undefined, {
            path: ["keyCredential"],
            message: "give the client key once: keyFile or keyCredential",
          })
          .optional(),
        /** RFC 5424 APP-NAME. */
        appName: z
          .string()
          .regex(/^[!-~]{1,48}$/, "1–48 printable ASCII characters, no spaces")
          .default("kiosk-agent"),
        /** RFC 5424 facility: a name or 0–23 (default `audit`, 13 "log audit"); severity is notice. */
        facility: z.union([z.number().int().min(0).max(23), z.enum(FACILITY_NAMES)]).default("audit"),
        /** RFC 5424 HOSTNAME (default: the machine's host name). */
        hostname: z
          .string()
          .regex(/^[!-~]{1,255}$/, "printable ASCII, no spaces")
          .optional(),
        /**
         * The structured-data id of each message (`name@enterprise-number`). 32473 is the number RFC
         * 5612 sets aside for examples: a bank with its own enterprise number puts it here.
         */
        sdId: z
          .string()
          .regex(/^[^\s=\]"@]{1,24}@\d{1,7}$/, "name@enterprise-number, e.g. kioskAudit@32473")
          .default("kioskAudit@32473"),
        /** Reconnect backoff while the collector is down (rows wait in the store meanwhile). */
        retry: z
          .strictObject({
            initialMs: z.number().int().min(10).default(1_000),
            maxMs: z.number().int().min(10).default(60_000),
          })
          .default({ initialMs: 1_000, maxMs: 60_000 }),
        /** One batch is one connection (the collector's close confirms it). */
        batchMaxRows: z.number().int().min(1).max(10_000).default(100),
        /** Bytes of one batch; at most one TLS record (16 KiB) by default, so it arrives whole. */
        batchMaxBytes: z.number().int().min(1_024).max(1_048_576).default(16_000),
        connectTimeoutMs: z.number().int().min(100).max(120_000).default(10_000),
        /** How long the collector has to close after the batch ended before it is sent again. */
        ackTimeoutMs: z.number().int().min(100).max(120_000).default(10_000),
        /** Rows written by another process (`kiosk-agent stock`) are noticed this often. */
        pollMs: z.number().int().min(10).max(600_000).default(2_000),
      })
      .optional(),
  })
  .default({});
