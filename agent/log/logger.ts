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

export interface LoggerOptions {
  level?: string;
  /** Where JSON lines go; defaults to stdout. Tests pass a capturing stream. */
  destination?: DestinationStream;
  name?: string;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      name: options.name ?? "kiosk-agent",
      level: options.level ?? "info",
      redact: { paths: SENSITIVE_PATHS, censor: "[REDACTED]" },
      formatters: {
        // Runs on every log object after redaction of known paths: masks PAN-like runs anywhere.
        log: (object) => redactDeep(object) as Record<string, unknown>,
      },
      hooks: {
        logMethod(args, method) {
          const cleaned = args.map((a) => (typeof a === "string" ? redactText(a) : a));
          return method.apply(this, cleaned as Parameters<typeof method>);
        },
      },
      serializers: { err: (e: unknown) => redactDeep(e) },
    },
    options.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** A logger that writes nothing; for library code used without a service around it. */
export const silentLogger: Logger = pino({ level: "silent" });
