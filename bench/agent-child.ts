/**
 * Bench-only entry: the agent and its virtual printer(s) in one process, the way test/support/e2e.ts
 * assembles them, talking to the bench's D1 (in the parent process) over a real ws link. The parent
 * drives it over IPC (bench/lib/child.ts). Run as `node --import tsx bench/agent-child.ts '<json>'`,
 * so that the process's RSS is the agent's (plus the simulated printer it carries).
 */
import { readFileSync } from "node:fs";
import type { ProductionJob } from "../agent/jobs/production-job.js";
import { type CardImage, sameImage } from "../drivers/printer/card-image.js";
import type { EvolisPrinter } from "../drivers/printer/evolis/evolis-printer.js";
import type { PrintLine } from "../drivers/printer/raster/render.js";
import type { CardRecord, VirtualEvolisPrinter } from "../simulator/printer/virtual-evolis-printer.js";
import { nowMs } from "./lib/util.js";

// Everything heavy is imported here, timed: the cold-start figure splits module loading from start-up.
const modulesStartedAt = performance.now();
const { systemClock } = await import("../agent/util/clock.js");
const { createLogger } = await import("../agent/log/logger.js");
const { EvolisPrinter: Driver } = await import("../drivers/printer/evolis/evolis-printer.js");
const { EVOLIS_PRINT_AREA } = await import("../drivers/printer/evolis/panel.js");
const { renderCardImage } = await import("../drivers/printer/raster/render.js");
const { SerialTransport } = await import("../drivers/transport/serial-transport.js");
const { attachVirtualPrinter } = await import("../simulator/printer/index.js");
const { AGENT_PORT, assembleAgent, BARE_PORT, cachedRenderer, replaceRenderer } = await import(
  "./lib/assemble.js"
);
const { RawBitmapTransport } = await import("./lib/raw-bitmap-transport.js");
const modulesLoadedAt = performance.now();

export interface ChildOptions {
  d1Url: string;
  token: string;
  dataDir: string;
  logFile: string;
  /** The printer reports an empty feeder: accepted jobs wait (printer held). */
  feederEmpty?: boolean;
  holdWhileStoppedSec?: number;
  /** Plug the bare-driver printers (compressed and raw-Db baseline) next to the agent's. */
  bare?: boolean;
  /** "resvg" (as shipped), "cache" (memoised on the print lines), "prerendered" (panels sent ahead). */
  render?: "resvg" | "cache" | "prerendered";
  /** Report ready, stop the agent and exit (cold-start runs). */
  exitAfterReady?: boolean;
  /**
   * Runtime experiments (never on in the reported figures): "sync-off": synchronous=OFF throughout,
   * what the fsyncs cost (attribution only).
   */
  experiments?: string[];
}

export type TakeMode = { kind: "now" } | { kind: "random"; minMs: number; maxMs: number; seed: number };

const RAW_PORT = "/dev/ttyVIRT2";
const options = JSON.parse(process.argv[2] ?? "{}") as ChildOptions;
const send = (message: object): void => {
  process.send?.(message);
};

const constructStartedAt = performance.now();
const { agent, binding, printer, barePrinter } = assembleAgent({
  d1Url: options.d1Url,
  token: options.token,
  dataDir: options.dataDir,
  logFile: options.logFile,
  takeAfterMs: null,
  feederEmpty: options.feederEmpty,
  holdWhileStoppedSec: options.holdWhileStoppedSec,
  withBarePrinter: options.bare,
});
const constructedAt = performance.now();

for (const experiment of options.experiments ?? []) {
  if (experiment === "sync-off") agent.store.db.pragma("synchronous = OFF");
  else throw new Error(`unknown experiment ${experiment}`);
}

const prerendered = new Map<string, CardImage>();
const renderCache = cachedRenderer();
if (options.render === "cache") replaceRenderer(agent, renderCache);
if (options.render === "prerendered") replaceRenderer(agent, prerenderedPanel);

function prerenderedPanel(lines: PrintLine[]): CardImage {
  const image = prerendered.get(JSON.stringify(lines));
  if (!image) throw new Error("bench: side was not pre-rendered");
  return image;
}

// ---- the cardholder -------------------------------------------------------------------------------
let take: TakeMode = { kind: "now" };
let seed = 1;
const rand = (): number => {
  seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
  return seed / 0x7fffffff;
};
const lastPanels = new Map<VirtualEvolisPrinter, { front?: CardImage; back?: CardImage }>();
function cardholder(p: VirtualEvolisPrinter, reportTaken: boolean): void {
  p.on("card-presented", () => {
    if (take.kind === "now") setImmediate(() => p.takeCardNow());
    else setTimeout(() => p.takeCardNow(), take.minMs + rand() * (take.maxMs - take.minMs));
  });
  p.on("card-taken", (card: CardRecord) => {
    const at = nowMs();
    lastPanels.set(p, { front: card.front, back: card.back });
    if (reportTaken) send({ ev: "taken", operationId: agent.pipeline.current?.operationId, at });
  });
}
cardholder(printer, true);

// When the agent hands CARD_PROD_DONE to its socket: splits the status latency into the agent's part
// and the link's part.
{
  const link = agent.link as unknown as { send: (m: unknown) => boolean };
  const send0 = link.send.bind(agent.link);
  link.send = (message: unknown) => {
    const ok = send0(message);
    const m = message as {
      type?: string;
      operations?: Array<{ operationId: string; details: { status: string } }>;
    };
    if (ok && m.type === "notify") {
      const at = nowMs();
      for (const op of m.operations ?? [])
        if (op.details.status === "CARD_PROD_DONE")
          send({ ev: "done-sent", operationId: op.operationId, at });
    }
    return ok;
  };
}

// ---- bare reference drivers -------------------------------------------------------------------------
let bare: EvolisPrinter | undefined;
let raw: EvolisPrinter | undefined;
let rawPrinter: VirtualEvolisPrinter | undefined;
if (options.bare) {
  const quiet = createLogger({ level: "silent" });
  rawPrinter = attachVirtualPrinter(binding, RAW_PORT, {
    takeAfterMs: null,
    feederCards: 10_000_000,
    ribbonPanels: 999_999,
    rejectBoxCapacity: 10_000_000,
    keepRecords: 0,
  });
  cardholder(barePrinter!, false);
  cardholder(rawPrinter, false);
  // Behind a serial link, like the agent's (the same command sequence per card).
  bare = new Driver({
    transport: new SerialTransport({ path: BARE_PORT, baudRate: 115_200, binding }),
    link: "serial",
    clock: systemClock,
    logger: quiet,
  });
  raw = new Driver({
    transport: new RawBitmapTransport(new SerialTransport({ path: RAW_PORT, baudRate: 115_200, binding })),
    link: "serial",
    clock: systemClock,
    logger: quiet,
  });
}

function panelsOf(job: ProductionJob): { front: CardImage; back: CardImage } {
  return {
    front: renderCardImage(job.productionData.print!.front! as PrintLine[], EVOLIS_PRINT_AREA),
    back: renderCardImage(job.productionData.print!.back! as PrintLine[], EVOLIS_PRINT_AREA),
  };
}

/** The pipeline's printer command sequence for this card, on a bare driver (no store, no D1). */
async function bareCard(driver: EvolisPrinter, port: string, job: ProductionJob) {
  const panels = panelsOf(job);
  const bytes0 = binding.bytesFromHost(port);
  const t0 = nowMs();
  const data = job.productionData;
  await driver.insertCard();
  await driver.printSides(panels);
  const { track1, track2, track3, coercivity } = data.magstripe!;
  await driver.encodeMagstripe({ track1, track2, track3 }, coercivity ?? "HICO");
  await driver.presentCard();
  const taken = await driver.waitForCardTaken((data.delivery?.collectTimeoutSec ?? 60) * 1000);
  if (!taken) throw new Error("bare card not taken");
  return { ms: nowMs() - t0, bytes: binding.bytesFromHost(port) - bytes0 };
}

function memory(gc: boolean) {
  if (gc) (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  const mb = (n: number) => n / 1024 / 1024;
  return {
    rssMb: mb(m.rss),
    heapUsedMb: mb(m.heapUsed),
    heapTotalMb: mb(m.heapTotal),
    externalMb: mb(m.external),
    arrayBuffersMb: mb(m.arrayBuffers),
    ...rssKinds(),
  };
}

/** Linux: how much of RSS is anonymous (heaps, malloc) and how much file-backed (code, libraries). */
function rssKinds(): { rssAnonMb?: number; rssFileMb?: number } {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
    return { rssAnonMb: kb("RssAnon") / 1024, rssFileMb: kb("RssFile") / 1024 };
  } catch {
    return {};
  }
}

type Request = { id: number; cmd: string } & Record<string, unknown>;

async function handle(req: Request): Promise<unknown> {
  switch (req.cmd) {
    case "mem":
      return memory(req["gc"] === true);
    case "take":
      take = req["mode"] as TakeMode;
      if (take.kind === "random") seed = take.seed;
      return {};
    case "bytes":
      return { agent: binding.bytesFromHost(AGENT_PORT) };
    case "prerender": {
      const job = req["job"] as ProductionJob;
      const p = panelsOf(job);
      prerendered.clear();
      prerendered.set(JSON.stringify(job.productionData.print!.front), p.front);
      prerendered.set(JSON.stringify(job.productionData.print!.back), p.back);
      return {};
    }
    case "render-mode": {
      const mode = req["mode"] as ChildOptions["render"];
      replaceRenderer(
        agent,
        mode === "prerendered" ? prerenderedPanel : mode === "cache" ? renderCache : renderCardImage,
      );
      return {};
    }
    case "render-time": {
      const out: number[] = [];
      for (const job of req["jobs"] as ProductionJob[]) {
        const t0 = nowMs();
        panelsOf(job);
        out.push(nowMs() - t0);
      }
      return { ms: out };
    }
    case "bare": {
      const job = req["job"] as ProductionJob;
      if (req["raw"] === true) {
        const agentPanels = lastPanels.get(printer);
        const r = await bareCard(raw!, RAW_PORT, job);
        const rawPanels = lastPanels.get(rawPrinter!);
        const same =
          agentPanels?.front !== undefined &&
          rawPanels?.front !== undefined &&
          sameImage(agentPanels.front, rawPanels.front) &&
          agentPanels.back !== undefined &&
          rawPanels.back !== undefined &&
          sameImage(agentPanels.back, rawPanels.back);
        return { ...r, same };
      }
      return bareCard(bare!, BARE_PORT, job);
    }
    case "db": {
      const db = agent.store.db;
      return {
        journalMode: db.pragma("journal_mode", { simple: true }),
        synchronous: db.pragma("synchronous", { simple: true }),
        counts: agent.store.countsByState(),
        outboxDepth: agent.store.outboxDepth(),
        renderCache: { hits: renderCache.hits, misses: renderCache.misses },
      };
    }
    case "sync": {
      // Queue filling only (bench/figures/queue.ts): fsync costs time, not memory.
      const mode = req["mode"];
      if (mode !== "OFF" && mode !== "FULL") throw new Error("sync mode must be OFF or FULL");
      agent.store.db.pragma(`synchronous = ${mode}`);
      return {};
    }
    case "stop":
      await shutdown();
      return {};
    default:
      throw new Error(`unknown command ${req.cmd}`);
  }
}

let stopping: Promise<void> | undefined;
function shutdown(): Promise<void> {
  stopping ??= (async () => {
    await bare?.close().catch(() => undefined);
    await raw?.close().catch(() => undefined);
    await agent.stop();
  })();
  return stopping;
}

process.on("message", (req: Request) => {
  handle(req).then(
    (result) => send({ id: req.id, ok: true, result }),
    (err: unknown) => send({ id: req.id, ok: false, error: String((err as Error)?.stack ?? err) }),
  );
});
process.on("disconnect", () => {
  void shutdown().finally(() => process.exit(0));
});

// ---- start ------------------------------------------------------------------------------------------
const startCalledAt = performance.now();
agent.start();
let linkUpAt: number | undefined = agent.link.isUp ? performance.now() : undefined;
agent.link.once("up", () => {
  linkUpAt = performance.now();
  void maybeReady();
});
let printerReadyAt: number | undefined;
void agent.ready().then(() => {
  printerReadyAt = performance.now();
  void maybeReady();
});
let reported = false;
async function maybeReady(): Promise<void> {
  if (reported || linkUpAt === undefined || printerReadyAt === undefined) return;
  reported = true;
  if (bare) await bare.open();
  if (raw) await raw.open();
  send({
    ev: "ready",
    pid: process.pid,
    timeOrigin: performance.timeOrigin,
    readyAbs: nowMs(),
    marks: {
      modulesStartedAt,
      modulesLoadedAt,
      constructStartedAt,
      constructedAt,
      startCalledAt,
      printerReadyAt,
      linkUpAt,
    },
  });
  if (options.exitAfterReady) {
    await shutdown();
    process.exit(0);
  }
}
