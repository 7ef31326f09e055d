import { z } from "zod";
import { AuditConfigSchema } from "../audit/forward-config.js";
import { CREDENTIAL_NAME, DATA_KEY_CREDENTIAL, DATA_KEY_CREDENTIAL_FILE } from "../util/credentials.js";
import { ALLOWED_HOST_NAME, isLoopbackHost } from "../util/host-check.js";

/** Names a request's Host may carry besides 127.0.0.1, localhost and [::1] (DNS-rebinding guard). */
const AllowedHosts = z.array(z.string().regex(ALLOWED_HOST_NAME, "a host name or [IPv6] literal")).max(16);

/**
 * The agent's configuration: one file plus environment overrides (config/load.ts). Every key has a
 * stated default where a safe one exists; the ones that identify the kiosk do not.
 */
export const ConfigSchema = z.strictObject({
  station: z.strictObject({
    /** This kiosk's persoStation id, as D1 knows it (e.g. KIOSK-PS-101). */
    id: z.string().min(1).max(64),
  }),
  d1: z
    .strictObject({
      /** wss:// in production; plain ws:// only with `allowInsecure` (docs/security.md). */
      url: z.url({ protocol: /^wss?$/, error: "must be a ws:// or wss:// URL" }),
      /** Bearer token sent in the Authorization header when dialling D1. */
      token: z.string().min(8),
      /** Plain ws:// is refused unless this is set (demo and development only). */
      allowInsecure: z.boolean().default(false),
      pingIntervalMs: z.number().int().min(100).max(300_000).default(15_000),
      missedPongs: z.number().int().min(1).max(10).default(2),
      backoff: z
        .strictObject({
          initialMs: z.number().int().min(10).default(500),
          maxMs: z.number().int().min(100).default(30_000),
        })
        .default({ initialMs: 500, maxMs: 30_000 }),
      /** An unacknowledged event is re-sent after this long even if the link stayed up. */
      resendAfterMs: z.number().int().min(100).default(30_000),
      /**
       * TLS for wss:// (docs/security.md): D1's certificate is verified against `caFile` (PEM; the
       * system CAs when absent); `certFile` + `keyFile` give the agent a client certificate (mutual TLS).
       */
      tls: z
        .strictObject({
          caFile: z.string().min(1).optional(),
          certFile: z.string().min(1).optional(),
          keyFile: z.string().min(1).optional(),
          /** The client key as a systemd credential (its name), instead of `keyFile` (docs/operations.md). */
          keyCredential: z.string().regex(CREDENTIAL_NAME, "a systemd credential name").optional(),
        })
        .optional(),
    })
    .superRefine((d1, ctx) => {
      if (d1.url.startsWith("ws:") && !d1.allowInsecure) {
        ctx.addIssue({
          code: "custom",
          path: ["url"],
          message:
            "plain ws:// is refused: use wss://, or set d1.allowInsecure: true (demo and development only)",
        });
      }
      const key = d1.tls && (d1.tls.keyFile ?? d1.tls.keyCredential);
      if (d1.tls && (d1.tls.certFile === undefined) !== (key === undefined)) {
        ctx.addIssue({
          code: "custom",
          path: ["tls", d1.tls.certFile === undefined ? "certFile" : "keyFile"],
          message:
            "a client certificate needs both d1.tls.certFile and d1.tls.keyFile (or d1.tls.keyCredential)",
        });
      }
      if (d1.tls?.keyFile !== undefined && d1.tls.keyCredential !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["tls", "keyCredential"],
          message: "give the client key once: d1.tls.keyFile or d1.tls.keyCredential",
        });
      }
    }),
  /** Where the job database (and a data key kept as a file) live. */
  dataDir: z.string().min(1),
  /**
   * The data key that seals production data at rest (agent/store/data-key.ts; docs/operations.md,
   * "Keys as systemd credentials"). `source` absent: the credential when the agent runs under a unit
   * that passes credentials ($CREDENTIALS_DIRECTORY), else the file DATA_DIR/data.key.
   */
  dataKey: z
    .strictObject({
      source: z.enum(["credential", "file"]).optional(),
      /** `file`: the key file (default DATA_DIR/data.key). */
      file: z.string().min(1).optional(),
      /** `credential`: its name, as in the unit's LoadCredentialEncrypted=NAME:… */
      credential: z.string().regex(CREDENTIAL_NAME, "a systemd credential name").default(DATA_KEY_CREDENTIAL),
      /** `credential`: the encrypted file the unit loads (`store rekey` and `store check` read it as root). */
      credentialFile: z.string().min(1).default(DATA_KEY_CREDENTIAL_FILE),
      /** `credential`: what `store rekey` binds a new key to (`systemd-creds encrypt --with-key=`). */
      withKey: z.enum(["auto", "host", "tpm2", "host+tpm2"]).default("auto"),
    })
    .default({ credential: DATA_KEY_CREDENTIAL, credentialFile: DATA_KEY_CREDENTIAL_FILE, withKey: "auto" }),
  /**
   * The card printer: its family (which adapter speaks to it) and how it is reached. `link: usb` is
   * the USB printer-class device file (/dev/usb/lpN), `tcp` a network printer, `serial` a serial or
   * USB-serial port (often disabled by default on Evolis models: guide §5). docs/devices.md.
   */
  printer: z
    .strictObject({
      family: z.enum(["evolis"]).default("evolis"),
      link: z.enum(["serial", "usb", "tcp"]).default("serial"),
      /** `serial`: the port, e.g. /dev/ttyUSB0. `usb`: the device file, e.g. /dev/usb/lp0. */
      path: z.string().min(1).optional(),
      /** `serial` only. */
      baudRate: z.number().int().positive().default(115_200),
      /** `tcp` only: the printer's address. */
      host: z.string().min(1).optional(),
      /** `tcp` only. No public source gives the port of an Evolis's command channel: set it explicitly. */
      port: z.number().int().min(1).max(65_535).optional(),
      timeouts: z
        .strictObject({
          defaultMs: z.number().int().positive().default(5_000),
          printMs: z.number().int().positive().default(60_000),
          magMs: z.number().int().positive().default(15_000),
        })
        .default({ defaultMs: 5_000, printMs: 60_000, magMs: 15_000 }),
      /** Silence that ends a reply sent without a terminator. */
      replyIdleGapMs: z.number().int().min(5).max(2_000).default(50),
      /** How often the mouth sensor is read while a presented card waits to be taken. */
      takePollMs: z.number().int().min(20).max(5_000).default(100),
      /** How often a stopped printer's status is read to notice that the condition cleared. */
      statusPollMs: z.number().int().min(10).max(60_000).default(2_000),
      /**
       * How often an idle printer's supplies (ribbon, feeders, bins, cleaning, counter) are read; they
       * are also read after every card.
       */
      supplyPollSec: z.number().min(1).max(3_600).default(60),
      /**
       * The feeders and the card stock each holds (docs/stock.md). A job's `productionData.cardStock`
       * picks the feeder; a job without one takes the first feeder; a feeder without `stock` takes
       * any job (a single-product kiosk). On an Evolis with several feeders, the ids are the feeder
       * numbers the printer knows (1, 2).
       */
      feeders: z
        .array(
          z.strictObject({
            id: z.string().regex(/^[A-Za-z0-9]{1,8}$/, "a feeder id is 1–8 letters or digits"),
            stock: z.string().min(1).max(64).optional(),
            /** The ledger balance at or below which the feeder reads "near empty". */
            nearEmptyAt: z.number().int().min(0).max(10_000).default(10),
          }),
        )
        .min(1)
        .max(4)
        .default([{ id: "1", nearEmptyAt: 10 }]),
      /** The bins spoiled and captured cards land in, and how many each holds (docs/stock.md). */
      bins: z
        .strictObject({
          reject: z
            .strictObject({
              capacity: z.number().int().min(1).max(10_000).default(50),
              nearFullAt: z.number().int().min(1).max(10_000).default(45),
            })
            .default({ capacity: 50, nearFullAt: 45 }),
          capture: z
            .strictObject({
              capacity: z.number().int().min(1).max(10_000).default(20),
              nearFullAt: z.number().int().min(1).max(10_000).default(18),
            })
            .default({ capacity: 20, nearFullAt: 18 }),
        })
        .default({ reject: { capacity: 50, nearFullAt: 45 }, capture: { capacity: 20, nearFullAt: 18 } }),
      /** Re-open backoff after the link disappeared (cable pulled, USB reset, printer off). */
      reopen: z
        .strictObject({
          initialMs: z.number().int().min(10).default(500),
          maxMs: z.number().int().min(100).default(10_000),
        })
        .default({ initialMs: 500, maxMs: 10_000 }),
    })
    .superRefine((printer, ctx) => {
      const ids = printer.feeders.map((f) => f.id);
      if (new Set(ids).size !== ids.length) {
        ctx.addIssue({ code: "custom", path: ["feeders"], message: "each feeder id may appear once" });
      }
      const stocks = printer.feeders.flatMap((f) => (f.stock ? [f.stock] : []));
      if (new Set(stocks).size !== stocks.length) {
        ctx.addIssue({ code: "custom", path: ["feeders"], message: "each stock may be in one feeder only" });
      }
      const need = (key: "path" | "host" | "port", why: string) => {
        if (printer[key] === undefined) ctx.addIssue({ code: "custom", path: [key], message: why });
      };
      if (printer.link === "serial")
        need("path", "printer.link serial needs printer.path (e.g. /dev/ttyUSB0)");
      if (printer.link === "usb") need("path", "printer.link usb needs printer.path (e.g. /dev/usb/lp0)");
      if (printer.link === "tcp") {
        need("host", "printer.link tcp needs printer.host");
        need("port", "printer.link tcp needs printer.port (the printer's network settings give it)");
      }
    }),
  /**
   * Which magnetic stripe encoder the kiosk has: the printer's built-in one, or a separate MSR206
   * family unit over USB HID (MSR605X, found by path or vendor/product id) or over serial.
   */
  magstripe: z
    .discriminatedUnion("kind", [
      z.strictObject({ kind: z.literal("printer") }),
      z.strictObject({
        kind: z.literal("msr206-hid"),
        path: z.string().min(1).optional(),
        vendorId: z.number().int().min(0).max(0xffff).optional(),
        productId: z.number().int().min(0).max(0xffff).optional(),
        /** Hand-swipe unit: how long a write, read or erase waits for the teller to swipe the card. */
        swipeTimeoutSec: z.number().int().min(5).max(600).default(30),
        timeouts: z
          .strictObject({ defaultMs: z.number().int().positive(), magMs: z.number().int().positive() })
          .partial()
          .optional(),
      }),
      z.strictObject({
        kind: z.literal("msr206-serial"),
        path: z.string().min(1),
        baudRate: z.number().int().positive().optional(),
        /** Hand-swipe unit: how long a write, read or erase waits for the teller to swipe the card. */
        swipeTimeoutSec: z.number().int().min(5).max(600).default(30),
        timeouts: z
          .strictObject({ defaultMs: z.number().int().positive(), magMs: z.number().int().positive() })
          .partial()
          .optional(),
      }),
    ])
    .default({ kind: "printer" }),
  /** The PC/SC reader at the printer's contact station; absent: the kiosk has no chip step. */
  chip: z
    .strictObject({
      /** The reader's exact PC/SC name (`pcsc_scan` lists it); a name that only starts the same is not taken. */
      reader: z.string().min(1).optional(),
      cardTimeoutMs: z.number().int().positive().default(5_000),
    })
    .default({ cardTimeoutMs: 5_000 }),
  /** The card-stock ledger (docs/stock.md). */
  stock: z
    .strictObject({
      /** An adjustment of more than this many cards needs a second operator (dual control). */
      dualControlAbove: z.number().int().min(0).max(100_000).default(10),
    })
    .default({ dualControlAbove: 10 }),
  production: z
    .strictObject({
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
    .strictObject({
      enabled: z.boolean().default(false),
      /**
       * Loopback only: the console is for a technician at the kiosk, and it has no TLS, so its token
       * and session cookie must not cross a network (docs/console.md).
       */
      host: z
        .string()
        .min(1)
        .refine(isLoopbackHost, {
          error: (i) =>
            `${String(i.input).slice(0, 64)} is not a loopback address: the console has no TLS, so it listens on 127.0.0.1, ::1 or localhost only`,
        })
        .default("127.0.0.1"),
      /** 0 = an ephemeral port (demo and tests). */
      port: z.number().int().min(0).max(65_535).default(8787),
      /** Without one, a random token is made at start and written to DATA_DIR/console.token (0600). */
      token: z.string().min(16).optional(),
      allowedHosts: AllowedHosts.default([]),
    })
    .default({ enabled: false, host: "127.0.0.1", port: 8787, allowedHosts: [] }),
  /** Health and metrics HTTP endpoint, always on 127.0.0.1 (docs/operations.md). Off unless enabled. */
  health: z
    .strictObject({
      enabled: z.boolean().default(false),
      /** 0 = an ephemeral port (tests). */
      port: z.number().int().min(0).max(65_535).default(9464),
      allowedHosts: AllowedHosts.default([]),
    })
    .default({ enabled: false, port: 9464, allowedHosts: [] }),
  /** SIGTERM handling (docs/operations.md#stopping). */
  shutdown: z
    .strictObject({
      /** How long a card in hand may take to finish or be parked before the agent gives up on it. */
      graceSec: z.number().min(0).max(600).default(30),
      /** How long to wait for D1 to acknowledge the last statuses before closing the link. */
      flushSec: z.number().min(0).max(60).default(5),
    })
    .default({ graceSec: 30, flushSec: 5 }),
  /** Encrypted job payloads (JWE, docs/security.md). */
  jwe: z
    .strictObject({
      /** The station's private key (PKCS#8 PEM, `kiosk-agent keys generate`); must be mode 0600. */
      privateKeyFile: z.string().min(1).optional(),
      /** The private key as a systemd credential (its name), instead of `privateKeyFile`. */
      privateKeyCredential: z.string().regex(CREDENTIAL_NAME, "a systemd credential name").optional(),
      /** Refuse plain production data: every job must carry it encrypted. */
      required: z.boolean().default(false),
    })
    .default({ required: false })
    .refine((jwe) => jwe.privateKeyFile === undefined || jwe.privateKeyCredential === undefined, {
      path: ["privateKeyCredential"],
      message: "give the private key once: jwe.privateKeyFile or jwe.privateKeyCredential",
    }),
  store: z
    .strictObject({
      /** Finished jobs and their acknowledged events are kept this long for audit, then deleted. */
      retentionDays: z.number().min(1).max(3650).default(90),
      /**
       * Pushes are refused (STORE_FULL) while the data directory's file system has less than this
       * free, so the card in production can still write its states (docs/operations.md).
       */
      minFreeMb: z.number().min(0).max(1_000_000).default(64),
    })
    .default({ retentionDays: 90, minFreeMb: 64 }),
  /** The audit trail off the box: `audit.forward` to a syslog collector (docs/operations.md, "Audit trail"). */
  audit: AuditConfigSchema,
  log: z
    .strictObject({
      level: z.enum(["fatal", "error", "warn", "info", "debug", "trace"]).default("info"),
      /** A file to append JSON log lines to; stdout when absent (journald picks it up). */
      file: z.string().optional(),
    })
    .default({ level: "info" }),
});

export type AgentConfig = z.infer<typeof ConfigSchema>;
export type AgentConfigInput = z.input<typeof ConfigSchema>;
