import { z } from "zod";

/**
 * The agent's configuration: one file plus environment overrides (config/load.ts). Every key has a
 * stated default where a safe one exists; the ones that identify the kiosk do not.
 */
export const ConfigSchema = z.object({
  station: z.object({
    /** This kiosk's persoStation id, as D1 knows it (e.g. KIOSK-PS-101). */
    id: z.string().min(1).max(64),
  }),
  d1: z.object({
    url: z.url(),
    /** Bearer token sent in the Authorization header when dialling D1. */
    token: z.string().min(8),
    /** Plain ws:// is refused unless this is set (demo and development only). */
    allowInsecure: z.boolean().default(false),
    pingIntervalMs: z.number().int().min(100).max(300_000).default(15_000),
    missedPongs: z.number().int().min(1).max(10).default(2),
    backoff: z
      .object({
        initialMs: z.number().int().min(10).default(500),
        maxMs: z.number().int().min(100).default(30_000),
      })
      .default({ initialMs: 500, maxMs: 30_000 }),
    /** An unacknowledged event is re-sent after this long even if the link stayed up. */
    resendAfterMs: z.number().int().min(100).default(30_000),
  }),
  /** Where the job database and the data key live. */
  dataDir: z.string().min(1),
  printer: z.object({
    /** Serial device path, e.g. /dev/ttyUSB0. */
    path: z.string().min(1),
    baudRate: z.number().int().positive().default(115_200),
    timeouts: z
      .object({
        defaultMs: z.number().int().positive().default(5_000),
        printMs: z.number().int().positive().default(60_000),
        magMs: z.number().int().positive().default(15_000),
      })
      .default({ defaultMs: 5_000, printMs: 60_000, magMs: 15_000 }),
    /** How often a stopped printer's status is read to notice that the condition cleared. */
    statusPollMs: z.number().int().min(10).max(60_000).default(2_000),
    /** Re-open backoff after the port disappeared (cable pulled, USB reset). */
    reopen: z
      .object({
        initialMs: z.number().int().min(10).default(500),
        maxMs: z.number().int().min(100).default(10_000),
      })
      .default({ initialMs: 500, maxMs: 10_000 }),
  }),
  production: z
    .object({
      /** How long a presented card waits in the mouth when the job does not say (collectTimeoutSec). */
      defaultCollectTimeoutSec: z.number().int().min(5).max(600).default(60),
      /**
       * How long a job waits for a stopped or offline printer before it fails with the printer's
       * reason (FEEDER_EMPTY, DEVICE_DISCONNECTED, …) without using a card.
       */
      holdWhileStoppedSec: z.number().min(0).max(3_600).default(120),
    })
    .default({ defaultCollectTimeoutSec: 60, holdWhileStoppedSec: 120 }),
  /** The local web console and status API (docs/console.md). Off unless enabled. */
  console: z
    .object({
      enabled: z.boolean().default(false),
      /** Loopback by default: the console is for a technician at the kiosk, not for the network. */
      host: z.string().min(1).default("127.0.0.1"),
      /** 0 = an ephemeral port (demo and tests). */
      port: z.number().int().min(0).max(65_535).default(8787),
      /** Without one, a random token is made at start and written to DATA_DIR/console.token (0600). */
      token: z.string().min(16).optional(),
    })
    .default({ enabled: false, host: "127.0.0.1", port: 8787 }),
  store: z
    .object({
      /** Finished jobs and their acknowledged events are kept this long for audit, then deleted. */
      retentionDays: z.number().min(1).max(3650).default(90),
    })
    .default({ retentionDays: 90 }),
  log: z
    .object({
      level: z.enum(["fatal", "error", "warn", "info", "debug", "trace"]).default("info"),
      /** A file to append JSON log lines to; stdout when absent (journald picks it up). */
      file: z.string().optional(),
    })
    .default({ level: "info" }),
});

export type AgentConfig = z.infer<typeof ConfigSchema>;
export type AgentConfigInput = z.input<typeof ConfigSchema>;
