import type Database from "better-sqlite3";
import { DeviceError } from "../../drivers/device-fault.js";
import type {
  CardPrinter,
  PrinterCounters,
  PrinterIdentity,
  PrinterStatus,
} from "../../drivers/printer/card-printer.js";
import { MaintenanceError } from "../devices/printer-supervisor.js";
import { redactText } from "../log/mask.js";
import type { StockLedger } from "../store/stock-ledger.js";
import type { Clock } from "../util/clock.js";
import { CodedError } from "../util/errors.js";
import { AuditAppender } from "./audit-chain.js";

/**
 * A technician's printer commands (`kiosk-agent printer …`, `/api/printer/*`; docs/cli.md) and their
 * audit rows: every run, done or refused, is one `TECHNICIAN` row of `audit_log` (migration 5) with
 * the command, its result (`ok` or an error code), where it ran (the agent's console or standalone)
 * and the operator's name when given. No card data is involved; nothing secret is written.
 */

export const TECHNICIAN_COMMANDS = ["info", "counters", "clean", "reset", "eject", "test-card"] as const;
export type TechnicianCommand = (typeof TECHNICIAN_COMMANDS)[number];

/** The commands that only read (GET on the console API); the others act on the printer (POST). */
export const READING_COMMANDS: ReadonlySet<TechnicianCommand> = new Set(["info", "counters"]);

export function isTechnicianCommand(name: string): name is TechnicianCommand {
  return (TECHNICIAN_COMMANDS as readonly string[]).includes(name);
}

/** `console`: through the running agent's local API; `standalone`: the CLI opened the printer itself. */
export type TechnicianVia = "console" | "standalone";

export interface TechnicianRequest {
  command: TechnicianCommand;
  operator?: string | undefined;
  /** `test-card` only: the feeder the blank comes from (default: the first configured). */
  feeder?: string | undefined;
  via: TechnicianVia;
}

export interface TechnicianResult {
  ok: true;
  command: TechnicianCommand;
  /** One line for the technician. */
  message: string;
  identity?: PrinterIdentity;
  capabilities?: {
    family: string;
    feeders: readonly string[];
    sides: ReadonlyArray<"front" | "back">;
    magstripeEncoder: boolean;
    contactStation: boolean;
  };
  /** `usb:/dev/usb/lp0`, `tcp:host:port`, … when known. */
  link?: string;
  status?: PrinterStatus;
  counters?: PrinterCounters;
  /** `test-card`: where the blank came from and the stock the ledger counted it under. */
  feeder?: string;
  stock?: string;
}

export interface TechnicianFailure {
  ok: false;
  command: TechnicianCommand;
  /** PRINTER_BUSY, PRINTER_OFFLINE, BAD_FEEDER, or the printer's fault (docs/reasons.md). */
  code: string;
  error: string;
}

export class TechnicianError extends CodedError<"BAD_FEEDER" | "BAD_REQUEST"> {}

/** Writes the TECHNICIAN rows, on the job store's connection (agent) or the CLI's own (standalone). */
export class TechnicianAudit {
  private readonly insert;

  constructor(
    db: Database.Database,
    private readonly clock: Clock,
  ) {
    // Chained to the row before it (agent/audit/audit-chain.ts).
    this.insert = new AuditAppender(db);
  }

  record(
    request: TechnicianRequest,
    outcome: TechnicianResult | TechnicianFailure,
    extra: { feeder?: string | undefined; stock?: string | undefined } = {},
  ): void {
    const feeder = extra.feeder ?? request.feeder;
    const detail = {
      command: request.command,
      result: outcome.ok ? "ok" : outcome.code,
      via: request.via,
      ...(request.operator ? { operator: request.operator } : {}),
      ...(feeder !== undefined ? { feeder } : {}),
      ...(extra.stock ? { stock: extra.stock } : {}),
    };
    this.insert.append({
      at: new Date(this.clock.wallNow()).toISOString(),
      event: "TECHNICIAN",
      error_code: outcome.ok ? null : outcome.code,
      error: outcome.ok ? null : outcome.error,
      detail: JSON.stringify(detail),
    });
  }
}

/**
 * An operator's name as the audit keeps it: one line of 1–64 characters, never anything that looks
 * like card data (the rule of `kiosk-agent stock`).
 */
export function checkOperator(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  const name = typeof value === "string" ? value.trim() : "";
  if (!/^[^\p{Cc}]{1,64}$/u.test(name)) {
    throw new TechnicianError("BAD_REQUEST", "operator must be a name of 1 to 64 printable characters");
  }
  if (redactText(name) !== name) {
    throw new TechnicianError("BAD_REQUEST", "operator looks like it holds card data: leave it out");
  }
  return name;
}

export interface TechnicianContext {
  /**
   * Runs the operation with the printer: the agent's supervisor between cards (`maintenance`), or
   * the printer the standalone CLI opened for this command.
   */
  run<T>(command: TechnicianCommand, operation: (printer: CardPrinter) => Promise<T>): Promise<T>;
  /** The configured feeder ids, the default first. */
  feeders: readonly string[];
  /** The stock the ledger counts a feeder's cards as (StockRouter.stockOf). */
  stockOf(feeder: string): string;
  ledger: Pick<StockLedger, "record">;
  audit: TechnicianAudit;
  link?: string;
}

/**
 * Runs one command and writes its audit row, whatever the outcome. A test card is also one
 * `spoiled`/`TEST_CARD` movement of the stock ledger, written while the printer is still held, so
 * the counter read after it already sees the card counted. Errors that are not a refusal or a device
 * fault are audited as INTERNAL and re-thrown.
 */
export async function runTechnicianCommand(
  request: TechnicianRequest,
  ctx: TechnicianContext,
): Promise<TechnicianResult | TechnicianFailure> {
  let feeder: string | undefined;
  let stock: string | undefined;
  let outcome: TechnicianResult | TechnicianFailure;
  try {
    if (request.feeder !== undefined && request.command !== "test-card") {
      throw new TechnicianError("BAD_REQUEST", "a feeder goes with test-card only");
    }
    if (request.command === "test-card") {
      feeder = request.feeder ?? ctx.feeders[0];
      if (feeder === undefined || !ctx.feeders.includes(feeder)) {
        throw new TechnicianError(
          "BAD_FEEDER",
          `no feeder '${request.feeder}' in printer.feeders (${ctx.feeders.join(", ")})`,
        );
      }
      stock = ctx.stockOf(feeder);
    }
    outcome = await ctx.run(request.command, (printer) => operate(printer, request, ctx, feeder, stock));
  } catch (err) {
    const failure = failureOf(request.command, err);
    ctx.audit.record(request, failure, { feeder, stock });
    if (failure.code === "INTERNAL") throw err;
    return failure;
  }
  ctx.audit.record(request, outcome, { feeder, stock });
  return outcome;
}

async function operate(
  printer: CardPrinter,
  request: TechnicianRequest,
  ctx: TechnicianContext,
  feeder: string | undefined,
  stock: string | undefined,
): Promise<TechnicianResult> {
  const command = request.command;
  const link = ctx.link ? { link: ctx.link } : {};
  switch (command) {
    case "info": {
      const { family, feeders, sides, magstripeEncoder, contactStation } = printer.capabilities;
      const status = await printer.readStatus();
      const counters = await printer.readCounters();
      const identity = printer.identity ?? {};
      return {
        ok: true,
        command,
        message: [identity.model ?? family, identity.serial && `serial ${identity.serial}`]
          .filter(Boolean)
          .join(" "),
        identity,
        capabilities: { family, feeders, sides, magstripeEncoder, contactStation },
        ...link,
        status,
        counters,
      };
    }
    case "counters": {
      const counters = await printer.readCounters();
      return { ok: true, command, message: "counters read", counters };
    }
    case "clean":
      await printer.runCleaning();
      return {
        ok: true,
        command,
        message: "cleaning cycle done: take the cleaning card out, put the ribbon back, close the cover",
        counters: await printer.readCounters(),
      };
    case "reset":
      await printer.resetPrinter();
      return { ok: true, command, message: "printer reset; its settings were applied again" };
    case "eject":
      await printer.ejectCard();
      return { ok: true, command, message: "the card inside was ejected through the mouth" };
    case "test-card":
      await printer.printTestCard(feeder);
      ctx.ledger.record({
        feeder: feeder!,
        stock: stock!,
        kind: "spoiled",
        reason: "TEST_CARD",
        ...(request.operator ? { operator: request.operator } : {}),
      });
      return {
        ok: true,
        command,
        message: `test card printed from feeder ${feeder}: one ${stock} blank used (ledger: TEST_CARD)`,
        feeder: feeder!,
        stock: stock!,
      };
  }
}

function failureOf(command: TechnicianCommand, err: unknown): TechnicianFailure {
  if (err instanceof MaintenanceError || err instanceof TechnicianError || err instanceof DeviceError) {
    return { ok: false, command, code: err.code, error: err.message };
  }
  return { ok: false, command, code: "INTERNAL", error: "internal error" };
}
