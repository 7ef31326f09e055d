import { format } from "node:util";
import { type DestinationStream, type Logger, pino } from "pino";
import { redactDeep, redactText } from "./mask.js";

export type { Logger } from "pino";

/**
 * Field names that hold card secrets wherever they appear. pino removes them before serialising;
 * redactDeep() below then masks anything card-like that slipped into another field or the message.
 */
export const SENSITIVE_PATHS = [
  "pan",
  "*.pan",
  "track1",
  "track2",
  "track3",
  "*.track1",
  "*.track2",
  "*.track3",
  "csc",
  "*.csc",
  "productionData",
  "*.productionData",
  "apdus",
  "*.apdus",
  "apdu",
  "*.apdu",
  "token",
  "*.token",
  "authorization",
  "*.authorization",
  "data",
  "*.data",
];

/**
 * Key names censored at any depth and in any letter case by the last line of defence (pino's
 * `redact` above only reaches the listed depths and exact case). `data` is not here: a field named
 * `data` at depth 1–2 is still censored by SENSITIVE_PATHS, deeper ones are masked by value.
 */
const SENSITIVE_KEYS = new Set(
  [
    "pan",
    "track1",
    "track2",
    "track3",
    "csc",
    "cvv",
    "cvc",
    "productionData",
    "apdus",
    "apdu",
    "token",
    "authorization",
  ].map((k) => k.toLowerCase()),
);

/** redactDeep() plus censoring of SENSITIVE_KEYS wherever they sit. */
function scrub(value: unknown, depth = 0): unknown {
  if (depth > 32 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => scrub(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SENSITIVE_KEYS.has(k.toLowerCase()) && v !== undefined ? "[REDACTED]" : scrub(v, depth + 1);
  }
  return out;
}

export interface LoggerOptions {
  level?: string;
  /**
   * Where JSON lines go; defaults to stdout. `run` passes openLogFile()'s destination for log.file
   * (./file-destination.ts: a failing file falls back to stderr, never throws). Tests pass a
   * capturing stream.
   */
  destination?: DestinationStream;
  name?: string;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const logger = pino(
    {
      name: options.name ?? "kiosk-agent",
      level: options.level ?? "info",
      redact: { paths: SENSITIVE_PATHS, censor: "[REDACTED]" },
      formatters: {
        // Runs on every log object after redaction of known paths: masks PAN-like runs anywhere.
        log: (object) => scrub(redactDeep(object)) as Record<string, unknown>,
        bindings: (bindings) => scrub(redactDeep(bindings)) as Record<string, unknown>,
      },
      hooks: {
        logMethod(args, method) {
          const cleaned: unknown[] = args.map((a) => (typeof a === "string" ? redactText(a) : a));
          // log.error(err) without a message: pino would copy err.message into msg unmasked.
          const [first, second] = cleaned;
          if (first instanceof Error && typeof second !== "string") {
            cleaned.splice(0, 1, { err: first }, redactText(first.message));
          }
          // printf-style arguments are formatted here, so the finished message is what gets masked.
          const at = typeof cleaned[0] === "string" ? 0 : 1;
          if (typeof cleaned[at] === "string" && cleaned.length > at + 1) {
            cleaned.splice(at, cleaned.length - at, redactText(format(...cleaned.slice(at))));
          }
          return method.apply(this, cleaned as Parameters<typeof method>);
        },
      },
      serializers: { err: (e: unknown) => redactDeep(e) },
    },
    options.destination ?? pino.destination({ dest: 1, sync: false }),
  );
  // pino does not run child bindings through formatters: mask them when the child is made. Children
  // inherit this method, so grandchildren are covered too.
  const child = logger.child;
  logger.child = function (this: Logger, bindings, childOptions) {
    return child.call(this, scrub(redactDeep(bindings)) as typeof bindings, childOptions);
  } as typeof logger.child;
  return logger;
}

/** A logger that writes nothing; for library code used without a service around it. */
export const silentLogger: Logger = pino({ level: "silent" });
