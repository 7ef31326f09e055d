import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { parseArgs } from "node:util";
import Database from "better-sqlite3";
import type { AgentConfigInput } from "../../agent/config/schema.js";
import type { ProductionJob } from "../../agent/jobs/production-job.js";
import { makeSampleJob } from "../../agent/jobs/sample-jobs.js";
import { EVOLIS_PRINT_AREA } from "../../drivers/printer/evolis/panel.js";
import { renderCardImage } from "../../drivers/printer/raster/render.js";
import { D1Emulator } from "../d1-emulator/emulator.js";
import {
  type CardRecord,
  type PrinterLatency,
  VirtualEvolisPrinter,
} from "../printer/virtual-evolis-printer.js";
import { PtyDevice } from "../pty/pty-device.js";
import { AgentProcess } from "./agent-process.js";
import {
  checkRun,
  type LedgerInput,
  type LedgerVerdict,
  type RecordedOperation,
  type Verdict,
} from "./checks.js";
import { LazyFs, LazyFsError, lazyFsAvailability } from "./lazyfs.js";
import {
  type CutRecord,
  inspectStoreAfterCut,
  powerLossFailed,
  powerLossSummary,
  type StoreAfterCut,
  unsyncedByKind,
} from "./power-loss.js";
import { Random } from "./random.js";

const USAGE = `Usage: npm run crash -- [--iterations N] [--seed S] [--keep] [--verbose] [--lenient] [--standby N]
       npm run crash:powerloss -- [the same] [--episodes E]   (= npm run crash -- --powerloss …)

Runs the real agent (node bin/kiosk-agent.mjs run) as a child process against the D1 emulator and the
virtual printer on a pseudo-terminal, SIGKILLs it N times at chosen moments, restarts it, drains, and
checks D1's record and the printer's card record. docs/crash-harness.md explains the checks.

  --iterations N  kill/restart cycles (default 20)
  --seed S        replays a run's plan (default: time-based, printed)
  --keep          keep the temp dir (agent logs, D1 record, card record, verdict); kept anyway
                  when a check finds anything
  --verbose       one progress line per kill on stderr
  --lenient       fail only on lost / duplicateCards / orderViolations and the card-stock ledger's
                  missing / double / multiple movements; by default the run also fails on outcome
                  or cancel mismatches (a status that contradicts where the card went), unmatched
                  cards, protocol violations, events left in the outbox, jobs left open, a card left
                  in the printer, an agent that did not stop cleanly, exited or did not start by
                  itself, and any other ledger discrepancy (ledger.discrepancies)
  --standby N     agents loading ahead while the current one runs (default 2)
  --powerloss     run the data directory on LazyFS and cut the power at every kill: every write
                  not fsynced is dropped before the next start (scripts/powerloss/build-lazyfs.sh
                  builds LazyFS; npm run crash:powerloss does it first). The run is split into
                  episodes, each from an empty data directory whose first start is cut early (a
                  first-boot cut); it also fails on a store that is not intact after a cut, an
                  accepted job or a status D1 received missing after a cut, and an agent that does
                  not start again after one (failedRestarts)
  --episodes E    power-loss mode: fresh data directories in the run (default: one per 10
                  iterations, at least 1)

The last line of stdout is one JSON object; exit code 1 if lost, duplicateCards, orderViolations or
the ledger's missing / double is not 0 (2: usage, 3: the harness itself failed).`;

const STATION = "KIOSK-PS-101";
/** Consecutive agents that die while loading before the run is given up (the tree is broken). */
const MAX_START_FAILURES = 5;
const OTHER_STATION = "KIOSK-PS-999";

type JobKind = "normal" | "no-show" | "data-exception";

interface JobInfo {
  index: number;
  operationId: string;
  job: ProductionJob;
  kind: JobKind;
  /** The data directory (power-loss episode) it was pushed to: a later one's store never saw it. */
  episode: number;
  track2Sha?: string;
  pushes: number;
  /** D1 got an `accepted` push-result for it. */
  answered: boolean;
  refused: boolean;
}

/** Where the harness aims a kill. */
type Target =
  | "insert"
  | "print"
  | "encode"
  | "present"
  | "collect"
  | "retract"
  | "recovery"
  | "event"
  | "push"
  | "random"
  | "startup"
  // Power-loss mode only, the first kill of an episode (an empty data directory): during the
  // agent's first start, right after the first push, right after the first `accepted`.
  | "boot"
  | "first-push"
  | "first-accept";

/** The first-boot targets, drawn for the first kill of each power-loss episode. */
const FIRST_BOOT_TARGETS: readonly Target[] = ["boot", "first-push", "first-accept"];
/**
 * How long after its config a `boot` kill may come: a first start (data directory, key, store and
 * its migrations, the D1 link) says hello in about 50–150 ms, so these land inside it, most of them
 * before the store has its identity.
 */
const BOOT_WINDOW_MS = 100;

const TARGET_WEIGHTS: Readonly<Record<Exclude<Target, "boot" | "first-push" | "first-accept">, number>> = {
  insert: 11,
  print: 13,
  encode: 13,
  present: 11,
  collect: 10,
  retract: 3,
  recovery: 9,
  event: 11,
  push: 7,
  random: 8,
  startup: 4,
};

/**
 * Where the running agent is, as far as its printer commands alone tell. `Rse;b`, `Sib`, `Ser`,
 * `Rlr;p` and the start-up settings are each sent in more than one place (status reads, recovery,
 * rejects, the open and, behind a serial link, before every `Si`), so a command name alone does not
 * say which step sent it.
 */
interface CommandContext {
  /** The agent has opened the printer: its identity reads (`Rtp Rsn Rfv`) came after the settings. */
  opened: boolean;
  /**
   * Before this command: `presented` right after `Se>mouth`; `collect` once presentCard's `Rlr;p`
   * followed and while only `Rse;b` (the take poll) follows; `capture` right after a `Sib` sent from
   * there (the capture of an untaken card: `Rse;b`, `Sib`, `Ser`); `other` otherwise.
   */
  flow: "other" | "presented" | "collect" | "capture";
}

/** The print step (`printSides`): `Pneab;A;0 Pr;k Ss`, `Sr Dbc`, `Sv Dbc`, `Se`. */
const PRINT_COMMANDS: ReadonlySet<string> = new Set([
  "Pneab;A;0",
  "Pr;k",
  "Ss",
  "Sr",
  "Sv",
  "Db",
  "Dbc",
  "Se",
]);
/** The encode step: `Pmc`, `Dm` per track, `Smw`, per track `Smr;n` (+ `Rmb;n`). */
const ENCODE_COMMANDS: ReadonlySet<string> = new Set([
  "Pmc;h",
  "Pmc;l",
  "Dm",
  "Smw",
  "Smr;1",
  "Smr;2",
  "Smr;3",
  "Rmb;1",
  "Rmb;2",
  "Rmb;3",
]);

/**
 * Printer commands that mark each target, and how many of them a kill may wait for: the kill comes
 * after the n-th command that counts, n drawn from 1..span. The sample jobs print both sides and
 * write tracks 1 and 2, so print and encode have 8 commands each.
 */
const COMMAND_TARGETS: Partial<
  Record<Target, { counts: (name: string, context: CommandContext) => boolean; span: number }>
> = {
  // The last start-up setting re-sent before the card (serial link; PRODUCING, no card yet), then
  // `Si`; for the first and the second job of the batch.
  insert: { counts: (name, c) => c.opened && (name === "Pbc;A;D" || name === "Si"), span: 4 },
  print: { counts: (name) => PRINT_COMMANDS.has(name), span: 8 },
  encode: { counts: (name) => ENCODE_COMMANDS.has(name), span: 8 },
  present: {
    counts: (name, c) =>
      name === "Pneab;A;1" || name === "Se>mouth" || (name === "Rlr;p" && c.flow === "presented"),
    span: 3,
  },
  // The take poll: the first read usually still sees the card, the second usually the empty mouth.
  collect: { counts: (name, c) => name === "Rse;b" && c.flow === "collect", span: 2 },
  // The capture of an untaken card (CB_TIME): `Sib` (back inside), `Ser` (into the reject box).
  retract: {
    counts: (name, c) => (name === "Sib" && c.flow === "collect") || (name === "Ser" && c.flow === "capture"),
    span: 2,
  },
  // Any command after the open: recovery's status read (9 reads), then its `Ser`, or the capture
  // `Rse;b Sib Ser` of a card left in the mouth, and its commit.
  recovery: { counts: (_name, c) => c.opened, span: 12 },
};

/** A command of a job still in PRODUCING → the pipeline step that sends it. */
const PRODUCING_STEP_OF_COMMAND: Readonly<Record<string, string>> = {
  Si: "insert",
  Sis: "chip",
  ...Object.fromEntries([...PRINT_COMMANDS].map((c) => [c, "print"])),
  ...Object.fromEntries([...ENCODE_COMMANDS].map((c) => [c, "encode"])),
};

interface HarnessOptions {
  iterations: number;
  seed: number;
  keep: boolean;
  verbose: boolean;
  strict: boolean;
  /** Agents loading ahead of their start. */
  standby: number;
  /** Power-loss mode: the data directory on LazyFS, cut at every kill, in this many episodes. */
  powerloss?: { episodes: number };
}

interface KillRecord {
  iteration: number;
  trigger: string;
  /** Pipeline step the agent was in, from its store and the last printer command. */
  step: string;
  unackedEvents: number;
  /**
   * Cards the printer had fed minus cards the agent's ledger counted, as the next start finds them:
   * 0, or 1 while the job of the last card has not ended (undefined: no store yet).
   */
  ledgerGap?: number;
  timing: { waitedForStandbyMs: number; helloMs: number | undefined; killMs: number };
}

interface StoreSnapshot {
  inProduction?: { operationId: string; state: string; retractReason: string | null };
  unacked: number;
  open: number;
  /** issued + spoiled in the ledger (undefined before the agent's first start made the table). */
  ledgerCounted?: number;
}

interface Summary {
  iterations: number;
  kills: number;
  jobs: number;
  lost: number;
  duplicateCards: number;
  orderViolations: number;
  seed: number;
  [extra: string]: unknown;
}

class CrashRun {
  private readonly plan: Random;
  private readonly hands: Random;
  private readonly dir: string;
  /** The agent's data directory: one for the run, or (power loss) a fresh one per episode. */
  private dataDir: string;
  private readonly recordFile: string;
  private configText = "";
  private baseConfig: AgentConfigInput | undefined;
  private readonly stdioFile: string;
  private readonly token = randomBytes(16).toString("hex");
  private readonly emulator: D1Emulator;
  private readonly printer: VirtualEvolisPrinter;
  private pty: PtyDevice | undefined;
  private agent: AgentProcess | undefined;
  /** Agents started ahead, loading their modules, waiting for their config. */
  private readonly standbys: AgentProcess[] = [];
  private agentSeq = 0;
  private lastSession: string | undefined;

  private readonly jobs: JobInfo[] = [];
  private readonly byId = new Map<string, JobInfo>();
  private readonly byTrack2 = new Map<string, JobInfo>();
  private readonly kills: KillRecord[] = [];
  /**
   * Every card the printer fed, in order, whatever its `keepRecords`: the same objects as its record,
   * so their outcomes follow the card to its end.
   */
  private readonly fedCards: CardRecord[] = [];
  private readonly cancels: Array<{ operationId: string; result: string }> = [];
  /** Card serial → the job the agent's store had in production when that card was in the printer. */
  private readonly hints = new Map<number, string>();
  private previousInProduction: string | undefined;
  private helloAt = 0;
  /** The printer's latency, as last set (the printer keeps its own copy private). */
  private latency: PrinterLatency = { commandMs: 3, printMs: 35, magMs: 10 };

  /** printer.commandLog entries already looked at, and those sent since the current agent started. */
  private commandsSeen = 0;
  private agentFirstCommand = 0;
  private context: CommandContext = { opened: false, flow: "other" };
  /** Bytes the agents sent the printer, in all, and as of the printer's latest command. */
  private hostBytes = 0;
  private hostBytesAtLastCommand = 0;
  private lastCommandAt = Date.now();
  private readonly commandWatchers = new Set<(name: string, context: CommandContext) => void>();

  // ---- power-loss mode ----
  private lazy: LazyFs | undefined;
  private episode = 1;
  /** Iterations at which a new episode (an empty data directory) begins. */
  private readonly episodeStarts = new Set<number>();
  private readonly cuts: CutRecord[] = [];
  /** The ledgers of the episodes already ended (each store counts its own cards). */
  private readonly episodeLedgers: LedgerInput[] = [];
  /** Cards the ledgers of ended episodes counted: the kill gap is against the printer's total. */
  private countedBefore = 0;
  /** The running agent started on a data directory with no store in it. */
  private agentOnFirstBoot = false;
  /** eventIds D1 received from the current episode's store. */
  private readonly episodeEvents = new Set<string>();
  /** Agent starts that ended by themselves or never said hello (the agent refused the data dir). */
  private failedRestarts = 0;
  private ledgerUnreadable = false;
  /** The size of agent-stdio.log when the running agent started: what it wrote comes after. */
  private stdioMark = 0;
  /** What the drains of ended episodes left: outbox events, open jobs, agents not stopped cleanly. */
  private readonly episodeLeft = { outbox: 0, open: 0, unclean: 0 };

  private readonly counters = {
    duplicatePushes: 0,
    retriedPushes: 0,
    pushFailures: 0,
    linkDrops: 0,
    cancels: 0,
    startFailures: 0,
    agentExits: 0,
    cardsTakenByHarness: 0,
  };

  constructor(private readonly options: HarnessOptions) {
    this.plan = new Random(options.seed);
    this.hands = this.plan.fork();
    this.dir = mkdtempSync(join(tmpdir(), "kiosk-crash-"));
    this.dataDir = join(this.dir, "data");
    // Power loss: each episode's directory is made by the agent itself, on LazyFS (run()).
    if (!options.powerloss) mkdirSync(this.dataDir, { mode: 0o700 });
    this.recordFile = join(this.dir, "d1-record.jsonl");
    this.stdioFile = join(this.dir, "agent-stdio.log");
    writeFileSync(this.recordFile, "");
    this.emulator = new D1Emulator({
      token: this.token,
      ackMode: "auto",
      recordFile: this.recordFile,
      requestTimeoutMs: 3_000,
    });
    this.printer = new VirtualEvolisPrinter({
      // The harness is the cardholder: it decides per job whether the card is taken.
      takeAfterMs: null,
      feederCards: 1_000_000,
      rejectBoxCapacity: 1_000_000,
      // Every card and every command of the run, however long: the checks read the whole card
      // record, the kill triggers the whole command log (default: the last 1000 cards, 10 000
      // commands, which a 200-iteration run exceeds). About 160 KB a printed card.
      keepRecords: 1_000_000,
      latency: this.latency,
      seed: options.seed,
    });
    this.printer.on("card-presented", (card) => this.onCardPresented(card));
    this.printer.on("card-inserted", (card) => this.fedCards.push(card));
    this.emulator.on("operation", (_operation, event) => this.episodeEvents.add(event.eventId));
    if (options.powerloss) {
      const { episodes } = options.powerloss;
      for (let e = 1; e < episodes; e++)
        this.episodeStarts.add(1 + Math.round((e * options.iterations) / episodes));
    }
  }

  private get dbFile(): string {
    return join(this.dataDir, "jobs.sqlite");
  }

  get directory(): string {
    return this.dir;
  }

  async run(): Promise<Summary> {
    const started = Date.now();
    if (this.options.powerloss) {
      this.lazy = await LazyFs.mount({ workDir: this.dir });
      this.dataDir = join(this.lazy.mountPoint, "kiosk-1");
    }
    const { url } = await this.emulator.start();
    this.pty = await PtyDevice.start(this.printer, {
      linkPath: join(this.dir, "ttyPRINTER"),
      onHostBytes: (bytes) => {
        this.hostBytes += bytes.length;
        this.scanCommands();
      },
      // A reply lets the printer take the next queued command, which it does right after sending.
      onDeviceBytes: () => queueMicrotask(() => this.scanCommands()),
    });
    const config: AgentConfigInput = {
      station: { id: STATION },
      d1: {
        url,
        token: this.token,
        allowInsecure: true,
        pingIntervalMs: 2_000,
        backoff: { initialMs: 20, maxMs: 300 },
        resendAfterMs: 1_000,
      },
      dataDir: this.dataDir,
      printer: {
        path: this.pty.path,
        timeouts: { defaultMs: 2_000, printMs: 5_000, magMs: 3_000 },
        takePollMs: 100,
        statusPollMs: 100,
        reopen: { initialMs: 50, maxMs: 500 },
      },
      production: { defaultCollectTimeoutSec: 5, holdWhileStoppedSec: 30 },
      // Outside the data directory (and LazyFS): the log is the harness's evidence, not the agent's state.
      log: { level: "info", file: join(this.dir, "agent.log") },
    };
    this.baseConfig = config;
    this.setDataDir(this.dataDir);
    progress(
      `crash harness: seed ${this.options.seed}, ${this.options.iterations} iterations, dir ${this.dir}` +
        (this.options.powerloss
          ? `; power loss: data directory on LazyFS (${this.lazy!.mountPoint}), ${this.options.powerloss.episodes} episodes`
          : ""),
    );

    for (let i = 1; i <= this.options.iterations; i++) {
      if (this.episodeStarts.has(i)) await this.nextEpisode(i);
      await this.iteration(i);
      if (!this.options.verbose && (i % 10 === 0 || i === this.options.iterations)) {
        progress(
          `  ${i}/${this.options.iterations} iterations, ${this.kills.length} kills, ${this.jobs.length} jobs, ${this.emulator.accepted.size} accepted, ${((Date.now() - started) / 1000).toFixed(0)}s`,
        );
      }
    }
    const drain = await this.drain();
    if (this.lazy) await this.cut(this.options.iterations, "clean-stop");
    this.scanCommands();
    const ledgerInput = this.mergedLedger(this.readLedger(drain.cleanStop));
    const verdict = this.verdict(ledgerInput);
    const ledger = this.ledgerSummary(verdict.ledger);
    progress(`  ${ledgerLine(ledger)}`);
    const killsByStep: Record<string, number> = {};
    const killsByTrigger: Record<string, number> = {};
    for (const k of this.kills) {
      killsByStep[k.step] = (killsByStep[k.step] ?? 0) + 1;
      killsByTrigger[k.trigger] = (killsByTrigger[k.trigger] ?? 0) + 1;
    }
    // The harness's own copy of the card record (whole, whatever the printer keeps), without images.
    writeFileSync(
      join(this.dir, "simulator-cards.json"),
      JSON.stringify(
        this.fedCards.map(({ front: _front, back: _back, ...rest }) => rest),
        null,
        2,
      ),
    );
    if (ledgerInput) {
      writeFileSync(join(this.dir, "ledger.json"), JSON.stringify(ledgerInput, null, 2));
    }
    writeFileSync(join(this.dir, "kills.json"), JSON.stringify(this.kills, null, 2));
    // Names and parameters only: the simulator logs Dm, Db and Dbc without their data.
    writeFileSync(join(this.dir, "printer-commands.log"), `${this.printer.commandLog.join("\n")}\n`);
    writeFileSync(join(this.dir, "verdict.json"), JSON.stringify(verdict, null, 2));
    for (const [kind, list] of Object.entries(verdict.examples)) {
      for (const line of list.slice(0, 5)) progress(`  ${kind}: ${line}`);
      if (list.length > 5) progress(`  ${kind}: … ${list.length - 5} more in verdict.json`);
    }
    const powerLoss = this.options.powerloss
      ? powerLossSummary(this.cuts, this.failedRestarts, this.episode)
      : undefined;
    if (powerLoss) {
      progress(
        `  power loss: ${powerLoss.cuts} cuts (${powerLoss.cutsAfterKill} at kills, ${powerLoss.firstBootCuts} in a first boot, ${powerLoss.cutsAfterCleanStop} after a clean stop), ` +
          `${powerLoss.unsyncedBytesDropped} bytes un-synced dropped, integrity ${powerLoss.integrity}, failed restarts ${powerLoss.failedRestarts}, ` +
          `accepted jobs missing after a cut ${powerLoss.acceptedMissingAfterCut}, statuses missing ${powerLoss.eventsMissingAfterCut}`,
      );
      writeFileSync(join(this.dir, "cuts.json"), JSON.stringify(this.cuts, null, 2));
    }
    return {
      iterations: this.options.iterations,
      kills: this.kills.length,
      jobs: this.jobs.length,
      lost: verdict.lost,
      duplicateCards: verdict.duplicateCards,
      orderViolations: verdict.orderViolations,
      seed: this.options.seed,
      ...powerLoss,
      accepted: this.emulator.accepted.size,
      multipleTerminals: verdict.multipleTerminals,
      outcomeMismatches: verdict.outcomeMismatches,
      unmatchedCards: verdict.unmatchedCards,
      strandedCards: verdict.strandedCards,
      cancelMismatches: verdict.cancelMismatches,
      protocolViolations: this.emulator.violations.length,
      lateAnswers: this.emulator.lateAnswers.length,
      // What was wrong (kind, message type, paths and codes; never values), so a failure says which.
      protocolViolationDetails: this.emulator.violations
        .slice(0, 5)
        .map((v) => `${v.kind}${v.type ? ` ${v.type}` : ""}: ${v.detail}`),
      outboxLeft: drain.outboxLeft + this.episodeLeft.outbox,
      openJobsLeft: drain.openLeft + this.episodeLeft.open,
      cleanStop: drain.cleanStop && this.episodeLeft.unclean === 0,
      killsWithUnackedEvents: this.kills.filter((k) => k.unackedEvents > 0).length,
      killsByStep,
      killsByTrigger,
      terminal: verdict.terminal,
      cards: verdict.cards,
      ...this.counters,
      duplicateEvents: this.emulator.stats.duplicateEvents,
      printerCommands: this.printer.commandLog.length,
      // Bytes sent after the printer's last command: 0 unless a frame was left unfinished.
      printerSilentBytes: this.hostBytes - this.hostBytesAtLastCommand,
      ledger,
      seconds: Math.round((Date.now() - started) / 100) / 10,
    };
  }

  async close(): Promise<void> {
    await this.agent?.kill();
    await Promise.all(this.standbys.splice(0).map((a) => a.kill()));
    await this.pty?.close();
    await this.emulator.stop();
    await this.lazy?.unmount();
  }

  removeDirectory(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }

  // ---- one kill/restart cycle ----------------------------------------------------------------

  private async iteration(n: number): Promise<void> {
    const plan = this.plan;
    this.setLatency({ commandMs: plan.int(2, 6), printMs: plan.int(20, 50), magMs: plan.int(5, 15) });
    let target: Target = plan.weighted(TARGET_WEIGHTS);
    // Retracting needs a card nobody takes; recovery needs a job a previous kill left in production.
    if (target === "recovery" && this.previousInProduction === undefined) target = "collect";
    const nth = 1 + Math.floor(plan.next() * (COMMAND_TARGETS[target]?.span ?? 3));
    const delayFraction = plan.next();
    const newJobs = plan.chance(0.5) ? 2 : 1;
    const kinds: JobKind[] = Array.from({ length: newJobs }, (_, i) =>
      target === "retract" && i === 0
        ? "no-show"
        : plan.chance(0.08)
          ? "data-exception"
          : plan.chance(0.03)
            ? "no-show"
            : "normal",
    );
    const duplicate = plan.chance(0.25);
    const dupPick = plan.next();
    const dropAt = plan.chance(0.15) ? plan.int(0, 700) : undefined;
    const randomAt = plan.int(0, 1_200);
    const startupAt = plan.int(0, 400);
    const pushOrder = plan.next();
    const cancel = plan.chance(0.12);
    const cancelPick = plan.next();
    const cancelAt = plan.int(0, 400);
    // Drawn after the plan above, and only in power-loss mode: the plain mode's plans stay the same.
    let bootAt = 0;
    let acceptDelay = 0;
    if (this.options.powerloss && (n === 1 || this.episodeStarts.has(n))) {
      target = plan.pick(FIRST_BOOT_TARGETS);
      bootAt = plan.int(0, BOOT_WINDOW_MS);
      acceptDelay = plan.int(0, 20);
    }

    const iterationStart = Date.now();
    const agent = await this.startAgent(true);
    let killed: ((trigger: string) => void) | undefined;
    const killedBy = new Promise<string>((resolve) => {
      killed = resolve;
    });
    let fired = false;
    let wasRunning = true;
    let killMs = 0;
    const fire = (trigger: string): void => {
      if (fired) return;
      fired = true;
      // SIGKILL at once, whatever the iteration is awaiting (a hello, a push answer).
      wasRunning = agent.running;
      killMs = Date.now() - agent.startedAt;
      if (wasRunning) agent.child.kill("SIGKILL");
      killed?.(trigger);
    };
    const timers: NodeJS.Timeout[] = [];
    const after = (ms: number, fn: () => void): void => {
      timers.push(setTimeout(fn, ms));
    };
    const cleanups: Array<() => void> = [];

    if (target === "startup" || target === "boot") {
      after(target === "boot" ? bootAt : startupAt, () => fire(target));
    } else {
      // Recovery runs as soon as the printer is open, which may be before the hello reaches D1.
      if (target === "recovery") this.armTrigger(target, nth, delayFraction, fire, after, cleanups, randomAt);
      const hello = await this.waitForHello(agent, 15_000).then(
        () => true,
        () => false,
      );
      if (fired) {
        // Killed inside recovery before the hello: nothing is pushed this time.
      } else if (!hello) {
        this.counters.startFailures++;
        this.failedRestarts++;
        progress(`  iteration ${n}: the agent did not connect${this.agentSaid()}`);
        fire("no-hello");
      } else {
        if (target === "first-accept") {
          // The first job D1 was told is stored: from here on it must survive any cut.
          const onResult = (message: { result: string }): void => {
            if (message.result !== "accepted") return;
            this.emulator.off("push-result", onResult);
            after(acceptDelay, () => fire("first-accept"));
          };
          this.emulator.on("push-result", onResult);
          cleanups.push(() => this.emulator.off("push-result", onResult));
        } else if (target !== "recovery") {
          this.armTrigger(target, nth, delayFraction, fire, after, cleanups, randomAt);
        }
        if (dropAt !== undefined) {
          after(dropAt, () => {
            if (!fired && this.emulator.connectedStations().length > 0) {
              this.counters.linkDrops++;
              void this.emulator.dropLink();
            }
          });
        }
        const batch = this.batch(kinds, duplicate, dupPick, pushOrder);
        const pushKill =
          target === "push"
            ? { nth: 1 + Math.floor(delayFraction * batch.length), delayFraction, fire, after }
            : target === "first-push"
              ? { nth: 1, delayFraction, fire, after, trigger: "first-push" }
              : undefined;
        void this.pushAll(batch, pushKill).then(() => {
          if (cancel) after(cancelAt, () => this.cancelOne(batch, cancelPick, cleanups));
          // Long enough for the aimed step to come up behind a job or two already queued.
          const patience =
            target === "retract" ? 9_000 : target === "present" || target === "collect" ? 1_600 : 1_000;
          after(patience, () => fire(`fallback:${target}`));
        });
      }
    }

    const trigger = await killedBy;
    const timing = {
      waitedForStandbyMs: agent.startedAt - iterationStart,
      helloMs: this.helloAt >= agent.startedAt ? this.helloAt - agent.startedAt : undefined,
      killMs,
    };
    for (const t of timers) clearTimeout(t);
    for (const c of cleanups) c();
    await agent.kill();
    const { code, signal } = await agent.exited;
    const killedByUs = wasRunning && signal === "SIGKILL";
    if (!killedByUs) {
      // Not a kill: the agent ended on its own, which a service must never do.
      this.counters.agentExits++;
      if (trigger !== "no-hello") this.failedRestarts++;
      progress(`  iteration ${n}: the agent exited by itself (${signal ?? code})${this.agentSaid()}`);
    }
    // The power goes with the process: what was not fsynced is gone before anything reads the store.
    if (this.lazy) await this.cut(n, "kill");
    if (killedByUs) this.recordKill(n, trigger, timing);
  }

  /** The last line the running agent wrote to stdout/stderr (a refusal names its file), for a progress line. */
  private agentSaid(): string {
    let text = "";
    try {
      text = readFileSync(this.stdioFile).subarray(this.stdioMark).toString("utf8");
    } catch {
      return "";
    }
    const last = text.trim().split("\n").at(-1) ?? "";
    return last ? `: ${last.slice(0, 400)} (${this.stdioFile})` : ` (see ${this.stdioFile})`;
  }

  private setDataDir(dataDir: string): void {
    this.dataDir = dataDir;
    this.configText = JSON.stringify({ ...this.baseConfig, dataDir }, null, 2);
    writeFileSync(join(this.dir, "agent.json"), this.configText);
  }

  // ---- power loss -------------------------------------------------------------------------------

  /**
   * The power cut: LazyFS drops what was not fsynced; then the store, as the next start will find
   * it, is checked against what D1 was told (jobs accepted, statuses received).
   */
  private async cut(iteration: number, after: CutRecord["after"]): Promise<void> {
    const lazy = this.lazy!;
    const changedBytes = unsyncedByKind(
      this.dataDir,
      join(lazy.backingDir, relative(lazy.mountPoint, this.dataDir)),
    );
    const walFile = `${this.dbFile}-wal`;
    const walBefore = existsSync(walFile) ? statSync(walFile).size : 0;
    const unsyncedBytes = await lazy.unsyncedBytes();
    await lazy.clearCache();
    const walAfter = existsSync(walFile) ? statSync(walFile).size : 0;
    const store = inspectStoreAfterCut(this.dataDir, this.dir);
    const episodeJobs = new Set(
      this.jobs.filter((j) => j.episode === this.episode).map((j) => j.operationId),
    );
    const missingAccepted = [...this.emulator.accepted].filter(
      (id) => episodeJobs.has(id) && !store.jobIds.has(id),
    );
    const missingEvents = [...this.episodeEvents].filter((id) => !store.eventIds.has(id));
    const record: CutRecord = {
      iteration,
      episode: this.episode,
      after,
      firstBoot: after === "kill" && this.agentOnFirstBoot,
      unsyncedBytes,
      changedBytes,
      walRegrownBytes: Math.max(0, walAfter - walBefore),
      store: store.state,
      integrity: store.integrity,
      missingAccepted,
      missingEvents,
      keyLost: store.state !== "none" && store.keyOk !== true,
    };
    this.cuts.push(record);
    if (
      record.integrity !== "ok" ||
      missingAccepted.length > 0 ||
      missingEvents.length > 0 ||
      record.keyLost
    ) {
      progress(
        `  cut after ${after} (iteration ${iteration}, episode ${this.episode}): store ${store.state}, integrity ${store.integrity}, ` +
          `${missingAccepted.length} accepted jobs missing, ${missingEvents.length} statuses D1 has missing, key ${store.keyOk ?? "absent"}`,
      );
    } else if (this.options.verbose) {
      progress(
        `  cut after ${after}${record.firstBoot ? " (first boot)" : ""}: ${unsyncedBytes} bytes un-synced dropped (changed: ${JSON.stringify(changedBytes)}), store ${store.state}, integrity ok`,
      );
    }
  }

  /** Whether the data directory holds a store yet (read before a start: its first boot or not). */
  private storeState(): StoreAfterCut["state"] {
    return existsSync(join(this.dataDir, "store.id"))
      ? "store"
      : inspectStoreAfterCut(this.dataDir, this.dir).state;
  }

  /**
   * Ends the episode as the run ends (a last start, every job to a terminal status, a clean stop, a
   * cut), keeps its store's ledger, and starts the next on an empty data directory.
   */
  private async nextEpisode(iteration: number): Promise<void> {
    const drain = await this.drain(false);
    await this.cut(iteration - 1, "clean-stop");
    const ledger = this.readLedger(drain.cleanStop);
    if (ledger) {
      this.episodeLedgers.push(ledger);
      this.countedBefore += countedOf(ledger);
    } else {
      this.ledgerUnreadable = true;
    }
    this.episodeLeft.outbox += Math.max(0, drain.outboxLeft);
    this.episodeLeft.open += Math.max(0, drain.openLeft);
    if (!drain.cleanStop) this.episodeLeft.unclean++;
    this.episode++;
    this.episodeEvents.clear();
    this.previousInProduction = undefined;
    this.setDataDir(join(this.lazy!.mountPoint, `kiosk-${this.episode}`));
    progress(`  episode ${this.episode}: an empty data directory (${this.dataDir})`);
  }

  /** The run's ledger: every episode's store, against the printer's whole count. */
  private mergedLedger(last: LedgerInput | undefined): LedgerInput | undefined {
    if (!last || this.ledgerUnreadable) return undefined;
    if (this.episodeLedgers.length === 0) return last;
    const all = [...this.episodeLedgers, last];
    return {
      movements: all.flatMap((l) => l.movements),
      jobs: all.flatMap((l) => l.jobs),
      cardsInserted: last.cardsInserted,
      cleanStop: all.every((l) => l.cleanStop),
    };
  }

  private setLatency(latency: PrinterLatency): void {
    this.latency = latency;
    this.printer.setLatency(latency);
  }

  /** The next agent, started: a standby gets its config; `more` keeps the next one loading. */
  private async startAgent(more: boolean): Promise<AgentProcess> {
    for (let failures = 0; ; ) {
      if (this.standbys.length === 0) this.spawnStandby();
      const agent = this.standbys.shift()!;
      if (more) while (this.standbys.length < this.options.standby) this.spawnStandby();
      this.scanCommands();
      this.agentFirstCommand = this.commandsSeen;
      this.context = { opened: false, flow: "other" };
      this.agent = agent;
      if (this.lazy) this.agentOnFirstBoot = this.storeState() === "none";
      this.stdioMark = existsSync(this.stdioFile) ? statSync(this.stdioFile).size : 0;
      if (await agent.release(this.configText)) return agent;
      this.counters.startFailures++;
      progress(`  an agent died before reading its config (see ${this.stdioFile})`);
      if (++failures >= MAX_START_FAILURES) {
        throw new Error(
          `${failures} agents in a row died before reading their config: the agent does not load`,
        );
      }
    }
  }

  private spawnStandby(): void {
    const n = ++this.agentSeq;
    this.standbys.push(new AgentProcess(join(this.dir, `agent-${n}.config`), this.stdioFile));
  }

  /** Rejects when the agent exits first or stays silent for `timeoutMs`. */
  private async waitForHello(agent: AgentProcess, timeoutMs: number): Promise<void> {
    const previous = this.lastSession;
    const hello = this.emulator.waitFor(
      () => {
        const session = this.emulator.station(STATION)?.sessionId;
        return session !== undefined && session !== previous;
      },
      timeoutMs,
      "agent hello",
    );
    const exited = agent.exited.then(({ code, signal }) => {
      throw new Error(`the agent exited (${signal ?? code}) before saying hello`);
    });
    await Promise.race([hello, exited]);
    this.lastSession = this.emulator.station(STATION)?.sessionId;
    this.helloAt = Date.now();
  }

  private armTrigger(
    target: Target,
    nth: number,
    delayFraction: number,
    fire: (trigger: string) => void,
    after: (ms: number, fn: () => void) => void,
    cleanups: Array<() => void>,
    randomAt: number,
  ): void {
    const commandTarget = COMMAND_TARGETS[target];
    if (commandTarget) {
      let count = 0;
      const watcher = (name: string, context: CommandContext): void => {
        if (!commandTarget.counts(name, context)) return;
        count++;
        if (count !== nth) return;
        // From just after the command reached the printer to just after its reply left: the agent
        // is waiting, reading the reply, or committing the step's outcome.
        const window = this.latencyOf(name) + 5;
        after(Math.floor(delayFraction * window), () => fire(target));
      };
      this.commandWatchers.add(watcher);
      cleanups.push(() => this.commandWatchers.delete(watcher));
      return;
    }
    if (target === "event") {
      let count = 0;
      const onOperation = (): void => {
        count++;
        // The status is at D1; its ack, and the events committed right after it, are on their way.
        if (count === nth) after(Math.floor(delayFraction * 6), () => fire("event"));
      };
      this.emulator.on("operation", onOperation);
      cleanups.push(() => this.emulator.off("operation", onOperation));
      return;
    }
    if (target === "random") after(randomAt, () => fire("random"));
  }

  /** How long the simulator takes to answer `command` (as logged: `Se` prints, `Se>mouth` presents). */
  private latencyOf(command: string): number {
    const l = this.latency;
    if (command === "Se") return l.printMs;
    if (command === "Smw" || command.startsWith("Smr") || command.startsWith("Rmb")) return l.magMs;
    return l.commandMs;
  }

  // ---- pushes ---------------------------------------------------------------------------------

  private batch(kinds: JobKind[], duplicate: boolean, dupPick: number, order: number): JobInfo[] {
    const batch: JobInfo[] = [];
    // What D1 does with a push that got no answer: it sends it again.
    const unanswered = this.jobs.filter((j) => !j.answered && !j.refused).slice(0, 2);
    batch.push(...unanswered);
    this.counters.retriedPushes += unanswered.length;
    for (const kind of kinds) batch.push(this.newJob(kind));
    // A re-push goes to the store that accepted it: another episode's store never saw the job, and
    // would rightly make it a new card.
    const answered = this.jobs.filter((j) => j.answered && j.episode === this.episode);
    if (duplicate && answered.length > 0) {
      const again = answered[Math.floor(dupPick * answered.length)]!;
      batch.splice(Math.floor(order * (batch.length + 1)), 0, again);
      this.counters.duplicatePushes++;
    }
    return batch;
  }

  private newJob(kind: JobKind): JobInfo {
    const index = this.jobs.length;
    const job = makeSampleJob(index, {
      station: kind === "data-exception" ? OTHER_STATION : STATION,
      runId: `crash-${this.options.seed}`,
      collectTimeoutSec: kind === "no-show" ? 5 : 30,
    });
    const track2 = job.productionData.magstripe?.track2;
    const info: JobInfo = {
      index,
      operationId: job.operationId,
      job,
      kind,
      episode: this.episode,
      ...(track2 && kind !== "data-exception" ? { track2Sha: sha256(track2) } : {}),
      pushes: 0,
      answered: false,
      refused: false,
    };
    this.jobs.push(info);
    this.byId.set(info.operationId, info);
    if (info.track2Sha) this.byTrack2.set(info.track2Sha, info);
    return info;
  }

  private async pushAll(
    batch: JobInfo[],
    killAt?: {
      nth: number;
      delayFraction: number;
      fire: (trigger: string) => void;
      after: (ms: number, fn: () => void) => void;
      trigger?: string;
    },
  ): Promise<void> {
    let count = 0;
    for (const info of batch) {
      if (!this.agent?.running || this.emulator.connectedStations().length === 0) {
        // The link is down (a drop or a kill): D1 would retry this push later.
        this.counters.pushFailures++;
        continue;
      }
      count++;
      info.pushes++;
      const answer = this.emulator.push(info.job, { station: STATION, timeoutMs: 3_000 });
      if (killAt && count === killAt.nth) {
        // The job may be committed, its push-result on the wire or not yet written.
        killAt.after(Math.floor(killAt.delayFraction * 4), () => killAt.fire(killAt.trigger ?? "push"));
      }
      try {
        const result = await answer;
        if (result.result === "accepted") info.answered = true;
        else info.refused = true;
      } catch {
        this.counters.pushFailures++;
      }
    }
  }

  /**
   * D1 cancels one job of the batch: it may be queued, on the printer, presented or finished. One
   * cancel in three (pick < 1/3) is aimed instead at the job the store has in PRODUCING when the next
   * print or encode command reaches the printer: a card is in the printer, so the job ends CANCELED
   * with its card rejected (the ledger's CANCELED_IN_PRODUCTION), unless the kill comes first.
   */
  private cancelOne(batch: JobInfo[], pick: number, cleanups: Array<() => void>): void {
    const agent = this.agent;
    if (!agent?.running) return;
    if (pick < 1 / 3) {
      const watcher = (name: string): void => {
        if (!PRINT_COMMANDS.has(name) && !ENCODE_COMMANDS.has(name)) return;
        this.commandWatchers.delete(watcher);
        if (this.agent !== agent || !agent.running) return;
        const prod = this.snapshot()?.inProduction;
        if (prod?.state === "PRODUCING") this.sendCancel(prod.operationId);
      };
      this.commandWatchers.add(watcher);
      cleanups.push(() => this.commandWatchers.delete(watcher));
      return;
    }
    const candidates = batch.filter((j) => j.answered);
    if (candidates.length === 0) return;
    this.sendCancel(candidates[Math.floor(pick * candidates.length)]!.operationId);
  }

  private sendCancel(operationId: string): void {
    this.counters.cancels++;
    // A cancel in production is answered once the card is in the reject box: give it the printer's time.
    this.emulator.cancel(operationId, { station: STATION, timeoutMs: 15_000 }).then(
      (answer) => this.cancels.push({ operationId, result: answer.result }),
      // No answer (the agent was killed, the link dropped): D1 knows nothing and checks nothing.
      () => undefined,
    );
  }

  // ---- the cardholder -------------------------------------------------------------------------

  private onCardPresented(card: CardRecord): void {
    const t2 = card.tracks.find((t) => t.n === 2);
    const info = t2 && this.byTrack2.get(t2.sha256);
    if (info?.kind === "no-show") return;
    const serial = card.serial;
    setTimeout(
      () => {
        if (this.printer.state.currentSerial === serial && this.printer.takeCardNow())
          this.counters.cardsTakenByHarness++;
      },
      Math.round(this.hands.between(10, 30)),
    );
  }

  // ---- after each kill --------------------------------------------------------------------------

  private scanCommands(): void {
    const log = this.printer.commandLog;
    if (this.commandsSeen < log.length) {
      this.hostBytesAtLastCommand = this.hostBytes;
      this.lastCommandAt = Date.now();
    }
    while (this.commandsSeen < log.length) {
      const name = log[this.commandsSeen++]!;
      const context = this.context;
      this.context = nextContext(context, name);
      for (const w of [...this.commandWatchers]) w(name, context);
    }
  }

  private recordKill(iteration: number, trigger: string, timing: KillRecord["timing"]): void {
    const snap = this.snapshot();
    this.scanCommands();
    const commands = this.printer.commandLog.slice(this.agentFirstCommand);
    const last = commands.at(-1);
    const inProd = snap?.inProduction;
    let step: string;
    if (!snap) step = commands.length === 0 ? "startup" : "unknown";
    // Recovery ends every job it finds before the pipeline may take a card: still there, it was cut.
    else if (inProd && inProd.operationId === this.previousInProduction) step = "recovery";
    // Nothing but pipeline commands is sent in PRODUCING: anything else (the start-up settings before
    // `Si`, the previous card's last commands, status reads) means the card was not fed yet.
    else if (inProd?.state === "PRODUCING") step = PRODUCING_STEP_OF_COMMAND[last ?? ""] ?? "insert";
    // A capture is recorded before its first command (`Rse;b Sib Ser`); `Rse;b` otherwise is the take poll.
    else if (inProd?.state === "PRESENTED")
      step = inProd.retractReason ? "retract" : last === "Rse;b" ? "collect" : "present";
    else if (commands.length === 0) step = "startup";
    else step = "between-jobs";
    if (inProd) {
      const serial = this.printer.state.currentSerial;
      if (serial !== undefined) this.hints.set(serial, inProd.operationId);
    }
    this.previousInProduction = inProd?.operationId;
    const ledgerGap =
      snap?.ledgerCounted === undefined
        ? undefined
        : this.printer.state.counters.cardsInserted - this.countedBefore - snap.ledgerCounted;
    const record: KillRecord = {
      iteration,
      trigger,
      step,
      unackedEvents: snap?.unacked ?? 0,
      ...(ledgerGap === undefined ? {} : { ledgerGap }),
      timing,
    };
    this.kills.push(record);
    if (this.options.verbose) {
      progress(
        `  #${iteration} kill (${trigger}) in ${step}${inProd ? ` ${inProd.state} ${inProd.operationId.slice(0, 8)}` : ""}, ${record.unackedEvents} unacked, ledger gap ${ledgerGap ?? "-"}, printer ${this.printer.state.position} after ${last ?? "no command"}, ${timing.killMs} ms after start (hello ${timing.helloMs ?? "-"} ms, standby wait ${timing.waitedForStandbyMs} ms)`,
      );
    }
  }

  /** The agent's store as the next start will find it (read-only; the agent is not running). */
  private snapshot(): StoreSnapshot | undefined {
    let db: Database.Database | undefined;
    try {
      db = new Database(this.dbFile, { readonly: true, fileMustExist: true });
      const prod = db
        .prepare(
          "SELECT operation_id AS operationId, state, retract_reason AS retractReason FROM jobs WHERE state IN ('PRODUCING','PRESENTED') ORDER BY queue_seq LIMIT 1",
        )
        .get() as StoreSnapshot["inProduction"];
      const unacked = (
        db.prepare("SELECT COUNT(*) AS n FROM events WHERE acked_at IS NULL").get() as { n: number }
      ).n;
      const open = (
        db
          .prepare("SELECT COUNT(*) AS n FROM jobs WHERE state IN ('READY','PRODUCING','PRESENTED')")
          .get() as {
          n: number;
        }
      ).n;
      let ledgerCounted: number | undefined;
      try {
        ledgerCounted = (
          db
            .prepare(
              "SELECT COALESCE(SUM(quantity), 0) AS n FROM stock_ledger WHERE kind IN ('issued','spoiled')",
            )
            .get() as { n: number }
        ).n;
      } catch {
        // A store from before the ledger's migration: no figure.
      }
      return {
        ...(prod ? { inProduction: prod } : {}),
        unacked,
        open,
        ...(ledgerCounted === undefined ? {} : { ledgerCounted }),
      };
    } catch {
      return undefined;
    } finally {
      db?.close();
    }
  }

  // ---- the end ----------------------------------------------------------------------------------

  private async drain(final = true): Promise<{ outboxLeft: number; openLeft: number; cleanStop: boolean }> {
    progress(
      final
        ? "  draining: a last start, every job to a terminal status at D1, outbox empty"
        : `  episode ${this.episode} ends: a start, every job to a terminal status at D1, outbox empty, a clean stop`,
    );
    this.setLatency({ commandMs: 3, printMs: 35, magMs: 10 });
    const agent = await this.startAgent(!final);
    await this.waitForHello(agent, 30_000).catch(() => {
      this.counters.startFailures++;
      this.failedRestarts++;
      progress(`  the agent did not connect for the drain${this.agentSaid()}`);
    });
    const noShowsOpen = this.jobs.filter((j) => j.kind === "no-show").length;
    const deadline = Date.now() + 60_000 + noShowsOpen * 6_000;
    for (;;) {
      const unanswered = this.jobs.filter((j) => !j.answered && !j.refused);
      if (unanswered.length > 0) await this.pushAll(unanswered);
      const open = [...this.emulator.accepted].filter((id) => this.emulator.terminalCount(id) === 0);
      const snap = this.snapshot();
      if (unanswered.length === 0 && open.length === 0 && snap?.unacked === 0 && snap.open === 0) break;
      if (!agent.running) {
        progress(`  the agent exited during the drain (see ${this.stdioFile})`);
        break;
      }
      if (Date.now() > deadline) {
        progress(
          `  drain timed out: ${unanswered.length} unanswered pushes, ${open.length} accepted jobs without a terminal status, ${snap?.unacked ?? "?"} events unacked`,
        );
        this.scanCommands();
        const silent = this.hostBytes - this.hostBytesAtLastCommand;
        if (silent > 0) {
          progress(
            `  the printer made no command of the last ${silent} bytes the agents sent (its last command, ${this.printer.commandLog.at(-1) ?? "none"}, came ${((Date.now() - this.lastCommandAt) / 1000).toFixed(1)} s ago): a frame cut by a kill may still hold its parser`,
          );
        }
        break;
      }
      await sleep(200);
    }
    const cleanStop = await agent.stop(15_000);
    const snap = this.snapshot();
    return { outboxLeft: snap?.unacked ?? -1, openLeft: snap?.open ?? -1, cleanStop };
  }

  /**
   * The agent's card-stock ledger and its jobs' feed columns, read after the last agent stopped, with
   * the printer's inserted-cards counter. Undefined when the store has no ledger (the check fails).
   */
  private readLedger(cleanStop: boolean): LedgerInput | undefined {
    let db: Database.Database | undefined;
    try {
      db = new Database(this.dbFile, { readonly: true, fileMustExist: true });
      const movements = db
        .prepare("SELECT kind, reason, quantity, operation_id AS operationId FROM stock_ledger ORDER BY seq")
        .all() as LedgerInput["movements"];
      const jobs = db
        .prepare(
          "SELECT operation_id AS operationId, state, card_fed AS cardFed FROM jobs ORDER BY queue_seq",
        )
        .all() as LedgerInput["jobs"];
      return {
        movements,
        jobs,
        cardsInserted: this.printer.state.counters.cardsInserted,
        cleanStop,
      };
    } catch (err) {
      progress(`  could not read the ledger: ${(err as Error).message}`);
      return undefined;
    } finally {
      db?.close();
    }
  }

  /** The summary's `ledger` figures: the verdict's, and the gap at each kill. */
  private ledgerSummary(verdict: LedgerVerdict | undefined): LedgerSummary {
    const killGaps: Record<string, number> = {};
    let killGapViolations = 0;
    for (const k of this.kills) {
      if (k.ledgerGap === undefined) continue;
      killGaps[String(k.ledgerGap)] = (killGaps[String(k.ledgerGap)] ?? 0) + 1;
      if (k.ledgerGap < 0 || k.ledgerGap > 1) {
        killGapViolations++;
        progress(
          `  ledgerKillGap: iteration ${k.iteration} (${k.trigger}, ${k.step}): the printer had fed ${k.ledgerGap} cards more than the ledger counted`,
        );
      }
    }
    if (!verdict) return { readable: false, killGaps, killGapViolations, discrepancies: 1 };
    return {
      readable: true,
      ...verdict,
      killGaps,
      killGapViolations,
      discrepancies: verdict.discrepancies + killGapViolations,
    };
  }

  private verdict(ledger: LedgerInput | undefined): Verdict {
    const operations = readFileSync(this.recordFile, "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as RecordedOperation);
    const cards = this.fedCards;
    const fronts = new Map(cards.map((c) => [c.serial, c.front]));
    const jobByTrack2Sha = new Map([...this.byTrack2].map(([sha, info]) => [sha, info.operationId]));
    const frontShaOf = new Map<string, string>();
    const renderedFront = (info: JobInfo): string | undefined => {
      const lines = info.job.productionData.print?.front;
      if (!lines || lines.length === 0) return undefined;
      let sha = frontShaOf.get(info.operationId);
      if (sha === undefined) {
        sha = sha256(renderCardImage(lines, EVOLIS_PRINT_AREA).bits);
        frontShaOf.set(info.operationId, sha);
      }
      return sha;
    };
    return checkRun({
      accepted: this.emulator.accepted,
      operations,
      cards,
      jobByTrack2Sha,
      cancels: this.cancels,
      ...(ledger ? { ledger } : {}),
      // A card printed but never encoded: compare its front panel with each job's, the job the
      // store had in production at a kill first (rendering every job costs ~20 ms each).
      jobOfUnencodedCard: (card) => {
        const front = fronts.get(card.serial);
        if (!front) return undefined;
        const sha = sha256(front.bits);
        const hinted = this.byId.get(this.hints.get(card.serial) ?? "");
        if (hinted && renderedFront(hinted) === sha) return hinted.operationId;
        for (const info of this.jobs) {
          if (info.kind !== "data-exception" && renderedFront(info) === sha) return info.operationId;
        }
        return undefined;
      },
    });
  }
}

/** The summary's `ledger` object: LedgerVerdict, plus the gap at each kill. */
type LedgerSummary = (
  | ({ readable: true } & LedgerVerdict)
  | { readable: false; missing?: undefined; double?: undefined; multipleMovements?: undefined }
) & {
  /** Kills by the gap (cards fed − ledger issued + spoiled) the next start found. */
  killGaps: Record<string, number>;
  /** Kills after which that gap was below 0 or above 1. */
  killGapViolations: number;
  discrepancies: number;
};

/** One line for stderr: "ledger: fed N, counted N (issued I, spoiled S: …), missing 0, double 0". */
function ledgerLine(l: LedgerSummary): string {
  if (!l.readable) return "ledger: could not be read from the agent's store";
  const reasons = Object.entries(l.spoiledByReason)
    .map(([r, n]) => `${r} ${n}`)
    .join(", ");
  const classes = Object.entries(l.byClass)
    .map(([c, { printer, ledger }]) => `${c} ${printer}/${ledger}`)
    .join(", ");
  return (
    `ledger: fed ${l.fed}, counted ${l.counted} (issued ${l.issued}, spoiled ${l.spoiled}${reasons ? `: ${reasons}` : ""}), ` +
    `missing ${l.missing}, double ${l.double}, misclassified ${l.misclassified}, stranded ${l.stranded}; printer/ledger ${classes}; ` +
    `multiple ${l.multipleMovements}, feeds without movement ${l.feedsWithoutMovement}, movements without feed ${l.movementsWithoutFeed}, ` +
    `state mismatches ${l.stateMismatches}, job mismatches ${l.jobMismatches}, unknown feeds left ${l.unknownFeedsLeft}, ` +
    `record mismatch ${l.recordMismatch}, gap at kills ${JSON.stringify(l.killGaps)}`
  );
}

/** Cards a store's ledger counted (issued + spoiled). */
function countedOf(ledger: LedgerInput): number {
  return ledger.movements
    .filter((m) => m.kind === "issued" || m.kind === "spoiled")
    .reduce((n, m) => n + m.quantity, 0);
}

/** The context after `name`, given the one before it (CommandContext). */
function nextContext(before: CommandContext, name: string): CommandContext {
  const opened = before.opened || name === "Rfv";
  const flow: CommandContext["flow"] =
    name === "Se>mouth"
      ? "presented"
      : name === "Rlr;p" && before.flow === "presented"
        ? "collect"
        : name === "Rse;b" && before.flow === "collect"
          ? "collect"
          : name === "Sib" && before.flow === "collect"
            ? "capture"
            : "other";
  return { opened, flow };
}

function sha256(data: string | Buffer): string {
  return createHash("sha256")
    .update(typeof data === "string" ? Buffer.from(data, "latin1") : data)
    .digest("hex");
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function progress(line: string): void {
  process.stderr.write(`${line}\n`);
}

async function runHarness(options: HarnessOptions): Promise<{ summary: Summary; failed: boolean }> {
  const run = new CrashRun(options);
  let summary: Summary;
  const onSignal = (): void => {
    void run.close().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    summary = await run.run();
  } finally {
    await run.close();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  const ledger = summary["ledger"] as LedgerSummary;
  // Nothing lost, nothing counted twice: as binding as lost / duplicateCards.
  const ledgerFailed =
    !ledger.readable || ledger.missing !== 0 || ledger.double !== 0 || ledger.multipleMovements !== 0;
  const anomalies =
    ledger.discrepancies !== 0 ||
    summary["outcomeMismatches"] !== 0 ||
    summary["cancelMismatches"] !== 0 ||
    summary["unmatchedCards"] !== 0 ||
    summary["protocolViolations"] !== 0 ||
    summary["outboxLeft"] !== 0 ||
    summary["openJobsLeft"] !== 0 ||
    summary["strandedCards"] !== 0 ||
    summary["cleanStop"] !== true ||
    summary["agentExits"] !== 0 ||
    summary["startFailures"] !== 0;
  // Power loss: a store damaged or forgetful after a cut, or an agent that does not start again, is
  // as binding as a lost job.
  const powerLossBroken =
    summary["mode"] === "powerloss" &&
    powerLossFailed(summary as unknown as ReturnType<typeof powerLossSummary>);
  const failed =
    summary.lost !== 0 ||
    summary.duplicateCards !== 0 ||
    summary.orderViolations !== 0 ||
    ledgerFailed ||
    powerLossBroken ||
    (options.strict && anomalies);
  if (failed || anomalies || options.keep) progress(`  files kept in ${run.directory}`);
  else run.removeDirectory();
  return { summary, failed };
}

async function main(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        iterations: { type: "string" },
        seed: { type: "string" },
        keep: { type: "boolean" },
        verbose: { type: "boolean" },
        lenient: { type: "boolean" },
        standby: { type: "string" },
        powerloss: { type: "boolean" },
        episodes: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values["help"]) {
    console.log(USAGE);
    return 0;
  }
  const whole = (name: string, fallback: number, min: number): number | undefined => {
    const raw = values[name];
    if (typeof raw !== "string") return fallback;
    const n = Number(raw);
    return Number.isSafeInteger(n) && n >= min && n <= 0xffffffff ? n : undefined;
  };
  const iterations = whole("iterations", 20, 1);
  const seed = whole("seed", Date.now() % 0xffffffff, 0);
  const standby = whole("standby", 2, 1);
  // One empty data directory per 10 iterations: 20 first boots in a 200-iteration run.
  const episodes = whole("episodes", Math.max(1, Math.ceil((iterations ?? 1) / 10)), 1);
  if (iterations === undefined || seed === undefined || standby === undefined || episodes === undefined) {
    console.error(`--iterations must be a whole number ≥ 1 and --seed one in 0..4294967295\n\n${USAGE}`);
    return 2;
  }
  if (values["episodes"] !== undefined && values["powerloss"] !== true) {
    console.error(`--episodes needs --powerloss\n\n${USAGE}`);
    return 2;
  }
  if (episodes > iterations) {
    console.error(
      `--episodes must not exceed --iterations (each episode has its first-boot kill)\n\n${USAGE}`,
    );
    return 2;
  }
  if (values["powerloss"] === true) {
    // Before anything is made: a machine without LazyFS or FUSE gets one line and no temp dir.
    const lazyfs = lazyFsAvailability();
    if ("unavailable" in lazyfs) throw new LazyFsError(lazyfs.code, lazyfs.unavailable);
  }
  const { summary, failed } = await runHarness({
    iterations,
    seed,
    keep: values["keep"] === true,
    verbose: values["verbose"] === true,
    strict: values["lenient"] !== true,
    standby,
    ...(values["powerloss"] === true ? { powerloss: { episodes } } : {}),
  });
  console.log(JSON.stringify(summary));
  return failed ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // LazyFS missing or unmountable is a setup problem: one line, no stack.
    if (err instanceof LazyFsError) console.error(`crash harness: ${err.code}: ${err.message}`);
    else console.error(`crash harness: ${(err as Error)?.stack ?? String(err)}`);
    process.exitCode = 3;
  },
);
