import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AgentDependencies, KioskAgent } from "../../agent/agent.js";
import { parseConfig } from "../../agent/config/load.js";
import type { AgentConfigInput } from "../../agent/config/schema.js";
import { makeSampleJob } from "../../agent/jobs/sample-jobs.js";
import type { Clock } from "../../agent/util/clock.js";
import { InProcessApduTransport, VirtualCard } from "../../simulator/chip/virtual-card.js";
import { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import { attachVirtualPrinter } from "../../simulator/printer/index.js";
import type {
  VirtualEvolisPrinter,
  VirtualPrinterOptions,
} from "../../simulator/printer/virtual-evolis-printer.js";
import { VirtualSerialBinding } from "../../simulator/serial/virtual-binding.js";
import { captureLogs } from "./log-capture.js";
import { pollUntil } from "./poll.js";

export const STATION = "KIOSK-PS-101";
export const PRINTER_PATH = "/dev/ttyVIRT0";

export interface Rig {
  agent: KioskAgent;
  emulator: D1Emulator;
  printer: VirtualEvolisPrinter;
  binding: VirtualSerialBinding;
  card: VirtualCard;
  dataDir: string;
  logs: ReturnType<typeof captureLogs>;
  /** Builds a fresh agent on the same data dir and devices (a restart). */
  restart(): Promise<KioskAgent>;
  close(): Promise<void>;
}

export interface RigOptions {
  takeAfterMs?: number | null;
  clock?: Clock;
  config?: Partial<AgentConfigInput>;
  ackMode?: "auto" | "manual";
  /**
   * Runs before the agent starts, with the data dir and the devices: tests put a previous run's
   * state there (jobs left in production, a card left in the printer).
   */
  prepare?: (ctx: {
    dataDir: string;
    binding: VirtualSerialBinding;
    printer: VirtualEvolisPrinter;
  }) => Promise<void>;
  /** For a separate magstripe encoder over HID: the simulator's HID device. */
  hidBackend?: AgentDependencies["hidBackend"];
  /** The agent's chip reader (default: the in-process transport over `rig.card`). */
  chip?: AgentDependencies["chip"];
  /** Simulated printer latencies (default: answer on the next turn). */
  latency?: { commandMs?: number; printMs?: number; magMs?: number };
  /** Keep the host's bytes to the printer: `binding.takeRecording(PRINTER_PATH)`. */
  recordWire?: boolean;
  /** More simulated printer options (feeders, ribbon, cleaning thresholds). */
  printer?: VirtualPrinterOptions;
}

/**
 * The whole product on loopback: D1 emulator (real ws server), the agent (real ws client, real
 * SQLite file, real SerialPortStream) and the simulated printer under a serialport binding.
 */
export async function startRig(options: RigOptions = {}): Promise<Rig> {
  const dataDir = mkdtempSync(join(tmpdir(), "kiosk-e2e-"));
  const logs = captureLogs("debug");
  const token = randomBytes(12).toString("hex");
  const emulator = new D1Emulator({ token, ackMode: options.ackMode ?? "auto" });
  const { url } = await emulator.start();
  const binding = new VirtualSerialBinding();
  const printer = attachVirtualPrinter(binding, PRINTER_PATH, {
    // One clock for both sides: a fake clock moves the printer's waits and the agent's timeouts together.
    ...(options.clock ? { clock: options.clock } : {}),
    takeAfterMs: options.takeAfterMs === undefined ? 0 : options.takeAfterMs,
    ...(options.latency ? { latency: { commandMs: 0, printMs: 0, magMs: 0, ...options.latency } } : {}),
    ...(options.recordWire ? { record: true } : {}),
    ...options.printer,
  });
  const card = new VirtualCard();
  const config = parseConfig({
    station: { id: STATION },
    d1: { url, token, allowInsecure: true, backoff: { initialMs: 20, maxMs: 200 }, ...options.config?.d1 },
    dataDir,
    printer: {
      path: PRINTER_PATH,
      statusPollMs: 20,
      reopen: { initialMs: 20, maxMs: 200 },
      ...options.config?.printer,
    },
    ...(options.config?.magstripe ? { magstripe: options.config.magstripe } : {}),
    production: {
      defaultCollectTimeoutSec: 30,
      holdWhileStoppedSec: 5,
      ...options.config?.production,
    },
  });
  const make = () =>
    new KioskAgent(config, {
      logger: logs.logger,
      serialBinding: binding,
      chip: options.chip ?? new InProcessApduTransport(card),
      ...(options.hidBackend ? { hidBackend: options.hidBackend } : {}),
      ...(options.clock ? { clock: options.clock } : {}),
    });
  await options.prepare?.({ dataDir, binding, printer });
  const rig: Rig = {
    agent: make(),
    emulator,
    printer,
    binding,
    card,
    dataDir,
    logs,
    async restart() {
      await rig.agent.stop();
      rig.agent = make();
      rig.agent.start();
      return rig.agent;
    },
    async close() {
      await rig.agent.stop().catch(() => undefined);
      await emulator.stop();
    },
  };
  rig.agent.start();
  await emulator.waitForConnection(STATION, 10_000);
  return rig;
}

let counter = 0;
/** A valid job for this rig's station, unique per call. */
export function job(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const base = makeSampleJob(counter++, {
    station: STATION,
    runId: randomBytes(3).toString("hex"),
  }) as unknown as Record<string, unknown>;
  return { ...base, ...overrides };
}

/** The D1 statuses D1 received for an operation, in arrival order (duplicates excluded). */
export function statusesAtD1(emulator: D1Emulator, operationId: string): string[] {
  return emulator.operations(operationId).map((o) => o.details.status);
}

/**
 * Resolves once `predicate` holds, re-checking on every turn of the event loop. For conditions on
 * the agent's side, which raise no event the test could await. Fails after `timeoutMs`.
 */
export function until(predicate: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
  return pollUntil(predicate, { timeoutMs, what, everyMs: 2 });
}
