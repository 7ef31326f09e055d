import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pino } from "pino";
import { CHIP_FAULTS, type ChipMode, type ChipRig, startChipRig } from "../../simulator/chip/chip-rig.js";
import { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import { FAULT_RULES, type PrinterFaultName } from "../../simulator/printer/faults.js";
import { attachVirtualPrinter } from "../../simulator/printer/index.js";
import { VirtualSerialBinding } from "../../simulator/serial/virtual-binding.js";
import { KioskAgent } from "../agent.js";
import { parseConfig } from "../config/load.js";
import { demoTools } from "../console/demo-tools.js";
import { generateStationKeyPair, loadPublicKey } from "../crypto/jwe.js";
import type { Operation } from "../d1/operation.js";
import { makeSampleJob, SAMPLE_STOCK } from "../jobs/sample-jobs.js";
import { createLogger } from "../log/logger.js";
import { parseCommandArgs, UsageError } from "./args.js";
import { readJobsFile, shortId as short } from "./jobs-file.js";

const PRINTER_FAULT_NAMES = Object.keys(FAULT_RULES) as PrinterFaultName[];

const HELP = `Usage: npm run demo -- [options]

Starts the D1 emulator, the simulated printer and the agent (real WebSocket, real serialport code
path over a virtual port, real SQLite file), pushes jobs, prints each status D1 receives, and exits 0
once every accepted job has reached a terminal status.

Options:
  --jobs N            push N generated sample jobs (default 5)
  --jobs-file FILE    push the jobs in FILE (a JSON array of production jobs) instead
  --record FILE       write every operation object D1 received, one JSON object per line
  --data-dir DIR      keep the agent's and simulator's files under DIR (default: a new temp dir)
  --station ID        the agent's persoStation id (default KIOSK-PS-101)
  --take-after-ms MS  the simulated cardholder takes a presented card after MS (default 300)
  --timeout-sec S     give up (exit 1) if jobs are still open after S seconds (default 120)
  --log-level LEVEL   agent log level written to DATA_DIR/agent.log (default info)
  --fault NAME        inject a printer fault on every card: ${PRINTER_FAULT_NAMES.join(", ")}
  --fault-count N     inject it on the first N cards only, then it clears
  --not-taken N       the simulated cardholder walks away from the next N presented cards (besides
                      --fault): each is captured after its collect timeout (CB_TIME)
  --stocks A[,B]      the card stocks in feeder 1 (and feeder 2): sample jobs alternate between them
                      (default DEBIT-CLASSIC, the sample jobs' stock); see docs/stock.md
  --feeder-cards N    blanks in each simulated feeder at start (default 100); the demo records that
                      load in the stock ledger, as a technician would
                      chip faults (jobs then carry chip APDUs): ${Object.keys(CHIP_FAULTS).join(", ")}
  --chip MODE         jobs carry chip APDUs, run by: inproc (the card model in-process) or pcsc
                      (real pcscd + vpcd, installed and started if needed, stopped after)
  --previews DIR      write a PNG of every printed card side into DIR (card-001-front.png, …);
                      sensitive print lines (PAN, CSC) are masked
  --previews-unmasked write the previews exactly as printed, sensitive lines included
  --console-port N    the local web console's port on 127.0.0.1 (default 0: any free port);
                      the demo prints its URL and token
  --hold              keep running after the jobs end (console, emulator, printer) until Ctrl-C
  --encrypt           D1 sends production data encrypted to a station key made in DATA_DIR/keys
                      (JWE; the agent then requires it; docs/security.md)`;

const OPTIONS = {
  jobs: { type: "string" },
  "jobs-file": { type: "string" },
  record: { type: "string" },
  "data-dir": { type: "string" },
  station: { type: "string" },
  "take-after-ms": { type: "string" },
  "timeout-sec": { type: "string" },
  "log-level": { type: "string" },
  fault: { type: "string" },
  "fault-count": { type: "string" },
  "not-taken": { type: "string" },
  stocks: { type: "string" },
  "feeder-cards": { type: "string" },
  chip: { type: "string" },
  previews: { type: "string" },
  "previews-unmasked": { type: "boolean" },
  "console-port": { type: "string" },
  hold: { type: "boolean" },
  encrypt: { type: "boolean" },
} as const;

export async function demoCommand(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseCommandArgs(argv, OPTIONS));
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${err.message}\n\n${HELP}`);
      return 2;
    }
    throw err;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const str = (k: string): string | undefined =>
    typeof values[k] === "string" ? (values[k] as string) : undefined;
  const int = (k: string, d: number): number => {
    const v = str(k);
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${k} must be a whole number`);
    return n;
  };
  try {
    return await runDemo({
      jobs: int("jobs", 5),
      jobsFile: str("jobs-file"),
      record: str("record"),
      dataDir: str("data-dir"),
      station: str("station") ?? "KIOSK-PS-101",
      takeAfterMs: int("take-after-ms", 300),
      timeoutSec: int("timeout-sec", 120),
      logLevel: str("log-level") ?? "info",
      fault: parseFault(str("fault")),
      chipFault: parseChipFault(str("fault")),
      chip: parseChipMode(str("chip")),
      faultCount: str("fault-count") === undefined ? undefined : int("fault-count", 1),
      notTaken: int("not-taken", 0),
      stocks: parseStocks(str("stocks")),
      feederCards: int("feeder-cards", 100),
      previews: str("previews"),
      previewsUnmasked: values["previews-unmasked"] === true,
      consolePort: int("console-port", 0),
      hold: values.hold === true,
      encrypt: values.encrypt === true,
    });
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${err.message}\n\n${HELP}`);
      return 2;
    }
    throw err;
  }
}

export interface DemoOptions {
  jobs: number;
  jobsFile?: string;
  record?: string;
  dataDir?: string;
  station: string;
  takeAfterMs: number;
  timeoutSec: number;
  logLevel: string;
  fault?: PrinterFaultName;
  /** Cards the fault hits; undefined = every card. */
  faultCount?: number;
  /** The next N presented cards are never taken. */
  notTaken?: number;
  /** The stocks of feeder 1 (and 2). Default ["DEBIT-CLASSIC"]. */
  stocks?: string[];
  /** Blanks in each simulated feeder at start. Default 100. */
  feederCards?: number;
  /** Jobs carry chip APDUs, run in-process or through pcscd + vpcd. */
  chip?: ChipMode;
  /** A `--fault chip-*` name (see CHIP_FAULTS). */
  chipFault?: string;
  /** Directory for card preview PNGs. */
  previews?: string;
  previewsUnmasked?: boolean;
  /** 0 = ephemeral. */
  consolePort?: number;
  /** Keep running after the jobs end, until SIGINT / SIGTERM. */
  hold?: boolean;
  /** D1 encrypts production data to a station key pair made in DATA_DIR/keys (JWE). */
  encrypt?: boolean;
  /**
   * Called once every accepted job has ended, before anything is stopped: tests read the live
   * files (the SQLite WAL included) here.
   */
  onJobsEnded?: (ctx: { dataDir: string; agent: KioskAgent; emulator: D1Emulator }) => void | Promise<void>;
}

export async function runDemo(o: DemoOptions): Promise<number> {
  const dataDir = resolve(o.dataDir ?? mkdtempSync(join(tmpdir(), "kiosk-demo-")));
  mkdirSync(dataDir, { recursive: true });
  const recordFile = o.record ? resolve(o.record) : undefined;
  if (recordFile) writeFileSync(recordFile, "");
  const withChip = o.chip !== undefined || o.chipFault !== undefined;
  const stocks = o.stocks ?? [SAMPLE_STOCK];
  const jobs = o.jobsFile ? readJobsFile(o.jobsFile) : sampleJobs(o.jobs, o.station, withChip, stocks);
  const feederCards = o.feederCards ?? 100;
  const feeders = stocks.map((stock, i) => ({ id: String(i + 1), stock }));

  const logFile = join(dataDir, "agent.log");
  const logger = createLogger({
    level: o.logLevel,
    destination: pino.destination({ dest: logFile, sync: true }),
  });
  const token = randomBytes(16).toString("hex");
  const keys = o.encrypt ? await generateStationKeyPair(join(dataDir, "keys"), { force: true }) : undefined;
  const emulator = new D1Emulator({
    token,
    recordFile,
    logger,
    ...(keys ? { stationPublicKey: loadPublicKey(keys.publicKeyFile) } : {}),
  });
  const { url } = await emulator.start();

  const binding = new VirtualSerialBinding();
  const printerPath = "/dev/ttyVIRT0";
  // A few milliseconds per command and a visible print time, so `slow` and timeouts mean something.
  const printer = attachVirtualPrinter(binding, printerPath, {
    takeAfterMs: o.takeAfterMs,
    latency: { commandMs: 2, printMs: 150, magMs: 30 },
    feeders: Object.fromEntries(feeders.map((f) => [f.id, feederCards])),
  });
  if (o.notTaken) printer.injectFault("not-taken", { count: o.notTaken });
  if (o.fault) {
    printer.injectFault(o.fault, {
      ...(o.faultCount === undefined ? { persistent: true } : { count: o.faultCount }),
      replugAfterMs: 300,
    });
  }
  let chip: ChipRig;
  try {
    chip = await startChipRig({
      mode: o.chip ?? "inproc",
      logDir: dataDir,
      fault: o.chipFault ? CHIP_FAULTS[o.chipFault] : undefined,
      faultCount: o.faultCount,
      logger,
      onProgress: (line) => console.log(`  ${line}`),
    });
  } catch (err) {
    await emulator.stop();
    console.error(`demo: the chip reader could not start: ${(err as Error).message}`);
    return 1;
  }
  chip.followPrinter(printer);
  const tools = demoTools({
    printer,
    emulator,
    station: o.station,
    previewsDir: o.previews ? resolve(o.previews) : undefined,
    previewsUnmasked: o.previewsUnmasked,
  });

  const config = parseConfig({
    station: { id: o.station },
    d1: { url, token, allowInsecure: true, backoff: { initialMs: 200, maxMs: 2000 } },
    dataDir,
    // Short bounds so that every fault plays out in seconds: a technician watches this.
    printer: {
      path: printerPath,
      timeouts: { defaultMs: 1000, printMs: 10_000, magMs: 2000 },
      statusPollMs: 200,
      feeders,
    },
    production: { defaultCollectTimeoutSec: 5, holdWhileStoppedSec: 5 },
    log: { level: o.logLevel },
    console: tools.consoleConfig(o.consolePort ?? 0),
    ...(keys ? { jwe: { privateKeyFile: keys.privateKeyFile, required: true } } : {}),
  });
  const agent = new KioskAgent(config, {
    logger,
    serialBinding: binding,
    chip: chip.transport,
    simulator: tools.simulator,
  });
  tools.attach(agent);
  recordDemoLoads(agent, feeders, feederCards);

  console.log(`kiosk-agent demo: station ${o.station}, D1 emulator ${url}, data dir ${dataDir}`);
  console.log(`  agent log: ${logFile}${recordFile ? `\n  D1 record: ${recordFile}` : ""}`);
  // Elapsed time on the monotonic clock: a wall-clock step must not make the stamps jump.
  const started = performance.now();
  const stamp = () => `${((performance.now() - started) / 1000).toFixed(2).padStart(7)}s`;
  emulator.on("operation", (op: Operation) => console.log(`${stamp()}  D1 <- ${describeOperation(op)}`));

  agent.start();
  for (const line of await tools.announce(agent)) console.log(line);
  if (o.previewsUnmasked)
    console.log("  previews: UNMASKED (--previews-unmasked): the files show full card data");
  try {
    await emulator.waitForConnection(o.station, 15_000);
    const accepted: string[] = [];
    let refused = 0;
    for (const job of jobs) {
      const answer = await emulator.push(job, { station: o.station });
      const id = answer.operationId ?? "(no operationId)";
      if (answer.result === "accepted") {
        accepted.push(id);
        console.log(`${stamp()}  push ${short(id)} accepted${answer.duplicate ? " (duplicate)" : ""}`);
      } else {
        refused++;
        console.log(`${stamp()}  push ${short(id)} REFUSED ${answer.errorCode} (${answer.error})`);
      }
    }
    const open = () => [...new Set(accepted)].filter((id) => emulator.terminalCount(id) === 0);
    try {
      await emulator.waitFor(() => open().length === 0, o.timeoutSec * 1000);
    } catch {
      console.error(
        `demo: ${open().length} job(s) still open after ${o.timeoutSec}s: ${open().map(short).join(", ")}`,
      );
      if (o.hold) await holdOn(tools);
      return 1;
    }
    await o.onJobsEnded?.({ dataDir, agent, emulator });
    printSummary(emulator, [...new Set(accepted)], refused);
    console.log(`\ncard stock: node bin/kiosk-agent.mjs stock report --data-dir ${dataDir} [--json]`);
    const previewFiles = await tools.finish();
    if (o.previews) console.log(`\npreviews: ${previewFiles.length} file(s) in ${o.previews}`);
    for (const f of previewFiles) console.log(`  ${f}`);
    writeFileSync(join(dataDir, "simulator-cards.json"), JSON.stringify(printer.cardsForRecord(), null, 2));
    if (withChip) {
      console.log(`\nchip (${chip.mode}):`);
      for (const line of chip.summary()) console.log(`  ${line}`);
      writeFileSync(join(dataDir, "simulator-chip-cards.json"), JSON.stringify(chip.card.records, null, 2));
    }
    if (o.hold) await holdOn(tools);
    return 0;
  } finally {
    tools.close();
    await agent.stop();
    await chip.close();
    await emulator.stop();
    logger.flush();
  }
}

async function holdOn(tools: ReturnType<typeof demoTools>): Promise<void> {
  console.log("\nholding: the console, the emulator and the printer stay up; Ctrl-C to stop");
  await tools.hold();
  // Previews of cards made while holding (console buttons) are written too.
  await tools.finish();
}

function printSummary(emulator: D1Emulator, accepted: string[], refused: number): void {
  const finals = new Map<string, number>();
  for (const id of accepted) {
    const op = emulator.latest(id);
    const key = op ? `${op.details.status}${op.details.reason ? `/${op.details.reason}` : ""}` : "none";
    finals.set(key, (finals.get(key) ?? 0) + 1);
  }
  console.log(`\nsummary: ${accepted.length} accepted, ${refused} refused`);
  for (const [status, n] of [...finals].sort()) console.log(`  ${String(n).padStart(4)} × ${status}`);
}

function describeOperation(op: Operation): string {
  const extra = [
    op.details.reason ? `reason=${op.details.reason}` : "",
    op.errorCode ? `errorCode=${op.errorCode}` : "",
    op.error ? `error=${op.error}` : "",
    op.endTime ? `endTime=${op.endTime}` : "",
  ]
    .filter(Boolean)
    .join(" ");
  return `${short(op.operationId)}  ${op.details.status.padEnd(20)} ${op.status.padEnd(10)} ${extra}`;
}

function sampleJobs(n: number, station: string, withChip: boolean, stocks: string[]): unknown[] {
  const runId = randomBytes(4).toString("hex");
  return Array.from({ length: n }, (_, i) => {
    const job = makeSampleJob(i, { station, runId, collectTimeoutSec: 5, withChip });
    job.productionData.cardStock = stocks[i % stocks.length];
    return job;
  });
}

/**
 * The simulated feeders start full; the demo records that in the ledger as a technician would
 * (`kiosk-agent stock load`), topping up a reused data directory's balance to what is in them.
 */
function recordDemoLoads(
  agent: KioskAgent,
  feeders: Array<{ id: string; stock: string }>,
  cards: number,
): void {
  const balances = agent.store.stock.balances();
  for (const f of feeders) {
    const have = balances.find((b) => b.feeder === f.id && b.stock === f.stock)?.cards ?? 0;
    if (cards - have <= 0) continue;
    agent.store.stock.record({
      feeder: f.id,
      stock: f.stock,
      kind: "loaded",
      quantity: cards - have,
      operator: "demo",
      note: "the simulated feeder at start",
    });
  }
}

function parseStocks(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const stocks = value.split(",").map((s) => s.trim());
  if (stocks.length < 1 || stocks.length > 2 || stocks.some((s) => !/^[A-Za-z0-9._-]{1,64}$/.test(s))) {
    throw new UsageError("--stocks takes one or two stock names (letters, digits, . _ -), comma-separated");
  }
  if (new Set(stocks).size !== stocks.length) throw new UsageError("--stocks: each stock once");
  return stocks;
}

function parseFault(name: string | undefined): PrinterFaultName | undefined {
  if (name === undefined || name in CHIP_FAULTS) return undefined;
  if (!(PRINTER_FAULT_NAMES as readonly string[]).includes(name)) {
    const all = [...PRINTER_FAULT_NAMES, ...Object.keys(CHIP_FAULTS)];
    throw new UsageError(`--fault must be one of: ${all.join(", ")}`);
  }
  return name as PrinterFaultName;
}

function parseChipFault(name: string | undefined): string | undefined {
  return name !== undefined && name in CHIP_FAULTS ? name : undefined;
}

function parseChipMode(mode: string | undefined): ChipMode | undefined {
  if (mode === undefined || mode === "pcsc" || mode === "inproc") return mode;
  throw new UsageError("--chip must be pcsc or inproc");
}
