import { mkdirSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { pino } from "pino";
import type { PrinterCounters, PrinterStatus } from "../../drivers/printer/card-printer.js";
import { createPrinter, describeLink, type PrinterConfig } from "../../drivers/printer/create-printer.js";
import {
  checkOperator,
  isTechnicianCommand,
  READING_COMMANDS,
  runTechnicianCommand,
  TECHNICIAN_COMMANDS,
  TechnicianAudit,
  type TechnicianCommand,
  TechnicianError,
  type TechnicianFailure,
  type TechnicianResult,
} from "../audit/technician-audit.js";
import { ConfigError, loadConfig } from "../config/load.js";
import { type AgentConfig, ConfigSchema } from "../config/schema.js";
import { createLogger, type Logger } from "../log/logger.js";
import { StockRouter } from "../stock/stock-router.js";
import { migrate } from "../store/migrations.js";
import { StockLedger } from "../store/stock-ledger.js";
import { systemClock } from "../util/clock.js";
import { agentPidState, pidFilePath } from "../util/pid-file.js";
import { parseCommandArgs, UsageError } from "./args.js";
import { consoleOf, fetchFailureCode } from "./status.js";

export const PRINTER_HELP = `Usage: kiosk-agent printer <command> [--config FILE | --url URL --token TOKEN]
                           [--operator NAME] [--feeder ID] [--json]

Technician commands on the kiosk's printer. They go through the running agent's local console API,
so they never fight the agent for the port, and run between cards (refused during one). When no
agent answers and --config is given, the command opens the printer itself (standalone), unless the
agent's pid file says an agent is running. Every run, done or refused, is a TECHNICIAN row of the
audit trail (kiosk-agent audit export).

Commands:
  info        model, serial number, firmware, feeders, status and counters
  counters    the printer's own counters: cards inserted, panels printed, cleanings
  clean       a cleaning cycle: take the ribbon out and put the cleaning card in first
  reset       the printer restarts; the agent's printer settings are applied again
  eject       whatever card is inside goes out through the mouth
  test-card   the printer's own test card; it uses one blank (a TEST_CARD movement of the ledger)

Options:
  --config FILE     the agent's configuration: the console's address and token; for a standalone
                    run, the printer and the data directory (audit trail, ledger)
  --url URL         the console's address (default: from --config, else http://127.0.0.1:8787)
  --token TOKEN     the console token (default: $KIOSK_CONSOLE_TOKEN, else from --config)
  --operator NAME   who runs it, for the audit trail and the ledger
  --feeder ID       test-card only: the feeder the blank comes from (default: the first configured)
  --json            print the JSON answer instead of lines
  --timeout-ms MS   how long to wait for the agent's answer (default 120000: a cleaning takes time)

Standalone without a configuration file (a printer no agent is configured for):
  --link usb|serial|tcp   how the printer is reached, with --path DEVICE, or --host H --port N
  --data-dir DIR          where the audit trail is kept (DIR/jobs.sqlite; created if missing)

Exit codes:
  0  done
  1  failed or refused: the printer is busy with a card, offline, or reported a fault; the agent
     could not be reached or refused the token; an agent is running but its console does not answer
  2  usage error`;

const OPTIONS = {
  config: { type: "string", short: "c" },
  url: { type: "string" },
  token: { type: "string" },
  operator: { type: "string" },
  feeder: { type: "string" },
  json: { type: "boolean" },
  "timeout-ms": { type: "string" },
  link: { type: "string" },
  path: { type: "string" },
  host: { type: "string" },
  port: { type: "string" },
  "data-dir": { type: "string" },
} as const;

export interface PrinterIo {
  out: (line: string) => void;
  err: (line: string) => void;
  env: NodeJS.ProcessEnv;
  /** For the printer driver in a standalone run. Default: errors only, on stderr. */
  logger?: Logger;
}

const defaultIo: PrinterIo = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
  env: process.env,
};

type Values = {
  config?: string;
  url?: string;
  token?: string;
  operator?: string;
  feeder?: string;
  json?: boolean;
  "timeout-ms"?: string;
  link?: string;
  path?: string;
  host?: string;
  port?: string;
  "data-dir"?: string;
  help?: boolean;
};

type Outcome = TechnicianResult | TechnicianFailure;

export async function printerCommand(argv: string[], io: PrinterIo = defaultIo): Promise<number> {
  const usage = (problem: string): number => {
    io.err(`${problem}\n\n${PRINTER_HELP}`);
    return 2;
  };
  let values: Values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseCommandArgs(argv, OPTIONS, true) as {
      values: Values;
      positionals: string[];
    });
  } catch (err) {
    if (err instanceof UsageError) return usage(err.message);
    throw err;
  }
  if (values.help) {
    io.out(PRINTER_HELP);
    return 0;
  }
  const [name, ...extra] = positionals;
  if (!name) return usage(`a command is needed: ${TECHNICIAN_COMMANDS.join(", ")}`);
  if (!isTechnicianCommand(name)) return usage(`unknown printer command '${name}'`);
  if (extra.length > 0) return usage(`unexpected argument '${extra[0]}'`);
  const command = name;
  if (values.feeder !== undefined && command !== "test-card")
    return usage("--feeder goes with test-card only");
  let operator: string | undefined;
  try {
    operator = checkOperator(values.operator);
  } catch (err) {
    if (err instanceof TechnicianError) return usage(`--operator: ${err.message}`);
    throw err;
  }
  const timeoutMs = values["timeout-ms"] === undefined ? 120_000 : Number(values["timeout-ms"]);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0)
    return usage("--timeout-ms must be a positive whole number");
  const direct = values.link !== undefined;
  if (direct && values.config !== undefined) return usage("--link and --config do not go together");
  if (!direct && (values.path ?? values.host ?? values.port ?? values["data-dir"]) !== undefined) {
    return usage("--path, --host, --port and --data-dir go with --link (a printer without a configuration)");
  }
  const request = { command, operator, feeder: values.feeder };
  // The technician reads what to do before the printer starts, once, whichever way it runs.
  let reminded = command !== "clean" || values.json === true;
  const remind = (): void => {
    if (!reminded) io.out(CLEAN_FIRST);
    reminded = true;
  };

  // A printer named on the command line: no agent is configured for it, so no console to ask.
  if (direct) {
    const target = directTarget(values);
    if (typeof target === "string") return usage(target);
    return standalone(request, target, values, io, {
      why: "this command named the printer with --link instead of asking the agent",
      direct: true,
      remind,
    });
  }

  let config: AgentConfig | undefined;
  if (values.config !== undefined) {
    try {
      config = loadConfig(values.config, io.env);
    } catch (err) {
      if (err instanceof ConfigError) {
        io.err(err.message);
        return 1;
      }
      throw err;
    }
  }
  const fromConfig = config?.console.enabled ? consoleOf(config) : undefined;
  let url = values.url ?? fromConfig?.url;
  const token = values.token ?? io.env["KIOSK_CONSOLE_TOKEN"] ?? fromConfig?.token;
  if (config && (url === undefined || token === undefined)) {
    // The configuration has no console (or it never started and wrote no token): nothing to ask.
    return standalone(request, { printer: config.printer, dataDir: config.dataDir }, values, io, {
      why:
        url === undefined ? "the console is not enabled in the configuration" : "no console token was found",
      remind,
    });
  }
  url ??= "http://127.0.0.1:8787";
  if (!token) {
    io.err("kiosk-agent printer: no console token (--token, $KIOSK_CONSOLE_TOKEN or --config)");
    return 2;
  }
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    return usage(`--url ${url} is not a URL`);
  }

  remind();
  const asked = await askAgent(base, token, request, timeoutMs);
  if (asked.kind === "unreachable") {
    if (config && asked.code === "ECONNREFUSED") {
      return standalone(request, { printer: config.printer, dataDir: config.dataDir }, values, io, {
        why: `nothing answers at ${base.origin}`,
        remind,
      });
    }
    io.err(`kiosk-agent printer: cannot reach the agent's console at ${base.origin} (${asked.code})`);
    if (!config) io.err("  (with --config FILE the command runs standalone when no agent is running)");
    return 1;
  }
  if (asked.kind === "refused-token") {
    io.err(`kiosk-agent printer: the console at ${base.origin} refused the token (401)`);
    return 1;
  }
  if (asked.kind === "unexpected") {
    io.err(`kiosk-agent printer: unexpected answer from ${base.origin}: ${asked.detail}`);
    return 1;
  }
  return report(asked.outcome, values.json === true, io);
}

type Asked =
  | { kind: "answer"; outcome: Outcome }
  | { kind: "unreachable"; code: string }
  | { kind: "refused-token" }
  | { kind: "unexpected"; detail: string };

async function askAgent(
  base: URL,
  token: string,
  request: { command: TechnicianCommand; operator: string | undefined; feeder: string | undefined },
  timeoutMs: number,
): Promise<Asked> {
  const reading = READING_COMMANDS.has(request.command);
  const url = new URL(`/api/printer/${request.command}`, base);
  if (reading && request.operator) url.searchParams.set("operator", request.operator);
  let response: Response;
  try {
    response = await fetch(url, {
      method: reading ? "GET" : "POST",
      headers: {
        Authorization: `Bearer ${token}`,
        Accept: "application/json",
        ...(reading ? {} : { "Content-Type": "application/json" }),
      },
      ...(reading
        ? {}
        : {
            body: JSON.stringify({
              ...(request.operator ? { operator: request.operator } : {}),
              ...(request.feeder !== undefined ? { feeder: request.feeder } : {}),
            }),
          }),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    return { kind: "unreachable", code: fetchFailureCode(err) };
  }
  if (response.status === 401) return { kind: "refused-token" };
  let body: unknown;
  try {
    body = await response.json();
  } catch {
    return { kind: "unexpected", detail: `HTTP ${response.status}, not JSON` };
  }
  const outcome = body as Partial<Outcome> | null;
  if (typeof outcome?.ok !== "boolean" || outcome.command !== request.command) {
    const said = (body as { error?: unknown } | null)?.error;
    return {
      kind: "unexpected",
      detail:
        response.status === 404
          ? "HTTP 404: this agent has no printer commands (older than kiosk-agent printer?)"
          : `HTTP ${response.status}${typeof said === "string" ? `: ${said}` : ""}`,
    };
  }
  return { kind: "answer", outcome: outcome as Outcome };
}

interface StandaloneTarget {
  printer: PrinterConfig & { feeders: AgentConfig["printer"]["feeders"] };
  dataDir: string;
}

/** `--link/--path/--host/--port/--data-dir` as a printer section with the configuration's defaults. */
function directTarget(values: Values): StandaloneTarget | string {
  if (values["data-dir"] === undefined) return "--link needs --data-dir (where the audit trail is kept)";
  const port = values.port === undefined ? undefined : Number(values.port);
  const parsed = ConfigSchema.shape.printer.safeParse({
    link: values.link,
    ...(values.path !== undefined ? { path: values.path } : {}),
    ...(values.host !== undefined ? { host: values.host } : {}),
    ...(port !== undefined ? { port } : {}),
  });
  if (!parsed.success) {
    return parsed.error.issues
      .map((i) => `${i.path.length ? `--${String(i.path[0])}: ` : ""}${i.message}`)
      .join("\n");
  }
  return { printer: parsed.data, dataDir: values["data-dir"] };
}

/**
 * No agent to ask: open the printer here, unless the pid file says an agent runs (it holds the
 * printer even if its console is off or not answering). Audited into the data directory's
 * jobs.sqlite, as the agent would (WAL: safe beside a reader).
 */
async function standalone(
  request: { command: TechnicianCommand; operator: string | undefined; feeder: string | undefined },
  target: StandaloneTarget,
  values: Values,
  io: PrinterIo,
  /** `why`: why no agent was asked; `direct`: the printer came from --link (no agent was looked for). */
  context: { why: string; direct?: boolean; remind: () => void },
): Promise<number> {
  const pid = agentPidState(target.dataDir);
  if (pid.state === "alive") {
    io.err(
      `kiosk-agent printer: an agent is running (pid ${pid.pid}, ${pidFilePath(target.dataDir)}) and holds the printer, ` +
        `but ${context.why}. Run the command through the agent's console ` +
        "(console.enabled in its configuration) or stop the agent first.",
    );
    return 1;
  }
  const link = describeLink(target.printer);
  io.err(
    `kiosk-agent printer: ${context.direct ? "" : `${context.why}; `}running standalone on ${link}` +
      (pid.state === "stale" ? ` (stale pid file: process ${pid.pid} is gone)` : ""),
  );

  mkdirSync(target.dataDir, { recursive: true, mode: 0o700 });
  const db = new Database(join(target.dataDir, "jobs.sqlite"));
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.pragma("busy_timeout = 5000");
    migrate(db);
    const ledger = new StockLedger(db, systemClock);
    const router = new StockRouter(target.printer.feeders, (feeder) => ledger.lastLoadedStock(feeder));
    const logger =
      io.logger ?? createLogger({ level: "error", destination: pino.destination({ dest: 2, sync: true }) });
    const serialBinding =
      target.printer.link === "serial" ? (await import("@serialport/bindings-cpp")).autoDetect() : undefined;
    const printer = createPrinter(target.printer, {
      clock: systemClock,
      logger,
      ...(serialBinding ? { serialBinding } : {}),
    });
    context.remind();
    const outcome = await runTechnicianCommand(
      { ...request, via: "standalone" },
      {
        run: async (_command, operation) => {
          await printer.open();
          try {
            return await operation(printer);
          } finally {
            await printer.close().catch(() => undefined);
          }
        },
        feeders: target.printer.feeders.map((f) => f.id),
        stockOf: (feeder) => router.stockOf(feeder),
        ledger,
        audit: new TechnicianAudit(db, systemClock),
        link,
      },
    );
    return report(outcome, values.json === true, io);
  } finally {
    db.close();
  }
}

const CLEAN_FIRST =
  "clean: the ribbon must be out and the cleaning card in the feeder (the printer will not clean with a ribbon in)";

/** Prints the outcome; 0 when done, 1 when refused or failed. */
function report(outcome: Outcome, asJson: boolean, io: PrinterIo): number {
  if (asJson) {
    io.out(JSON.stringify(outcome, null, 2));
    return outcome.ok ? 0 : 1;
  }
  if (!outcome.ok) {
    io.err(`kiosk-agent printer ${outcome.command}: ${outcome.error} (${outcome.code})`);
    if (outcome.command === "clean" && outcome.code === "CARD_IN_PATH") {
      io.err("  is a card still in the printer, or the ribbon still in? Take it out and run clean again.");
    }
    return 1;
  }
  switch (outcome.command) {
    case "info": {
      const id = outcome.identity ?? {};
      const caps = outcome.capabilities;
      io.out(
        `printer   ${[
          id.model ?? caps?.family ?? "?",
          id.serial && `serial ${id.serial}`,
          id.firmware && `firmware ${id.firmware}`,
        ]
          .filter(Boolean)
          .join(" · ")}`,
      );
      if (caps) {
        io.out(
          `          ${[
            outcome.link,
            `family ${caps.family}`,
            `feeders ${caps.feeders.join(", ")}`,
            `sides ${caps.sides.join(", ")}`,
            caps.magstripeEncoder ? "magstripe encoder" : "",
            caps.contactStation ? "contact station" : "",
          ]
            .filter(Boolean)
            .join(" · ")}`,
        );
      }
      if (outcome.status) io.out(`status    ${statusLine(outcome.status)}`);
      if (outcome.counters) io.out(`counters  ${countersLine(outcome.counters)}`);
      return 0;
    }
    case "counters":
      io.out(`counters  ${countersLine(outcome.counters ?? {})}`);
      return 0;
    case "clean":
      io.out(outcome.message);
      if (outcome.counters) io.out(`counters  ${countersLine(outcome.counters)}`);
      return 0;
    default:
      io.out(outcome.message);
      return 0;
  }
}

function countersLine(c: PrinterCounters): string {
  const n = (v: number | undefined) => (v === undefined ? "?" : String(v));
  return `cards inserted ${n(c.cardsInserted)} · panels printed ${n(c.panelsPrinted)} · cleanings ${n(c.cleanings)}`;
}

function statusLine(s: PrinterStatus): string {
  const parts = [
    s.stopReasons.length ? `stopped: ${s.stopReasons.join(", ")}` : "ready",
    `card ${s.cardPosition}`,
    s.warnings.length ? `warnings: ${s.warnings.join(", ")}` : "",
    s.ribbon?.remaining !== undefined
      ? `ribbon ${s.ribbon.remaining}${s.ribbon.capacity !== undefined ? `/${s.ribbon.capacity}` : ""}`
      : "",
    s.feeders
      .map((f) => `feeder ${f.id} ${f.empty ? "empty" : f.nearEmpty ? "near empty" : "ok"}`)
      .join(", "),
  ];
  return parts.filter(Boolean).join(" · ");
}
