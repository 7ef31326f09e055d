import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PrinterSupervisor } from "../../agent/devices/printer-supervisor.js";
import { silentLogger } from "../../agent/log/logger.js";
import { ProductionPipeline, type SideRenderer } from "../../agent/pipeline/pipeline.js";
import { JobStore, type OutboxEvent } from "../../agent/store/job-store.js";
import { loadOrCreateKey, SealedBox } from "../../agent/store/sealed-box.js";
import type { ManualClock } from "../../agent/util/clock.js";
import type { MagstripeEncoder } from "../../drivers/magstripe/encoder.js";
import { blankImage } from "../../drivers/printer/card-image.js";
import { EVOLIS_PRINT_AREA } from "../../drivers/printer/evolis/panel.js";
import type { FakePrinter } from "./fake-printer.js";

/**
 * The pipeline alone over a real job store, a real supervisor and a FakePrinter: for tests of one
 * decision of the pipeline without a D1 link. `cleanups` runs in reverse after each test.
 */
export function pipelineRig(cleanups: Array<() => void>) {
  function openStore(clock: ManualClock): JobStore {
    const dir = mkdtempSync(join(tmpdir(), "pipeline-rig-"));
    const store = new JobStore(
      join(dir, "jobs.sqlite"),
      new SealedBox(loadOrCreateKey(join(dir, "data.key"))),
      clock,
    );
    cleanups.push(() => {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    });
    return store;
  }

  function acceptJob(store: JobStore, operationId: string, productionData: unknown = {}): void {
    store.accept({
      kind: "valid",
      operationId,
      cardId: `card-${operationId}`,
      jobJson: JSON.stringify({ productionData }),
      maskedPan: "526609******6174",
    });
  }

  async function startedSupervisor(printer: FakePrinter, clock: ManualClock): Promise<PrinterSupervisor> {
    const supervisor = new PrinterSupervisor({
      printer: printer.driver,
      clock,
      logger: silentLogger,
      pollMs: 1_000,
      reopen: { initialMs: 1_000, maxMs: 10_000 },
    });
    cleanups.push(() => supervisor.stop());
    await supervisor.start();
    return supervisor;
  }

  function pipelineFor(
    store: JobStore,
    printer: FakePrinter,
    supervisor: PrinterSupervisor,
    clock: ManualClock,
    events: OutboxEvent[],
    options: { holdWhileStoppedMs?: number; render?: SideRenderer } = {},
  ): ProductionPipeline {
    return new ProductionPipeline({
      store,
      printer: printer.driver,
      supervisor,
      magstripe: {} as MagstripeEncoder,
      holdWhileStoppedMs: options.holdWhileStoppedMs ?? 120_000,
      render: options.render ?? (() => blankImage(EVOLIS_PRINT_AREA)),
      clock,
      logger: silentLogger,
      defaultCollectTimeoutSec: 30,
      onEvent: (e) => events.push(e),
    });
  }

  return { openStore, acceptJob, startedSupervisor, pipelineFor };
}
