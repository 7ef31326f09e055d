import { existsSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { ConfigError, loadConfig } from "../config/load.js";
import type { AgentConfig } from "../config/schema.js";
import { redactText } from "../log/mask.js";
import { formatStockReport, stockReportJson } from "../stock/report-format.js";
import { UNSPECIFIED_STOCK } from "../stock/stock-router.js";
import { migrate } from "../store/migrations.js";
import { StockError, StockLedger } from "../store/stock-ledger.js";
import { type Clock, systemClock } from "../util/clock.js";
import { CodedError } from "../util/errors.js";
import { type CommandIo, parseOrExitCode } from "./args.js";

export const STOCK_HELP = `Usage: kiosk-agent stock <command> (--data-dir DIR | --config FILE) [options]

The card-stock ledger in DATA_DIR/jobs.sqlite (docs/stock.md). Safe while the agent runs: both
write to the same database and SQLite makes them take turns. Every write is an audit-trail row.

Commands:
  report [--since ISO] [--json]
      per feeder and stock: opening balance, loaded, issued, spoiled by reason, returned,
      adjusted, expected closing balance; and the printer's counter against the ledger
  load --feeder ID [--stock NAME] --cards N --operator NAME [--note TEXT]
      cards put into a feeder
  return --feeder ID [--stock NAME] --cards N --operator NAME [--note TEXT]
      cards taken out of a feeder, back to the vault
  adjust --feeder ID [--stock NAME] --cards -N|+N --operator NAME --note TEXT
         [--second-operator NAME]
      a difference found by counting: -3 cards missing, +2 cards found. More than
      stock.dualControlAbove cards (default 10) needs a second operator, another person
  empty-bin --bin reject|capture --cards N --operator NAME
      a bin emptied (N: the cards taken out): its count starts again
  acknowledge-counter --operator NAME --note TEXT
      the printer's counter and the ledger differ and the note says why: the live check
      counts from here; reports over a period that includes it still show the difference

Options:
  --data-dir DIR          the agent's data directory (default: dataDir of --config)
  --config FILE           the agent's configuration: its data directory, the feeders with their
                          stock (the default --stock; another stock is refused), the threshold
  --since ISO             report: movements before it make the opening balance (2026-01-31 or
                          2026-01-31T12:00:00Z); default: everything
  --json                  report: {"feeders":[{"feeder","stock","opening","loaded","issued",
                          "spoiled":{REASON:n},"returned","adjusted","expectedClosing",
                          "printerCounterDelta"}],"printer":{…}} (docs/cli.md)
  --feeder ID             the feeder (printer.feeders[].id; 1, 2 on an Evolis)
  --stock NAME            default: the feeder's configured stock, else the stock last loaded into it
  --cards N               how many cards; adjust: signed (-3, +2)
  --operator NAME         who did it (every write)
  --second-operator NAME  adjust: who confirmed it (dual control)
  --note TEXT             why (adjust and acknowledge-counter need one)

Exit codes: 0 done; 1 refused or failed (the message says why; nothing was recorded);
2 usage error.`;

const OPTIONS = {
  "data-dir": { type: "string", short: "d" },
  config: { type: "string", short: "c" },
  since: { type: "string" },
  json: { type: "boolean" },
  feeder: { type: "string" },
  stock: { type: "string" },
  cards: { type: "string" },
  operator: { type: "string" },
  "second-operator": { type: "string" },
  note: { type: "string" },
  bin: { type: "string" },
} as const;

type OptionName = keyof typeof OPTIONS;

const COMMON: readonly OptionName[] = ["data-dir", "config"];
const SUBCOMMANDS: Record<string, readonly OptionName[]> = {
  report: ["since", "json"],
  load: ["feeder", "stock", "cards", "operator", "note"],
  return: ["feeder", "stock", "cards", "operator", "note"],
  adjust: ["feeder", "stock", "cards", "operator", "note", "second-operator"],
  "empty-bin": ["bin", "cards", "operator"],
  "acknowledge-counter": ["operator", "note"],
};
const REQUIRED: Record<string, readonly OptionName[]> = {
  load: ["feeder", "cards", "operator"],
  return: ["feeder", "cards", "operator"],
  adjust: ["feeder", "cards", "operator", "note"],
  "empty-bin": ["bin", "cards", "operator"],
  "acknowledge-counter": ["operator", "note"],
};

/** At most this many cards in one movement: a typo (10000 for 100) is refused, not recorded. */
const MAX_CARDS = 100_000;

export interface StockCommandDeps extends Partial<CommandIo> {
  /** For --config's environment overrides (KIOSK_AGENT__*). */
  env?: NodeJS.ProcessEnv;
  /** The time movements are stamped with. */
  clock?: Clock;
}

/** A refusal: printed after `kiosk-agent stock SUB:`, exit 1. */
class Refused extends CodedError<"REFUSED"> {
  constructor(message: string) {
    super("REFUSED", message);
  }
}

/** A usage mistake found after parsing: printed with the help, exit 2. */
class BadUsage extends CodedError<"USAGE"> {
  constructor(message: string) {
    super("USAGE", message);
  }
}

export async function stockCommand(argv: string[], deps: StockCommandDeps = {}): Promise<number> {
  const io: CommandIo = {
    out: deps.out ?? ((t) => console.log(t)),
    err: deps.err ?? ((t) => console.error(t)),
  };
  const parsed = parseOrExitCode(joinSignedCards(argv), OPTIONS, STOCK_HELP, { allowPositionals: true, io });
  if (typeof parsed === "number") return parsed;
  const [sub, ...extra] = parsed.positionals;
  const values = parsed.values as Partial<Record<OptionName, string | boolean>>;
  let options: Options;
  try {
    options = checkUsage(sub, extra, values);
  } catch (err) {
    if (!(err instanceof BadUsage)) throw err;
    io.err(`${err.message}\n\n${STOCK_HELP}`);
    return 2;
  }
  const name = `kiosk-agent stock ${options.sub}`;

  let config: AgentConfig | undefined;
  if (options.configFile !== undefined) {
    try {
      config = loadConfig(options.configFile, deps.env ?? process.env);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      io.err(`${name}: ${err.message}`);
      return 1;
    }
  }
  const dataDir = options.dataDir ?? config?.dataDir;
  if (dataDir === undefined) {
    io.err(`${name}: which data directory? --data-dir DIR or --config FILE\n\n${STOCK_HELP}`);
    return 2;
  }

  let db: Database.Database | undefined;
  try {
    db = openJobDatabase(dataDir);
    const ledger = new StockLedger(db, deps.clock ?? systemClock, {
      ...(config ? { dualControlAbove: config.stock.dualControlAbove } : {}),
    });
    run(options, ledger, config, io);
    return 0;
  } catch (err) {
    if (err instanceof Refused) {
      io.err(`${name}: ${err.message}`);
      return 1;
    }
    if (err instanceof StockError) {
      const hint =
        err.code === "DUAL_CONTROL_REQUIRED"
          ? "\n  give --second-operator NAME: another person than --operator, who checked the count"
          : "";
      io.err(`${name}: refused: ${err.message}${hint}\nNothing was recorded.`);
      return 1;
    }
    if (err instanceof Database.SqliteError) {
      // SQLITE_BUSY after the busy timeout, a read-only file, a full disk: the write did not happen.
      io.err(`${name}: the job database refused the operation (${err.code}): ${err.message}`);
      return 1;
    }
    throw err;
  } finally {
    db?.close();
  }
}

interface Options {
  sub: string;
  dataDir?: string;
  configFile?: string;
  since?: string;
  json: boolean;
  feeder?: string;
  stock?: string;
  cards?: number;
  operator?: string;
  secondOperator?: string;
  note?: string;
  bin?: "reject" | "capture";
}

function checkUsage(
  sub: string | undefined,
  extra: string[],
  values: Partial<Record<OptionName, string | boolean>>,
): Options {
  if (sub === undefined)
    throw new BadUsage("which stock command? report, load, return, adjust, empty-bin, acknowledge-counter");
  const allowed = SUBCOMMANDS[sub];
  if (!allowed) throw new BadUsage(`unknown stock command '${sub}'`);
  if (extra.length > 0) throw new BadUsage(`unexpected argument '${extra[0]}'`);
  for (const key of Object.keys(values) as OptionName[]) {
    if (key === ("help" as OptionName) || values[key] === undefined) continue;
    if (!COMMON.includes(key) && !allowed.includes(key)) {
      throw new BadUsage(`--${key} does not go with 'stock ${sub}'`);
    }
  }
  for (const key of REQUIRED[sub] ?? []) {
    if (values[key] === undefined) throw new BadUsage(`stock ${sub} needs --${key}`);
  }
  const text = (key: OptionName): string | undefined => {
    const v = values[key];
    return typeof v === "string" ? v : undefined;
  };
  const options: Options = { sub, json: values.json === true };
  const dataDir = text("data-dir");
  if (dataDir !== undefined) options.dataDir = nonEmpty(dataDir, "--data-dir");
  const configFile = text("config");
  if (configFile !== undefined) options.configFile = nonEmpty(configFile, "--config");

  const since = text("since");
  if (since !== undefined) {
    const t = Date.parse(since);
    if (Number.isNaN(t)) {
      throw new BadUsage("--since must be an ISO date or time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)");
    }
    options.since = new Date(t).toISOString();
  }
  const feeder = text("feeder");
  if (feeder !== undefined) {
    if (!/^[A-Za-z0-9]{1,8}$/.test(feeder))
      throw new BadUsage("--feeder is a feeder id: 1–8 letters or digits");
    options.feeder = feeder;
  }
  const stock = text("stock");
  if (stock !== undefined) options.stock = freeText(stock, "--stock", 64);
  const operator = text("operator");
  if (operator !== undefined) options.operator = freeText(operator, "--operator", 64);
  const second = text("second-operator");
  if (second !== undefined) options.secondOperator = freeText(second, "--second-operator", 64);
  const note = text("note");
  if (note !== undefined) options.note = freeText(note, "--note", 500);
  const bin = text("bin");
  if (bin !== undefined) {
    if (bin !== "reject" && bin !== "capture") throw new BadUsage("--bin is reject or capture");
    options.bin = bin;
  }
  const cards = text("cards");
  if (cards !== undefined) options.cards = parseCards(cards, sub);
  return options;
}

/**
 * node's parseArgs reads `--cards -3` as a missing value followed by an unknown option `-3`: join a
 * signed number to its option, as `--cards=-3` would be written.
 */
function joinSignedCards(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const next = argv[i + 1];
    if (argv[i] === "--cards" && next !== undefined && /^[+-]\d+$/.test(next)) {
      out.push(`--cards=${next}`);
      i++;
    } else {
      out.push(argv[i]!);
    }
  }
  return out;
}

function parseCards(value: string, sub: string): number {
  if (sub === "adjust") {
    // A sign, always: an adjustment of "3" could mean either way, and a wrong guess is a wrong ledger.
    if (!/^[+-]\d+$/.test(value)) {
      throw new BadUsage("--cards for an adjustment is signed: -3 (cards missing) or +2 (cards found)");
    }
    const n = Number(value);
    if (n === 0 || Math.abs(n) > MAX_CARDS) {
      throw new BadUsage(`--cards for an adjustment is -${MAX_CARDS}…-1 or +1…+${MAX_CARDS}`);
    }
    return n;
  }
  const min = sub === "empty-bin" ? 0 : 1;
  const n = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!(n >= min && n <= MAX_CARDS))
    throw new BadUsage(`--cards is a whole number from ${min} to ${MAX_CARDS}`);
  return n;
}

function nonEmpty(value: string, option: string): string {
  if (value.trim() === "") throw new BadUsage(`${option} is empty`);
  return value;
}

/** A name or note: one line, bounded, and never card data (the ledger and audit trail keep it). */
function freeText(value: string, option: string, max: number): string {
  const t = value.trim();
  if (t === "") throw new BadUsage(`${option} is empty`);
  if (t.length > max) throw new BadUsage(`${option} is longer than ${max} characters`);
  if (/[\u0000-\u001f\u007f]/.test(t)) throw new BadUsage(`${option} must be one line of text`);
  if (redactText(t) !== t) {
    throw new BadUsage(`${option} looks like it holds card data (a card number or a track): leave it out`);
  }
  return t;
}

/**
 * The job database of a data directory, never created here (a wrong --data-dir must not leave an
 * empty database behind), migrated to the schema this build knows, with a busy timeout so a write
 * waits its turn behind the running agent's transactions instead of failing.
 */
function openJobDatabase(dataDir: string): Database.Database {
  const file = join(dataDir, "jobs.sqlite");
  if (!existsSync(file)) {
    throw new Refused(
      `no job database in ${dataDir} (jobs.sqlite): is the data directory right? The agent creates it at its first start`,
    );
  }
  const db = new Database(file, { fileMustExist: true });
  try {
    db.pragma("busy_timeout = 5000");
    db.pragma("journal_mode = WAL");
    // A technician's record is as durable as a job's state change.
    db.pragma("synchronous = FULL");
    migrate(db);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

function run(o: Options, ledger: StockLedger, config: AgentConfig | undefined, io: CommandIo): void {
  switch (o.sub) {
    case "report": {
      const feeders = config?.printer.feeders;
      const report = ledger.report({
        ...(o.since !== undefined ? { since: o.since } : {}),
        ...(feeders
          ? {
              singleFeeder: feeders.length === 1,
              include: feeders.map((f) => ({
                feeder: f.id,
                stock: f.stock ?? ledger.lastLoadedStock(f.id) ?? UNSPECIFIED_STOCK,
              })),
            }
          : {}),
      });
      io.out(o.json ? JSON.stringify(stockReportJson(report), null, 2) : formatStockReport(report));
      return;
    }
    case "load":
    case "return":
    case "adjust": {
      const feeder = o.feeder!;
      const stock = stockFor(o, ledger, config);
      const before = balanceOf(ledger, feeder, stock);
      if (o.sub === "adjust") {
        ledger.adjust({
          feeder,
          stock,
          cards: o.cards!,
          operator: o.operator!,
          note: o.note!,
          ...(o.secondOperator !== undefined ? { secondOperator: o.secondOperator } : {}),
        });
      } else {
        ledger.record({
          feeder,
          stock,
          kind: o.sub === "load" ? "loaded" : "returned",
          quantity: o.cards!,
          operator: o.operator!,
          ...(o.note !== undefined ? { note: o.note } : {}),
        });
      }
      const after = balanceOf(ledger, feeder, stock);
      const what =
        o.sub === "load"
          ? `loaded ${cards(o.cards!)}`
          : o.sub === "return"
            ? `returned ${cards(o.cards!)} to the vault`
            : `adjusted by ${o.cards! > 0 ? "+" : ""}${o.cards} card${Math.abs(o.cards!) === 1 ? "" : "s"}`;
      const who = o.secondOperator ? `${o.operator}, confirmed by ${o.secondOperator}` : o.operator;
      io.out(`feeder ${feeder} (${stock}): ${what}, by ${who}. Ledger balance ${before} → ${after}.`);
      if (after < 0) {
        io.out(
          `The ledger's balance is negative: count the cards in feeder ${feeder} and record an adjustment (kiosk-agent stock adjust).`,
        );
      }
      return;
    }
    case "empty-bin": {
      ledger.binEmptied(o.bin!, o.cards!, o.operator!);
      const bin = o.bin === "reject" ? "reject box" : "capture bin";
      io.out(`${bin} emptied: ${cards(o.cards!)} taken out, by ${o.operator}. Its count starts again now.`);
      return;
    }
    case "acknowledge-counter": {
      const before = ledger.counterCheck();
      if (!ledger.acknowledgeCounter(o.operator!, o.note!)) {
        throw new Refused(
          "no reading of the printer's counter recorded yet: nothing to acknowledge (the agent reads it at start and after every card)",
        );
      }
      const mismatch = before?.mismatch ?? 0;
      io.out(
        mismatch === 0
          ? `acknowledged by ${o.operator}: the printer's counter and the ledger agreed; the note is recorded.`
          : `acknowledged by ${o.operator}: a difference of ${mismatch > 0 ? "+" : ""}${mismatch} (the printer counted ${before!.counterDelta}, the ledger ${before!.ledgerFed}); the live check counts from here. Reports over a period that includes it still show it.`,
      );
      return;
    }
  }
}

/**
 * The stock a movement is counted under: --stock, else the feeder's configured stock, else (for a
 * return or an adjustment) what the agent counts the feeder's cards as. With --config, the feeder
 * must be configured, and a load of another stock than the configured one is refused: the agent
 * would keep routing that stock's jobs elsewhere and count this feeder's cards wrongly.
 */
function stockFor(o: Options, ledger: StockLedger, config: AgentConfig | undefined): string {
  const feeder = o.feeder!;
  const configured = config?.printer.feeders.find((f) => f.id === feeder);
  if (config && !configured) {
    const ids = config.printer.feeders.map((f) => f.id).join(", ");
    throw new Refused(
      `feeder ${feeder} is not in the configuration (printer.feeders: ${ids}); nothing was recorded`,
    );
  }
  if (
    o.sub === "load" &&
    o.stock !== undefined &&
    configured?.stock !== undefined &&
    o.stock !== configured.stock
  ) {
    const other = config!.printer.feeders.find((f) => f.stock === o.stock);
    throw new Refused(
      `feeder ${feeder} is configured for ${configured.stock}, not ${o.stock}: the load is refused. ` +
        (other
          ? `${o.stock} goes into feeder ${other.id}.`
          : `To change the feeder's stock, change printer.feeders in the configuration first.`) +
        " Nothing was recorded.",
    );
  }
  const stock = o.stock ?? configured?.stock ?? ledger.lastLoadedStock(feeder);
  if (stock !== undefined) return stock;
  if (o.sub === "load") {
    throw new Refused(
      `feeder ${feeder} has no configured stock and was never loaded: say which stock with --stock NAME; nothing was recorded`,
    );
  }
  return UNSPECIFIED_STOCK;
}

function balanceOf(ledger: StockLedger, feeder: string, stock: string): number {
  return ledger.balances().find((b) => b.feeder === feeder && b.stock === stock)?.cards ?? 0;
}

function cards(n: number): string {
  return `${n} card${n === 1 ? "" : "s"}`;
}
