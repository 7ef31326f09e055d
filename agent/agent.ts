import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { BindingInterface } from "@serialport/bindings-interface";
import type { ApduTransport } from "../drivers/chip/apdu-transport.js";
import {
  type ConfiguredMagstripeEncoder,
  createMagstripeEncoder,
} from "../drivers/magstripe/create-encoder.js";
import { PrinterDriver } from "../drivers/printer/driver.js";
import { renderPanel } from "../drivers/printer/raster/render.js";
import type { HidBackend } from "../drivers/transport/hid-transport.js";
import { SerialTransport } from "../drivers/transport/serial-transport.js";
import type { AgentConfig } from "./config/schema.js";
import { ConsoleServer } from "./console/server.js";
import type { SimulatorControls } from "./console/types.js";
import { D1Link } from "./d1/link.js";
import type {
  CancelMessage,
  CancelResultMessage,
  PushMessage,
  PushResultMessage,
  StatusQueryMessage,
  StatusResultMessage,
} from "./d1/messages.js";
import { PrinterSupervisor } from "./devices/printer-supervisor.js";
import { validateJob } from "./jobs/validate.js";
import type { Logger } from "./log/logger.js";
import { maskPan } from "./log/mask.js";
import { OutboxSender } from "./outbox/sender.js";
import { ProductionPipeline } from "./pipeline/pipeline.js";
import { REASONS } from "./pipeline/reasons.js";
import { recoverInterruptedJobs } from "./pipeline/recovery.js";
import { JobStore } from "./store/job-store.js";
import { loadOrCreateKey, SealedBox } from "./store/sealed-box.js";
import { type Clock, systemClock, type TimerHandle } from "./util/clock.js";
import { AGENT_VERSION } from "./version.js";

export interface AgentDependencies {
  logger: Logger;
  clock?: Clock;
  /** The serialport binding under the printer port: the OS one on a kiosk, the simulator's in a demo. */
  serialBinding: BindingInterface;
  /** The chip reader, when the kiosk has one. */
  chip?: ApduTransport;
  /** node-hid, or the simulator's HID device, for a separate magstripe encoder over USB HID. */
  hidBackend?: HidBackend | (() => Promise<HidBackend>);
  /** Simulator mode (demo, tests): the local console shows fault and sample-job buttons. */
  simulator?: SimulatorControls;
}

/**
 * The service: D1 link → job store → production pipeline → printer, and back through the outbox.
 * docs/architecture.md draws it.
 */
export class KioskAgent {
  readonly store: JobStore;
  readonly link: D1Link;
  readonly outbox: OutboxSender;
  readonly printer: PrinterDriver;
  readonly supervisor: PrinterSupervisor;
  readonly magstripe: ConfiguredMagstripeEncoder;
  readonly pipeline: ProductionPipeline;
  /** The local web console and status API, when `console.enabled` (docs/console.md). */
  readonly console: ConsoleServer | undefined;
  private readonly clock: Clock;
  private readonly log: Logger;
  private started = false;
  private startup: Promise<void> = Promise.resolve();

  constructor(
    readonly config: AgentConfig,
    deps: AgentDependencies,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.log = deps.logger.child({ station: config.station.id });
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    const box = new SealedBox(loadOrCreateKey(join(config.dataDir, "data.key")));
    this.store = new JobStore(join(config.dataDir, "jobs.sqlite"), box, this.clock);
    this.link = new D1Link({
      url: config.d1.url,
      token: config.d1.token,
      station: config.station.id,
      agentVersion: AGENT_VERSION,
      clock: this.clock,
      logger: this.log,
      backoff: config.d1.backoff,
      pingIntervalMs: config.d1.pingIntervalMs,
      missedPongs: config.d1.missedPongs,
    });
    this.outbox = new OutboxSender({
      store: this.store,
      link: this.link,
      clock: this.clock,
      logger: this.log,
      resendAfterMs: config.d1.resendAfterMs,
    });
    const transport = new SerialTransport({
      path: config.printer.path,
      baudRate: config.printer.baudRate,
      binding: deps.serialBinding,
    });
    this.printer = new PrinterDriver({
      transport,
      clock: this.clock,
      logger: this.log,
      timeouts: config.printer.timeouts,
    });
    this.supervisor = new PrinterSupervisor({
      printer: this.printer,
      clock: this.clock,
      logger: this.log,
      pollMs: config.printer.statusPollMs,
      reopen: config.printer.reopen,
      onFirstOpen: () =>
        recoverInterruptedJobs({
          store: this.store,
          printer: this.printer,
          logger: this.log,
          onEvent: () => this.outbox.flush(),
        }),
    });
    this.magstripe = createMagstripeEncoder(config.magstripe, {
      clock: this.clock,
      logger: this.log,
      printer: this.printer,
      serialBinding: deps.serialBinding,
      ...(deps.hidBackend ? { hidBackend: deps.hidBackend } : {}),
    });
    this.pipeline = new ProductionPipeline({
      store: this.store,
      printer: this.printer,
      magstripe: this.magstripe.encoder,
      supervisor: this.supervisor,
      holdWhileStoppedMs: config.production.holdWhileStoppedSec * 1000,
      chip: deps.chip,
      render: renderPanel,
      clock: this.clock,
      logger: this.log,
      defaultCollectTimeoutSec: config.production.defaultCollectTimeoutSec,
      onEvent: () => this.outbox.flush(),
    });
    this.console = config.console.enabled
      ? new ConsoleServer({
          agent: this,
          logger: this.log,
          clock: this.clock,
          host: config.console.host,
          port: config.console.port,
          token: config.console.token,
          tokenFile: join(config.dataDir, "console.token"),
          simulator: deps.simulator,
        })
      : undefined;
    this.link.on("message", (message) => {
      switch (message.type) {
        case "push":
          this.link.send(this.onPush(message));
          return;
        case "ack":
          this.outbox.onAck(message.eventIds);
          return;
        case "status-query":
          this.link.send(this.onStatusQuery(message));
          return;
        case "cancel":
          this.onCancel(message).then(
            (answer) => this.link.send(answer),
            (err: unknown) => {
              this.log.error({ err, operationId: message.operationId }, "cancel failed");
              this.link.send({
                type: "error",
                requestId: message.requestId,
                code: "INTERNAL",
                message: "cancel could not be processed",
              });
            },
          );
          return;
      }
    });
  }

  /**
   * Starts the link at once (jobs are accepted into the store even while the printer is away), the
   * printer supervisor (which opens the printer and, once, recovers jobs a previous run left in
   * production) and the pipeline, which waits for the printer before each card.
   */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.log.info({ version: AGENT_VERSION }, "kiosk agent starting");
    this.link.start();
    this.startup = this.supervisor.start();
    // A separate encoder is opened now so a missing one shows in the log at start; if it is absent
    // the first card's encode step re-tries it and fails that card with the reason.
    this.magstripe.device?.open().catch((err: unknown) => {
      this.log.warn({ err }, "magstripe encoder not available at start");
    });
    this.pipeline.start();
    // A console that cannot listen (port taken) must not stop card production.
    this.console?.start().catch((err: unknown) => {
      this.log.error({ err }, "local console could not start; running without it");
    });
  }

  /** Resolves once the printer was opened (or the agent stops); tests and the demo wait on it. */
  ready(): Promise<void> {
    return this.startup;
  }

  async stop(): Promise<void> {
    await this.console?.stop();
    this.supervisor.stop();
    await this.pipeline.stop();
    this.outbox.flush();
    this.outbox.stop();
    await this.link.stop();
    await this.printer.close().catch(() => undefined);
    await this.magstripe.device?.close().catch(() => undefined);
    this.store.close();
    this.log.info("kiosk agent stopped");
  }

  /** Answers a push only after the job is committed (or refused): D1 may rely on "accepted". */
  onPush(message: PushMessage): PushResultMessage {
    const requestId = message.requestId;
    const verdict = validateJob(message.job, this.config.station.id);
    if (verdict.kind === "refused") {
      this.log.warn({ requestId, errorCode: verdict.errorCode, error: verdict.error }, "push refused");
      return {
        type: "push-result",
        requestId,
        result: "refused",
        errorCode: verdict.errorCode,
        error: verdict.error,
        ...(verdict.operationId ? { operationId: verdict.operationId } : {}),
      };
    }
    const header = verdict.kind === "valid" ? verdict.job : verdict.header;
    const accepted =
      verdict.kind === "valid"
        ? this.store.accept({
            kind: "valid",
            operationId: header.operationId,
            cardId: header.cardId,
            issuerRequestId: header.issuerRequestId,
            jobJson: JSON.stringify(verdict.job),
            maskedPan: panOf(verdict.job),
            collectTimeoutSec: verdict.job.productionData.delivery?.collectTimeoutSec,
          })
        : this.store.accept({
            kind: "data-exception",
            operationId: header.operationId,
            cardId: header.cardId,
            issuerRequestId: header.issuerRequestId,
            details: { reason: verdict.reason, errorCode: verdict.errorCode, error: verdict.error },
          });
    this.log.info(
      { requestId, operationId: header.operationId, state: accepted.state, duplicate: accepted.duplicate },
      accepted.duplicate ? "duplicate push answered as before" : "job accepted",
    );
    if (!accepted.duplicate) {
      queueMicrotask(() => {
        this.outbox.flush();
        this.pipeline.wake();
      });
    }
    return {
      type: "push-result",
      requestId,
      operationId: header.operationId,
      result: "accepted",
      ...(accepted.duplicate ? { duplicate: true } : {}),
    };
  }

  /**
   * D1 cancels an operation. Not started → CANCELED at once. In production before the card is
   * presented → the pipeline stops at the next step boundary, rejects the card → CANCELED.
   * Presented or finished → refused, nothing changes. Unknown → said so.
   */
  async onCancel(message: CancelMessage): Promise<CancelResultMessage> {
    const { requestId, operationId } = message;
    const answer = (result: CancelResultMessage["result"], reason?: string): CancelResultMessage => {
      const operation = this.store.latestOperation(operationId);
      return {
        type: "cancel-result",
        requestId,
        operationId,
        result,
        ...(reason ? { reason } : {}),
        ...(operation ? { operation } : {}),
      };
    };
    const row = this.store.get(operationId);
    if (!row) return answer("unknown-operation");
    this.log.info({ operationId, state: row.state }, "cancel requested by D1");
    switch (row.state) {
      case "READY": {
        const event = this.store.transition(operationId, "READY", "CANCELED", {
          reason: REASONS.ISSUER_CANCEL,
          errorCode: REASONS.ISSUER_CANCEL,
          error: "canceled before production",
        });
        if (event) this.outbox.flush();
        return answer("canceled");
      }
      case "PRODUCING": {
        const outcome = await this.pipeline.requestCancel(operationId);
        if (outcome.canceled) return answer("canceled");
        return answer("refused", outcome.state === "PRESENTED" ? "ALREADY_PRESENTED" : "ALREADY_FINISHED");
      }
      case "PRESENTED":
        return answer("refused", "ALREADY_PRESENTED");
      case "CANCELED":
        return answer("canceled", "ALREADY_CANCELED");
      default:
        return answer("refused", "ALREADY_FINISHED");
    }
  }

  onStatusQuery(message: StatusQueryMessage): StatusResultMessage {
    const ids = message.operationIds;
    const rows = ids
      ? ids.map((id) => ({ id, op: this.store.latestOperation(id) }))
      : this.store.jobsChangedSince(new Date(message.since ?? 0).toISOString()).map((r) => ({
          id: r.operationId,
          op: this.store.latestOperation(r.operationId),
        }));
    const unknown = rows.filter((r) => !r.op).map((r) => r.id);
    return {
      type: "status-result",
      requestId: message.requestId,
      operations: rows.flatMap((r) => (r.op ? [r.op] : [])),
      ...(unknown.length > 0 ? { unknownOperationIds: unknown } : {}),
    };
  }
}

function panOf(job: {
  productionData: { magstripe?: { track2?: string; track1?: string } };
}): string | undefined {
  const t2 = job.productionData.magstripe?.track2;
  const pan = t2?.split("=")[0] ?? job.productionData.magstripe?.track1?.slice(1).split("^")[0];
  return pan ? maskPan(pan) : undefined;
}
