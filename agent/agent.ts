import { join } from "node:path";
import type { BindingInterface } from "@serialport/bindings-interface";
import type { ApduTransport } from "../drivers/chip/apdu-transport.js";
import {
  type ConfiguredMagstripeEncoder,
  createMagstripeEncoder,
} from "../drivers/magstripe/create-encoder.js";
import type { CardPrinter } from "../drivers/printer/card-printer.js";
import { createPrinter } from "../drivers/printer/create-printer.js";
import { renderCardImageAsync } from "../drivers/printer/raster/render.js";
import type { HidBackend } from "../drivers/transport/hid-transport.js";
import { onAuditAppend } from "./audit/audit-chain.js";
import { pushSource } from "./audit/audit-log.js";
import { AuditForwarder, forwardTlsOptions } from "./audit/syslog-forwarder.js";
import type { AgentConfig } from "./config/schema.js";
import { ConsoleServer } from "./console/server.js";
import type { SimulatorControls } from "./console/types.js";
import { loadConfiguredStationKey, type PayloadFailureCode } from "./crypto/jwe.js";
import { PushPayloads, payloadFailureVerdict } from "./crypto/push-payloads.js";
import { tlsClientOptions } from "./crypto/tls.js";
import { D1Link } from "./d1/link.js";
import type {
  CancelMessage,
  CancelResultMessage,
  ErrorMessage,
  PushMessage,
  PushResultMessage,
  StatusQueryMessage,
  StatusResultMessage,
} from "./d1/messages.js";
import { PrinterSupervisor } from "./devices/printer-supervisor.js";
import { SwipePrompt } from "./devices/swipe-prompt.js";
import { createMetrics } from "./health/metrics.js";
import { HealthServer, type Readiness } from "./health/server.js";
import { readableOperationId, validateJob } from "./jobs/validate.js";
import type { Logger } from "./log/logger.js";
import { maskPan } from "./log/mask.js";
import { OutboxSender } from "./outbox/sender.js";
import { ProductionPipeline } from "./pipeline/pipeline.js";
import { REASONS } from "./pipeline/reasons.js";
import { recoverInterruptedJobs } from "./pipeline/recovery.js";
import { StockRouter } from "./stock/stock-router.js";
import { type SuppliesSnapshot, suppliesSnapshot } from "./stock/supplies.js";
import { checkDataDir, STORE_FILE, writeMarker } from "./store/data-dir.js";
import { loadDataKey } from "./store/data-key.js";
import { JobStore } from "./store/job-store.js";
import { RetentionSweeper } from "./store/retention.js";
import { SealedBox } from "./store/sealed-box.js";
import { type StoreFaultReason, storeFaultOf } from "./store/store-health.js";
import { type Clock, systemClock, type TimerHandle } from "./util/clock.js";
import { mkdirDurably } from "./util/durable-file.js";
import { restrictMode } from "./util/file-modes.js";
import { removePidFile, writePidFile } from "./util/pid-file.js";
import { AGENT_VERSION } from "./version.js";

export interface AgentDependencies {
  logger: Logger;
  clock?: Clock;
  /**
   * The serialport binding under a `printer.link: serial` port (and a serial magstripe encoder): the
   * OS one on a kiosk, the simulator's in a demo. USB and TCP links open the OS device directly.
   */
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
  /** The printer, through its family's adapter (drivers/printer/create-printer.ts). */
  readonly printer: CardPrinter;
  readonly supervisor: PrinterSupervisor;
  readonly magstripe: ConfiguredMagstripeEncoder;
  /** A hand-swipe encoder waiting for the teller (teller-assisted mode), for the console. */
  readonly swipePrompt: SwipePrompt;
  readonly pipeline: ProductionPipeline;
  /** Which feeder holds which card stock (printer.feeders; docs/stock.md). */
  readonly router: StockRouter;
  /** The local web console and status API, when `console.enabled` (docs/console.md). */
  readonly console: ConsoleServer | undefined;
  /** /healthz, /readyz, /metrics on 127.0.0.1, when `health.enabled` (docs/operations.md). */
  readonly health: HealthServer | undefined;
  private readonly disposeMetrics: (() => void) | undefined;
  /** `store.retentionDays`, applied at start and daily (agent/store/retention.ts). */
  private readonly retention: RetentionSweeper;
  /** Every audit row to the syslog collector, when `audit.forward` is set (agent/audit/syslog-forwarder.ts). */
  readonly auditForward: AuditForwarder | undefined;
  /** SIGTERM: no new jobs, the card in hand finished or parked within `shutdown.graceSec`. */
  /** Set by shutdown(): pushes are refused from then on. */
  private stopping = false;
  private shuttingDown: Promise<void> | undefined;
  private readonly payloads: PushPayloads;
  private readonly clock: Clock;
  private readonly log: Logger;
  private started = false;
  /** Answers of the pushes read in this turn; they share one transaction (group commit). */
  private pushBatch: Array<PushResultMessage | ErrorMessage> | undefined;
  private startup: Promise<void> = Promise.resolve();

  constructor(
    readonly config: AgentConfig,
    deps: AgentDependencies,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.log = deps.logger.child({ station: config.station.id });
    mkdirDurably(config.dataDir, 0o700);
    // 0700 even where no systemd made it (StateDirectoryMode=): the data key may live in it.
    if (!restrictMode(config.dataDir, 0o700))
      this.log.warn({ dataDir: config.dataDir }, "data directory is not 0700");
    // Never a new store over a lost one, nor a new key beside a store sealed with the old one
    // (docs/operations.md, "The data directory at start"): each refusal names the file.
    const dir = checkDataDir(config.dataDir);
    // The data key: a systemd credential, or the file DATA_DIR/data.key (agent/store/data-key.ts).
    const dataKey = loadDataKey(config.dataKey, config.dataDir, { fresh: dir.fresh });
    for (const note of dataKey.notes) this.log.warn({ dataKey: dataKey.where }, note);
    const box = new SealedBox(dataKey.key);
    // Read before the store opens: an unreadable certificate or key stops the start with its name.
    const forward = config.audit.forward;
    const forwardTls = forward && forwardTlsOptions(forward);
    this.store = new JobStore(join(config.dataDir, STORE_FILE), box, this.clock, config.stock, {
      minFreeBytes: config.store.minFreeMb * 1024 * 1024,
    });
    writeMarker(config.dataDir, this.store.storeId);
    if (forward) {
      const forwarder = new AuditForwarder({
        db: this.store.db,
        storeId: this.store.storeId,
        config: forward,
        clock: this.clock,
        logger: this.log,
        tls: forwardTls,
      });
      onAuditAppend(this.store.db, () => forwarder.wake());
      this.auditForward = forwarder;
    }
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
      tls: tlsClientOptions(config.d1),
    });
    this.outbox = new OutboxSender({
      store: this.store,
      link: this.link,
      clock: this.clock,
      logger: this.log,
      resendAfterMs: config.d1.resendAfterMs,
    });
    this.printer = createPrinter(config.printer, {
      clock: this.clock,
      logger: this.log,
      serialBinding: deps.serialBinding,
    });
    this.supervisor = new PrinterSupervisor({
      printer: this.printer,
      clock: this.clock,
      logger: this.log,
      pollMs: config.printer.statusPollMs,
      reopen: config.printer.reopen,
      supplyPollMs: config.printer.supplyPollSec * 1000,
      // Read between cards only, so every card the printer counted has its movement already.
      onCounters: (counters) => {
        if (counters.cardsInserted === undefined) return;
        try {
          this.store.stock.recordCounter(counters.cardsInserted);
        } catch (err) {
          // A reading lost to a full disk is taken again after the next card; never a reason to stop.
          if (!this.store.health.report(err)) throw err;
        }
      },
      onCardPathChecked: (cardFound) => this.store.resolveUnknownFeeds(cardFound),
      resyncFirstOpen: this.store.jobsIn(["PRODUCING", "PRESENTED"]).length > 0,
      onFirstOpen: () =>
        recoverInterruptedJobs({
          store: this.store,
          printer: this.printer,
          logger: this.log,
          onEvent: () => this.outbox.flush(),
        }),
    });
    this.swipePrompt = new SwipePrompt(this.clock);
    this.magstripe = createMagstripeEncoder(config.magstripe, {
      clock: this.clock,
      logger: this.log,
      printer: this.printer,
      serialBinding: deps.serialBinding,
      onSwipeRequest: (request) => this.swipePrompt.request(request),
      ...(deps.hidBackend ? { hidBackend: deps.hidBackend } : {}),
    });
    this.payloads = new PushPayloads(loadConfiguredStationKey(config.jwe), config.jwe.required, this.log);
    this.router = new StockRouter(config.printer.feeders, (feeder) =>
      this.store.stock.lastLoadedStock(feeder),
    );
    this.pipeline = new ProductionPipeline({
      router: this.router,
      store: this.store,
      printer: this.printer,
      magstripe: this.magstripe.encoder,
      supervisor: this.supervisor,
      holdWhileStoppedMs: config.production.holdWhileStoppedSec * 1000,
      chip: deps.chip,
      render: renderCardImageAsync,
      clock: this.clock,
      logger: this.log,
      defaultCollectTimeoutSec: config.production.defaultCollectTimeoutSec,
      onEvent: () => this.outbox.flush(),
    });
    // A store fault is the operator's to see (status, console, /readyz, metrics) and logged once
    // each way; production waits for it in the pipeline and resumes on the first write that succeeds.
    this.store.health.on("warning", (keyword, raised) => {
      const warning = this.store.health.warnings().find((w) => w.keyword === keyword);
      if (raised) this.log.warn({ warning: keyword, detail: warning?.detail }, "job store warning");
      else this.log.info({ warning: keyword }, "job store warning cleared");
    });
    this.retention = new RetentionSweeper({
      store: this.store,
      clock: this.clock,
      retentionDays: config.store.retentionDays,
      logger: this.log,
    });
    this.store.health.on("change", () => {
      const fault = this.store.health.fault;
      if (fault) this.log.error({ reason: fault.reason, detail: fault.detail }, "job store unavailable");
      else {
        this.log.info("job store writable again");
        this.pipeline.wake();
        this.outbox.flush();
      }
    });
    // The swipe the teller was asked for is over once the card moves on (or its job ends).
    this.pipeline.on("step", () => this.swipePrompt.clear());
    this.pipeline.on("finished", () => this.swipePrompt.clear());
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
          allowedHosts: config.console.allowedHosts,
        })
      : undefined;
    if (config.health.enabled) {
      const metrics = createMetrics(this, {
        clock: this.clock,
        station: config.station.id,
        version: AGENT_VERSION,
      });
      this.disposeMetrics = metrics.dispose;
      this.health = new HealthServer({
        port: config.health.port,
        registry: metrics.registry,
        readiness: () => this.readiness(),
        logger: this.log,
        version: AGENT_VERSION,
        allowedHosts: config.health.allowedHosts,
      });
    }
    this.link.on("message", (message) => {
      // Pushes read before a status query or cancel are committed and answered first: nothing may
      // read or report a job that is not on disk yet. An ack joins the batch: it reports nothing, and
      // if the batch failed, the acked events would only be sent again.
      if (message.type !== "push" && message.type !== "ack") this.endPushBatch();
      switch (message.type) {
        case "push":
          this.payloads.handle(message.job, (job, failure) => this.pushInBatch({ ...message, job }, failure));
          return;
        case "ack":
          this.outbox.onAck(message.eventIds);
          return;
        case "status-query":
          this.link.send(this.onStatusQuery(message));
          return;
        case "cancel": {
          // A cancel in production is answered once the card is in the reject box, which can outlast
          // the session it came on. An answer belongs to its session: on a new one D1 no longer waits
          // for that requestId, and learns the outcome from the job's status event instead.
          const session = this.link.stats.sessions;
          const answerOnSameSession = (answer: Parameters<D1Link["send"]>[0]): void => {
            if (this.link.stats.sessions !== session) {
              this.log.info(
                { operationId: message.operationId, requestId: message.requestId },
                "cancel answer dropped: the D1 session it came on has ended (the status event tells D1)",
              );
              return;
            }
            this.link.send(answer);
          };
          this.onCancel(message).then(answerOnSameSession, (err: unknown) => {
            this.log.error({ err, operationId: message.operationId }, "cancel failed");
            answerOnSameSession({
              type: "error",
              requestId: message.requestId,
              code: "INTERNAL",
              message: "cancel could not be processed",
            });
          });
          return;
        }
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
    // A technician's standalone `printer` command reads it and keeps off a printer this agent holds.
    writePidFile(this.config.dataDir, (err) => this.log.warn({ err }, "could not write the pid file"));
    this.retention.start();
    this.auditForward?.start();
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
    this.health?.start().catch((err: unknown) => {
      this.log.error({ err }, "health endpoint could not start; running without it");
    });
  }

  /** Resolves once the printer was opened (or the agent stops); tests and the demo wait on it. */
  ready(): Promise<void> {
    return this.startup;
  }

  /**
   * Graceful stop (SIGTERM; docs/operations.md#stopping): pushes are refused with SHUTTING_DOWN from
   * now on; the card in hand finishes its current step and is rejected, or, if presented, may be
   * taken until `shutdown.graceSec`, then is retracted (CARD_PROD_EXCEPTION, reason SHUTDOWN); READY
   * jobs stay for the next run. Then the outbox is flushed and acks awaited up to
   * `shutdown.flushSec`, and everything is closed. Idempotent.
   */
  shutdown(signal = "SIGTERM"): Promise<void> {
    this.shuttingDown ??= (async () => {
      const { graceSec, flushSec } = this.config.shutdown;
      this.stopping = true;
      this.pipeline.beginShutdown(graceSec * 1000);
      this.log.info({ signal, graceSec, inHand: this.pipeline.current }, "stopping: no new jobs");
      const parked = this.pipeline.stop();
      // A step the printer never answers is bounded by its own timeout; this is the last resort.
      const hardBound = (graceSec + 5) * 1000 + this.config.printer.timeouts.printMs;
      let timer: TimerHandle | undefined;
      const late = await Promise.race([
        parked.then(() => false),
        new Promise<boolean>((resolve) => {
          timer = this.clock.setTimeout(() => resolve(true), hardBound);
        }),
      ]);
      if (timer) this.clock.clearTimeout(timer);
      if (late) {
        this.log.error({ boundMs: hardBound }, "card in hand did not end in time; closing the printer");
        await this.printer.close().catch(() => undefined);
        await parked;
      }
      await this.payloads.idle();
      await this.flushOutbox(flushSec * 1000);
      await this.stop();
    })();
    return this.shuttingDown;
  }

  /** Sends what is unsent and waits until D1 acknowledged everything, up to `ms` (not if the link is down). */
  private async flushOutbox(ms: number): Promise<void> {
    this.outbox.flush();
    if (!this.link.isUp || this.store.outboxDepth() === 0 || ms <= 0) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        this.clock.clearTimeout(timer);
        this.link.off("message", onMessage);
        this.link.off("down", done);
        resolve();
      };
      const onMessage = (m: { type: string }): void => {
        if (m.type === "ack") queueMicrotask(() => this.store.outboxDepth() === 0 && done());
      };
      const timer = this.clock.setTimeout(() => {
        this.log.warn({ unacked: this.store.outboxDepth() }, "stopping before D1 acknowledged every status");
        done();
      }, ms);
      this.link.on("message", onMessage);
      this.link.on("down", done);
    });
  }

  /** Ribbon, feeders, bins, cleaning and the counter check, as the console, status and /metrics show them. */
  supplies(): SuppliesSnapshot {
    return suppliesSnapshot(this.supervisor.supplies, this.store.stock, this.router, {
      bins: this.config.printer.bins,
      capturedCardsGoTo: this.printer.capabilities.capturedCardsGoTo,
    });
  }

  /** /readyz: ready when the D1 link is up and the printer idle or busy, and not stopping. */
  readiness(): Readiness {
    const printer = this.supervisor.status;
    const reasons: string[] = [];
    if (this.stopping) reasons.push("SHUTTING_DOWN");
    if (!this.link.isUp) reasons.push("D1_LINK_DOWN");
    // A store that cannot take writes (or a disk under the free-space watermark) takes no pushes.
    const store = this.store.health.refusesPushes();
    if (store) reasons.push(store);
    if (printer.state !== "idle" && printer.state !== "busy")
      reasons.push(`PRINTER_${printer.state.toUpperCase()}`);
    return {
      ready: reasons.length === 0,
      reasons,
      d1: this.link.isUp ? "up" : "down",
      printer: { state: printer.state, ...(printer.reason ? { reason: printer.reason } : {}) },
    };
  }

  async stop(): Promise<void> {
    await this.health?.stop();
    this.disposeMetrics?.();
    await this.console?.stop();
    const printerWasIdle = this.supervisor.status.state === "idle";
    this.supervisor.stop();
    await this.pipeline.stop();
    if (printerWasIdle) await this.readCounterAtStop();
    this.outbox.flush();
    this.outbox.stop();
    await this.link.stop();
    await this.printer.close().catch(() => undefined);
    await this.magstripe.device?.close().catch(() => undefined);
    this.retention.stop();
    // The shutdown's own audit rows go too, while the collector takes them (bounded).
    await this.auditForward?.stop();
    this.store.close();
    removePidFile(this.config.dataDir);
    this.log.info("kiosk agent stopped");
  }

  /**
   * A last counter reading, so the stock check covers every card this run fed (a reading is
   * otherwise taken after each card's supply read, which a stop can overtake). Only from an idle
   * printer: a stopped or absent one would make the stop wait for its timeouts.
   */
  private async readCounterAtStop(): Promise<void> {
    if (!this.printer.isOpen || this.store.jobsIn(["PRODUCING", "PRESENTED"]).length > 0) return;
    try {
      const counters = await this.printer.readCounters();
      if (counters.cardsInserted !== undefined) this.store.stock.recordCounter(counters.cardsInserted);
    } catch (err) {
      this.log.warn({ err }, "printer counter not read at stop");
    }
  }

  /**
   * Group commit: every push read in this turn of the event loop (ws delivers all frames of a socket
   * read synchronously) is accepted inside one transaction, committed (one fsync) in a microtask
   * before any answer leaves. D1 still hears "accepted" only for what is on disk.
   */
  private pushInBatch(message: PushMessage, failure?: PayloadFailureCode): void {
    if (!this.pushBatch) {
      this.pushBatch = [];
      queueMicrotask(() => this.endPushBatch());
    }
    try {
      this.store.beginBatch(); // opens it for the first push of the turn; later ones join it
      this.pushBatch.push(this.onPush(message, failure));
    } catch (err) {
      // The store refused the write (disk full, I/O error): this push gets a clear error and D1
      // pushes it again; the others of the batch are unaffected.
      this.log.error({ err, requestId: message.requestId }, "push could not be stored");
      this.pushBatch.push(storeFailure(message.requestId, storeFaultOf(err)));
    }
  }

  /**
   * Commits the open push batch and sends its answers. Runs before anything else answers D1 in the
   * same turn (status, cancel), so no answer can describe a job that is not on disk yet.
   */
  private endPushBatch(): void {
    const batch = this.pushBatch;
    if (!batch) return;
    this.pushBatch = undefined;
    try {
      this.store.endBatch();
    } catch (err) {
      this.log.error({ err, pushes: batch.length }, "push batch could not be committed; none is accepted");
      for (const answer of batch) this.link.send(storeFailure(answer.requestId, storeFaultOf(err)));
      return;
    }
    for (const answer of batch) this.link.send(answer);
    this.outbox.flush();
    this.pipeline.wake();
  }

  /**
   * Answers a push only after the job is committed (or refused): D1 may rely on "accepted".
   * `payloadFailure`: the job's encrypted production data could not be used (crypto/jwe.ts).
   */
  onPush(message: PushMessage, payloadFailure?: PayloadFailureCode): PushResultMessage {
    const requestId = message.requestId;
    const source = pushSource(requestId, this.link, this.config.d1.url);
    if (this.stopping) {
      // Not stored: D1 pushes it again to this or another station once this one is back.
      const operationId = readableOperationId(message.job);
      this.store.auditRefusal({ operationId, errorCode: "SHUTTING_DOWN", error: "agent stopping", source });
      this.log.info({ requestId, operationId }, "push refused: agent stopping");
      return refusedPush(requestId, "SHUTTING_DOWN", "agent stopping", operationId);
    }
    const storeFault = this.store.health.refusesPushes();
    if (storeFault) {
      // Nothing is accepted that is not stored, and below the watermark the space left is the
      // producing card's: refused, not stored, and D1 pushes it again later (docs/protocol.md).
      const operationId = readableOperationId(message.job);
      this.log.warn(
        { requestId, operationId, reason: storeFault },
        "push refused: the job store cannot take it",
      );
      return refusedPush(requestId, storeFault, STORE_FAULT_TEXT[storeFault], operationId);
    }
    const verdict = payloadFailure
      ? payloadFailureVerdict(message.job, this.config.station.id, payloadFailure)
      : validateJob(message.job, this.config.station.id);
    if (verdict.kind === "refused") {
      this.store.auditRefusal({
        operationId: verdict.operationId,
        errorCode: verdict.errorCode,
        error: verdict.error,
        source,
      });
      this.log.warn({ requestId, errorCode: verdict.errorCode, error: verdict.error }, "push refused");
      return refusedPush(requestId, verdict.errorCode, verdict.error, verdict.operationId);
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
            cardStock: verdict.job.productionData.cardStock,
            source,
          })
        : this.store.accept({
            kind: "data-exception",
            operationId: header.operationId,
            cardId: header.cardId,
            issuerRequestId: header.issuerRequestId,
            details: { reason: verdict.reason, errorCode: verdict.errorCode, error: verdict.error },
            source,
          });
    this.log.info(
      { requestId, operationId: header.operationId, state: accepted.state, duplicate: accepted.duplicate },
      accepted.duplicate ? "duplicate push answered as before" : "job accepted",
    );
    if (!accepted.duplicate && !this.pushBatch) {
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
   * presented → the pipeline stops at the next step boundary, rejects the card → CANCELED (a reject
   * that fails: FAILED with the printer's reason, answered refused / CARD_NOT_REJECTED).
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
        // The reject failed: the job is FAILED with the printer's reason, its card still inside.
        if (outcome.notRejected) return answer("refused", "CARD_NOT_REJECTED");
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

/**
 * The answer to a push the store could not take: D1 pushes it again (docs/protocol.md). A store fault
 * (full disk, corrupt or read-only store) is a refusal with its reason; anything else is INTERNAL.
 */
function storeFailure(
  requestId: string | undefined,
  fault: StoreFaultReason | undefined,
): ErrorMessage | PushResultMessage {
  if (fault && requestId !== undefined) return refusedPush(requestId, fault, STORE_FAULT_TEXT[fault]);
  return {
    type: "error",
    code: "INTERNAL",
    message: "job could not be stored",
    ...(requestId ? { requestId } : {}),
  };
}

/** A push not stored: D1 reads `errorCode`; `operationId` only when it could be read safely. */
function refusedPush(
  requestId: string,
  errorCode: string,
  error: string,
  operationId?: string,
): PushResultMessage {
  return {
    type: "push-result",
    requestId,
    result: "refused",
    errorCode,
    error,
    ...(operationId ? { operationId } : {}),
  };
}

const STORE_FAULT_TEXT: Record<StoreFaultReason, string> = {
  STORE_FULL: "the station's disk is (nearly) full; not stored",
  STORE_CORRUPT: "the station's job store is damaged; not stored",
  STORE_READONLY: "the station's job store is read-only; not stored",
  STORE_IO_ERROR: "the station's disk reports I/O errors; not stored",
};

function panOf(job: {
  productionData: { magstripe?: { track2?: string; track1?: string } };
}): string | undefined {
  const t2 = job.productionData.magstripe?.track2;
  const pan = t2?.split("=")[0] ?? job.productionData.magstripe?.track1?.slice(1).split("^")[0];
  return pan ? maskPan(pan) : undefined;
}
