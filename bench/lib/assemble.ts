import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { KioskAgent } from "../../agent/agent.js";
import { parseConfig } from "../../agent/config/load.js";
import { makeSampleJob } from "../../agent/jobs/sample-jobs.js";
import { createLogger } from "../../agent/log/logger.js";
import type { SideRenderer } from "../../agent/pipeline/pipeline.js";
import type { CardImage, PrintArea } from "../../drivers/printer/card-image.js";
import type { PrintLine } from "../../drivers/printer/raster/render.js";
import { renderCardImage } from "../../drivers/printer/raster/render.js";
import { attachVirtualPrinter } from "../../simulator/printer/index.js";
import type { VirtualEvolisPrinter } from "../../simulator/printer/virtual-evolis-printer.js";
import { VirtualSerialBinding } from "../../simulator/serial/virtual-binding.js";

export const STATION = "KIOSK-PS-101";
export const AGENT_PORT = "/dev/ttyVIRT0";
/** The bare-driver reference runs on its own virtual printer, on the same binding. */
export const BARE_PORT = "/dev/ttyVIRT1";

/**
 * Data directories go under the repo's ignored `tmp/` (same ext4 file system as /tmp here): the store
 * must be on a real disk for synchronous=FULL to mean an fsync. Never tmpfs.
 */
export function benchDataDir(prefix: string): string {
  const base = join(process.cwd(), "tmp");
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, `bench-${prefix}-`));
}

export interface AssembleOptions {
  d1Url: string;
  token: string;
  dataDir: string;
  /** Agent log file (JSON lines, level info, async like the service's stdout logger). */
  logFile: string;
  /** The simulated cardholder takes a presented card after this long; null: the bench takes it. */
  takeAfterMs: number | null;
  /** The printer reports an empty feeder: jobs are accepted and wait (the "printer held" case). */
  feederEmpty?: boolean;
  /** How long a job waits for a stopped printer before failing; long for the queued-jobs figures. */
  holdWhileStoppedSec?: number;
  /** Also plug a second virtual printer at BARE_PORT for the bare-driver reference. */
  withBarePrinter?: boolean;
}

export interface Assembled {
  agent: KioskAgent;
  binding: VirtualSerialBinding;
  printer: VirtualEvolisPrinter;
  barePrinter: VirtualEvolisPrinter | undefined;
}

const BIG = 10_000_000;

/**
 * The agent and the virtual printer in this process, wired as test/support/e2e.ts and the demo do
 * (KioskAgent over a VirtualSerialBinding, real SQLite file, real ws client), with the product's
 * default timings (config schema defaults) except the D1 reconnect backoff. The printer answers with
 * zero latency and never runs out of cards or ribbon.
 */
export function assembleAgent(o: AssembleOptions): Assembled {
  const binding = new VirtualSerialBinding();
  const printer = attachVirtualPrinter(binding, AGENT_PORT, {
    takeAfterMs: o.takeAfterMs,
    feederCards: o.feederEmpty ? 0 : BIG,
    ribbonPanels: 999_999,
    rejectBoxCapacity: BIG,
    // Long runs: the simulator's record of each card (both panels) is its memory, not the agent's.
    keepRecords: 0,
  });
  const barePrinter = o.withBarePrinter
    ? attachVirtualPrinter(binding, BARE_PORT, {
        takeAfterMs: o.takeAfterMs,
        feederCards: BIG,
        ribbonPanels: 999_999,
        rejectBoxCapacity: BIG,
        keepRecords: 0,
      })
    : undefined;
  const config = parseConfig({
    station: { id: STATION },
    d1: { url: o.d1Url, token: o.token, allowInsecure: true, backoff: { initialMs: 50, maxMs: 500 } },
    dataDir: o.dataDir,
    printer: { link: "serial", path: AGENT_PORT },
    production: { holdWhileStoppedSec: o.holdWhileStoppedSec ?? 120 },
    log: { level: "info" },
  });
  const logger = createLogger({
    level: "info",
    destination: pino.destination({ dest: o.logFile, sync: false }),
  });
  const agent = new KioskAgent(config, { logger, serialBinding: binding });
  return { agent, binding, printer, barePrinter };
}

/**
 * Bench-only: replaces the pipeline's side renderer with `render`. The agent hard-wires resvg
 * (agent.ts passes `renderCardImageAsync`), so the figures that exclude rendering reach into the
 * pipeline's options object; nothing else about the agent changes.
 */
export function replaceRenderer(agent: KioskAgent, render: SideRenderer): void {
  const pipeline = agent.pipeline as unknown as { options: { render: SideRenderer } };
  if (typeof pipeline.options?.render !== "function") {
    throw new Error("bench: the pipeline no longer keeps options.render; update bench/lib/assemble.ts");
  }
  pipeline.options.render = render;
}

/** renderCardImage memoised on the print lines: the "render cache" of the long-run figure. */
export function cachedRenderer(): SideRenderer & { hits: number; misses: number } {
  const cache = new Map<string, CardImage>();
  const fn = ((lines: PrintLine[], area: PrintArea) => {
    const key = JSON.stringify(lines);
    let image = cache.get(key);
    if (image) {
      fn.hits++;
      return image;
    }
    fn.misses++;
    image = renderCardImage(lines, area);
    cache.set(key, image);
    return image;
  }) as SideRenderer & { hits: number; misses: number };
  fn.hits = 0;
  fn.misses = 0;
  return fn;
}

export function newToken(): string {
  return randomBytes(16).toString("hex");
}

export function newRunId(): string {
  return randomBytes(4).toString("hex");
}

/**
 * A typical kiosk card (makeSampleJob: PAN, name, expiry on the front, CSC on the back, tracks 1 and
 * 2), unique per index. With `layouts`, the printed content repeats every `layouts` jobs (ids stay
 * unique), so a render cache can hit.
 */
export function benchJob(i: number, runId: string, layouts?: number): Record<string, unknown> {
  const ids = makeSampleJob(i, { station: STATION, runId, collectTimeoutSec: 60 });
  if (layouts === undefined) return ids as unknown as Record<string, unknown>;
  const content = makeSampleJob(i % layouts, { station: STATION, runId, collectTimeoutSec: 60 });
  return {
    ...content,
    operationId: ids.operationId,
    cardId: ids.cardId,
    issuerRequestId: ids.issuerRequestId,
  } as unknown as Record<string, unknown>;
}
