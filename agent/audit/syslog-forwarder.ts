import { readFileSync, statSync } from "node:fs";
import net from "node:net";
import { hostname as osHostname } from "node:os";
import tls from "node:tls";
import type Database from "better-sqlite3";
import { Backoff } from "../d1/backoff.js";
import type { Logger } from "../log/logger.js";
import type { Clock, TimerHandle } from "../util/clock.js";
import { readCredential } from "../util/credentials.js";
import { CodedError } from "../util/errors.js";
import { AUDIT_ROW_COLUMNS, type AuditRow, CHAINED_COLUMNS, chainHash, GENESIS_HASH } from "./audit-chain.js";

/**
 * Every audit row off the box as it is written (docs/security.md, "Audit trail"; docs/operations.md,
 * "Audit trail"): RFC 5424 messages over TCP with octet-counting framing (RFC 6587), or over TLS
 * (RFC 5425), to the configured collector.
 *
 * Delivery. Syslog over TCP has no acknowledgement, and a collector that stops with bytes unread
 * loses them silently: a forwarder that counted a row as sent once the kernel took it lost 28–42 of
 * 3,000 rows over 25 restarts of rsyslog (docs/security.md). So a batch of rows is one connection,
 * and TCP's orderly release is the acknowledgement: the forwarder writes the batch, waits a few round
 * trips (lingerFor), closes its sending side, and counts the batch delivered only when the collector,
 * having read up to the end of the stream, closes its side too, without a reset. A collector that
 * goes away with any of the batch unread, or before it arrived, makes its kernel answer with a reset.
 * One that closes first (stopping during the wait) is counted only over plain TCP, and only if an
 * empty write a wait later still finds no reset; over TLS it is not (its TLS library may hold bytes
 * it never processed). Everything else is a failure: the batch is sent again on a new connection,
 * after a backoff. The durable cursor (table `audit_forward`) advances only for delivered batches, so
 * rows written while the collector is down wait in the store, and rows go in `seq` order, over plain
 * TCP each once whenever the collector is stopped or restarted (tested against a real rsyslog); over
 * TLS at least once. Duplicates remain
 * possible, marked by `seq` and `hash`: the agent dies between the collector's close and the cursor's
 * commit; a collector reads part of a batch and closes with the rest unread; no close within
 * `ackTimeoutMs`; over TLS, a collector that closes first. A collector that crashes after reading a
 * batch and before storing it loses it: its own queue has to be durable.
 */

export interface AuditForwardConfig {
  host: string;
  port: number;
  tls?:
    | {
        caFile?: string | undefined;
        certFile?: string | undefined;
        keyFile?: string | undefined;
        keyCredential?: string | undefined;
        serverName?: string | undefined;
      }
    | undefined;
  appName: string;
  facility: number | FacilityName;
  hostname?: string | undefined;
  sdId: string;
  retry: { initialMs: number; maxMs: number };
  batchMaxRows: number;
  batchMaxBytes: number;
  connectTimeoutMs: number;
  ackTimeoutMs: number;
  pollMs: number;
}

/** RFC 5424 §6.2.1 facility names; `audit` is 13, "log audit". */
export const FACILITIES = {
  kern: 0,
  user: 1,
  mail: 2,
  daemon: 3,
  auth: 4,
  syslog: 5,
  lpr: 6,
  news: 7,
  uucp: 8,
  cron: 9,
  authpriv: 10,
  ftp: 11,
  ntp: 12,
  audit: 13,
  alert: 14,
  clock: 15,
  local0: 16,
  local1: 17,
  local2: 18,
  local3: 19,
  local4: 20,
  local5: 21,
  local6: 22,
  local7: 23,
} as const;
export type FacilityName = keyof typeof FACILITIES;

/** Every audit row is a notice: a fact, not a fault. */
const SEVERITY_NOTICE = 5;
/** The shortest wait between writing a batch and closing the sending side (see lingerFor). */
const MIN_LINGER_MS = 20;
const MAX_LINGER_MS = 2_000;

export class ForwardConfigError extends CodedError<"TLS_FILE_UNREADABLE" | "TLS_KEY_PERMISSIONS"> {}

export interface MessageContext {
  storeId: string;
  hostname: string;
  appName: string;
  procId: string;
  facility: number;
  sdId: string;
  /** Set when the row does not follow the chain from the row forwarded before it. */
  broken?: "gap" | "hash" | undefined;
}

/**
 * One audit row as an RFC 5424 message:
 *
 *   <109>1 2026-01-31T10:00:00.123Z kiosk-07 kiosk-agent 4242 TRANSITION
 *     [kioskAudit@32473 store="…" seq="17" hash="…"] {"store":"…","seq":17,"hash":"…","at":…}
 *
 * PRI is the facility with severity notice; TIMESTAMP the row's `at`; MSGID its event. The
 * structured data says which store, which row and its chain hash (what a collector de-duplicates on
 * and `audit verify --against` compares); MSG is the row as JSON, every column exactly as stored and
 * escaped to ASCII, so the hash can be recomputed from it. No card data: the row holds none (the PAN
 * only masked).
 */
export function syslogMessage(row: AuditRow, m: MessageContext): string {
  const pri = m.facility * 8 + SEVERITY_NOTICE;
  const timestamp =
    row.at && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$/.test(row.at) ? row.at : "-";
  const msgId = /^[!-~]{1,32}$/.test(row.event ?? "") ? row.event : "-";
  const broken = m.broken ? ` chain="${m.broken}"` : "";
  const sd = `[${m.sdId} store="${sdValue(m.storeId)}" seq="${row.seq}" hash="${sdValue(row.hash ?? "")}"${broken}]`;
  const body: Record<string, unknown> = { store: m.storeId, seq: row.seq, hash: row.hash };
  for (const c of CHAINED_COLUMNS) body[c] = row[c];
  return `<${pri}>1 ${timestamp} ${m.hostname} ${m.appName} ${m.procId} ${msgId} ${sd} ${asciiJson(body)}`;
}

/** RFC 6587 §3.4.1 octet counting: MSG-LEN SP SYSLOG-MSG. */
export function octetFrame(message: string): Buffer {
  const bytes = Buffer.from(message, "utf8");
  return Buffer.concat([Buffer.from(`${bytes.length} `, "ascii"), bytes]);
}

/** RFC 5424 §6.3.3: `"`, `\` and `]` are escaped in a PARAM-VALUE. */
function sdValue(value: string): string {
  return value.replace(/["\\\]]/g, (c) => `\\${c}`);
}

function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** The HOSTNAME field: printable US-ASCII without spaces, at most 255 (RFC 5424 §6.2.4). */
export function syslogHostname(name: string | undefined): string {
  const h = (name ?? osHostname()).replace(/[^!-~]/g, "").slice(0, 255);
  return h.length > 0 ? h : "-";
}

export function facilityNumber(f: number | FacilityName): number {
  return typeof f === "number" ? f : FACILITIES[f];
}

/**
 * TLS options for the collector (RFC 5425): its certificate is always verified, against `caFile`
 * when given, else the system CAs; `certFile` + `keyFile` (or the key as a systemd credential) give
 * the kiosk a client certificate. Read once, at start; an unreadable file stops the start.
 */
export function forwardTlsOptions(
  cfg: AuditForwardConfig,
  env: NodeJS.ProcessEnv = process.env,
): tls.ConnectionOptions | undefined {
  const t = cfg.tls;
  if (!t) return undefined;
  const options: tls.ConnectionOptions = { rejectUnauthorized: true };
  if (t.caFile) options.ca = readFileOrThrow("audit.forward.tls.caFile", t.caFile);
  if (t.certFile) options.cert = readFileOrThrow("audit.forward.tls.certFile", t.certFile);
  if (t.keyFile) {
    let mode: number;
    try {
      mode = statSync(t.keyFile).mode & 0o777;
    } catch (err) {
      throw new ForwardConfigError(
        "TLS_FILE_UNREADABLE",
        `audit.forward.tls.keyFile: cannot read ${t.keyFile} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
      );
    }
    if ((mode & 0o007) !== 0) {
      throw new ForwardConfigError(
        "TLS_KEY_PERMISSIONS",
        `audit.forward.tls.keyFile: ${t.keyFile} is readable by other users (mode ${mode.toString(8)}); chmod 600 or 640`,
      );
    }
    options.key = readFileOrThrow("audit.forward.tls.keyFile", t.keyFile);
  }
  if (t.keyCredential) options.key = readCredential(t.keyCredential, "audit.forward.tls.keyCredential", env);
  if (t.serverName) options.servername = t.serverName;
  return options;
}

function readFileOrThrow(key: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new ForwardConfigError(
      "TLS_FILE_UNREADABLE",
      `${key}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
}

export interface ForwarderStats {
  /** Rows the collector confirmed, this run. */
  delivered: number;
  /** Batches (connections) confirmed, this run. */
  batches: number;
  /** Batches that failed (collector down, reset, timeout, TLS refused), this run. */
  failures: number;
  /** Rows that did not follow the chain from the row forwarded before them. */
  chainBreaks: number;
  lastError: string | undefined;
  /** Failed batches by cause (ECONNREFUSED, ECONNRESET, EPIPE, ACK_TIMEOUT, a TLS error code…). */
  causes: Record<string, number>;
  /** Batches confirmed although the collector closed first (stopped while they lingered; no reset followed). */
  confirmedAfterCollectorClose: number;
}

interface BatchOutcome {
  ok: boolean;
  /** Why it failed: an errno code, or what the collector did. */
  cause?: string;
}

export interface AuditForwarderOptions {
  /** The job store's connection (rows are read only outside a transaction: committed ones). */
  db: Database.Database;
  storeId: string;
  config: AuditForwardConfig;
  clock: Clock;
  logger: Logger;
  /** From forwardTlsOptions(); absent: plain TCP. */
  tls?: tls.ConnectionOptions | undefined;
  random?: () => number;
}

export class AuditForwarder {
  readonly stats: ForwarderStats = {
    delivered: 0,
    batches: 0,
    failures: 0,
    chainBreaks: 0,
    lastError: undefined,
    causes: {},
    confirmedAfterCollectorClose: 0,
  };
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private readonly context: Omit<MessageContext, "broken">;
  private readonly collector: string;
  private readonly statements;
  /** The last row the collector confirmed (memory; `persisted` says whether the store has it). */
  private cursor: { seq: number; hash: string };
  private persisted = true;
  private cursorWarned = false;
  private running: Promise<void> | undefined;
  private stopping = false;
  /** stop() was called: send what is there, then end (at the first failure or when nothing is left). */
  private draining = false;
  private sleeper: { timer: TimerHandle; resolve: () => void } | undefined;
  private socket: net.Socket | undefined;
  /** Set at the first failure of an outage: when the forwarder last delivered, and what it said. */
  private outage: { since: number; failures: number } | undefined;

  constructor(private readonly o: AuditForwarderOptions) {
    this.log = o.logger.child({ component: "audit-forward" });
    this.backoff = new Backoff({
      initialMs: o.config.retry.initialMs,
      maxMs: o.config.retry.maxMs,
      ...(o.random ? { random: o.random } : {}),
    });
    this.collector = `${o.config.host}:${o.config.port}`;
    this.context = {
      storeId: o.storeId,
      hostname: syslogHostname(o.config.hostname),
      appName: o.config.appName,
      procId: String(process.pid),
      facility: facilityNumber(o.config.facility),
      sdId: o.config.sdId,
    };
    this.statements = {
      cursor: o.db.prepare("SELECT last_seq, last_hash, collector FROM audit_forward WHERE id = 1"),
      save: o.db.prepare(
        "UPDATE audit_forward SET last_seq = ?, last_hash = ?, collector = ?, forwarded_at = ? WHERE id = 1",
      ),
      after: o.db.prepare(`SELECT ${AUDIT_ROW_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?`),
      backlog: o.db.prepare("SELECT COUNT(*) AS n FROM audit_log WHERE seq > ?"),
    };
    const row = this.statements.cursor.get() as
      | { last_seq: number; last_hash: string; collector: string | null }
      | undefined;
    this.cursor = { seq: row?.last_seq ?? 0, hash: row?.last_hash ?? GENESIS_HASH };
    if (row?.collector && row.collector !== this.collector) {
      this.log.info(
        { collector: this.collector, previous: row.collector, fromSeq: this.cursor.seq + 1 },
        "audit forwarding now goes to another collector; rows already forwarded are not sent again",
      );
    }
  }

  /** The last row the collector confirmed. */
  get forwardedThrough(): number {
    return this.cursor.seq;
  }

  start(): void {
    if (this.running) return;
    this.log.info(
      { collector: this.collector, tls: this.o.tls !== undefined, fromSeq: this.cursor.seq + 1 },
      "forwarding audit rows to the collector",
    );
    if (!this.o.tls && !isLoopback(this.o.config.host)) {
      this.log.warn(
        { collector: this.collector },
        "audit rows go to the collector over plain TCP: set audit.forward.tls so they cannot be read or altered on the way",
      );
    }
    this.running = this.loop();
  }

  /** New rows were written: send them now rather than at the next poll. */
  wake(): void {
    if (this.sleeper && !this.outage) this.cancelSleep();
  }

  /** Rows written and not yet confirmed by the collector. */
  backlog(): number {
    return (this.statements.backlog.get(this.cursor.seq) as { n: number }).n;
  }

  /**
   * Sends what is left (the rows of the shutdown itself) while the collector takes it, for at most
   * `graceMs`; then drops a connection still open (that batch is sent again at the next start) and
   * saves the cursor. The store must still be open.
   */
  async stop(graceMs = 2_000): Promise<void> {
    this.draining = true;
    this.cancelSleep();
    if (!this.running) return;
    let timer: TimerHandle | undefined;
    await Promise.race([
      this.running,
      new Promise<void>((resolve) => {
        timer = this.o.clock.setTimeout(resolve, graceMs);
      }),
    ]);
    if (timer) this.o.clock.clearTimeout(timer);
    this.stopping = true;
    this.cancelSleep();
    this.socket?.destroy();
    await this.running;
    this.persistCursor();
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      // Inside the job store's open transaction (a push batch) rows may still roll back: only
      // committed rows leave the box.
      if (this.o.db.inTransaction) {
        await this.sleep(5);
        continue;
      }
      this.persistCursor();
      let batch: { rows: AuditRow[]; bytes: Buffer };
      try {
        batch = this.nextBatch();
      } catch (err) {
        this.log.error({ err }, "audit rows could not be read for forwarding");
        if (this.draining) break;
        await this.sleep(this.o.config.retry.maxMs);
        continue;
      }
      if (batch.rows.length === 0) {
        if (this.draining) break;
        await this.sleep(this.o.config.pollMs);
        continue;
      }
      const outcome = await this.sendBatch(batch.bytes);
      if (outcome.ok) {
        this.delivered(batch.rows);
      } else {
        this.failed(outcome.cause ?? "unknown", batch.rows.length);
        if (this.draining) break;
        await this.sleep(this.backoff.next().delayMs);
      }
    }
  }

  /** The rows after the cursor, in order, framed, up to the batch limits (always at least one). */
  private nextBatch(): { rows: AuditRow[]; bytes: Buffer } {
    const { batchMaxRows, batchMaxBytes } = this.o.config;
    const rows: AuditRow[] = [];
    const frames: Buffer[] = [];
    let size = 0;
    let prev = this.cursor;
    for (const row of this.statements.after.all(this.cursor.seq, batchMaxRows) as AuditRow[]) {
      const frame = octetFrame(syslogMessage(row, this.checkLink(prev, row)));
      if (rows.length > 0 && size + frame.length > batchMaxBytes) break;
      rows.push(row);
      frames.push(frame);
      size += frame.length;
      prev = { seq: row.seq, hash: row.hash ?? "" };
    }
    return { rows, bytes: Buffer.concat(frames) };
  }

  /** The highest row already reported as breaking the chain (each is logged once). */
  private reportedThrough = 0;

  /**
   * Whether the row follows the chain from the one before it (the last forwarded, for the first of
   * a batch): a row changed or deleted while it waited for the collector is logged, counted and
   * marked in its message.
   */
  private checkLink(prev: { seq: number; hash: string }, row: AuditRow): MessageContext {
    let broken: MessageContext["broken"];
    if (row.seq !== prev.seq + 1) broken = "gap";
    else if (row.hash !== chainHash(prev.hash, row)) broken = "hash";
    if (!broken) return this.context;
    if (row.seq > this.reportedThrough) {
      this.reportedThrough = row.seq;
      this.stats.chainBreaks++;
      this.log.error(
        { seq: row.seq, previous: prev.seq, problem: broken },
        "audit row does not follow the chain from the row before it: the audit table was changed; run kiosk-agent audit verify",
      );
    }
    return { ...this.context, broken };
  }

  private delivered(rows: AuditRow[]): void {
    const last = rows.at(-1)!;
    this.cursor = { seq: last.seq, hash: last.hash ?? "" };
    this.persisted = false;
    this.persistCursor();
    this.stats.delivered += rows.length;
    this.stats.batches++;
    this.backoff.reset();
    if (this.outage) {
      this.log.info(
        {
          collector: this.collector,
          failedBatches: this.outage.failures,
          downMs: Math.round(this.o.clock.now() - this.outage.since),
          throughSeq: last.seq,
        },
        "audit forwarding restored; the rows that waited are being sent",
      );
      this.outage = undefined;
    }
  }

  private failed(cause: string, rows: number): void {
    this.stats.failures++;
    this.stats.lastError = cause;
    this.stats.causes[cause] = (this.stats.causes[cause] ?? 0) + 1;
    if (!this.outage) {
      this.outage = { since: this.o.clock.now(), failures: 0 };
      this.log.warn(
        { collector: this.collector, cause, batchRows: rows, backlog: this.safeBacklog() },
        "audit rows could not be forwarded; they wait in the store and are sent when the collector takes them",
      );
    } else {
      this.log.debug({ collector: this.collector, cause }, "audit forwarding still failing");
    }
    this.outage.failures++;
  }

  private safeBacklog(): number | undefined {
    try {
      return this.backlog();
    } catch {
      return undefined;
    }
  }

  /** Commits the cursor; a store that cannot take it now gets it with the next batch or at stop. */
  private persistCursor(): void {
    if (this.persisted || this.o.db.inTransaction || !this.o.db.open) return;
    try {
      this.statements.save.run(
        this.cursor.seq,
        this.cursor.hash,
        this.collector,
        new Date(this.o.clock.wallNow()).toISOString(),
      );
      this.persisted = true;
      this.cursorWarned = false;
    } catch (err) {
      // A full or read-only store (docs/operations.md): said once, until a save succeeds.
      if (!this.cursorWarned) {
        this.log.warn(
          { err, seq: this.cursor.seq },
          "audit forwarding cursor not saved yet; retried with the next batch",
        );
      }
      this.cursorWarned = true;
    }
  }

  /**
   * One batch, one connection: connect (TLS if configured), write, wait `lingerFor` the connect time,
   * close the sending side, and wait for the collector's close. Delivered only when the collector
   * closed without a reset or any error, after the agent did; or, over plain TCP, when it closed first
   * (stopped during the wait) and still answers no reset a wait later: a collector that closed with
   * any of the batch unread, or before the batch reached it, resets the connection.
   */
  private sendBatch(bytes: Buffer): Promise<BatchOutcome> {
    const { config, clock } = this.o;
    return new Promise<BatchOutcome>((resolve) => {
      let settled = false;
      let weEnded = false;
      let peerEnded = false;
      /** The collector closed before the agent did, and no reset followed: it read the whole batch. */
      let readBeforeItsClose = false;
      let error: string | undefined;
      let timer: TimerHandle | undefined;
      const startedAt = clock.now();
      let linger = MIN_LINGER_MS;
      const raw = net.connect({ host: config.host, port: config.port, allowHalfOpen: true });
      raw.setNoDelay(true);
      let stream: net.Socket = raw;
      this.socket = raw;
      const arm = (ms: number, why: string): void => {
        if (timer) clock.clearTimeout(timer);
        timer = clock.setTimeout(() => {
          error ??= why;
          stream.destroy();
          raw.destroy();
        }, ms);
      };
      /** The linger and probe waits, cleared when the batch is settled. */
      const waits: TimerHandle[] = [];
      const after = (ms: number, fn: () => void): void => {
        waits.push(clock.setTimeout(fn, ms));
      };
      const finish = (): void => {
        if (settled) return;
        settled = true;
        if (timer) clock.clearTimeout(timer);
        for (const w of waits) clock.clearTimeout(w);
        this.socket = undefined;
        if (!error && peerEnded && (weEnded || readBeforeItsClose)) {
          if (!weEnded) this.stats.confirmedAfterCollectorClose++;
          resolve({ ok: true });
        } else resolve({ ok: false, cause: error ?? "CLOSED" });
      };
      const onError = (err: NodeJS.ErrnoException): void => {
        error ??= err.code ?? err.message;
      };
      raw.on("error", onError);
      arm(config.connectTimeoutMs, "CONNECT_TIMEOUT");
      const write = (): void => {
        stream.on("data", () => undefined); // a collector says nothing; whatever it says is read and dropped
        stream.on("end", () => {
          peerEnded = true;
          if (weEnded) return;
          if (this.o.tls) {
            // Over TLS, bytes the collector's TLS library took from the socket are not bytes it
            // processed: a close without a reset proves nothing. Sent again (at least once).
            error ??= "COLLECTOR_CLOSED_FIRST";
            stream.destroy();
            return;
          }
          // The collector closed on its own (stopping). Its kernel resets the connection if any of
          // the batch was unread at its close or arrives after it: wait as long again, then probe with
          // an empty write, which fails on a reset connection.
          after(linger, () => {
            if (settled || error) return;
            raw.write(Buffer.alloc(0), (err) => {
              if (err || settled) return;
              readBeforeItsClose = true;
              stream.destroy();
            });
          });
        });
        stream.write(bytes, (err) => {
          if (err || settled) return;
          // A few round trips before closing: a collector that goes away meanwhile closes first (or
          // resets), instead of racing the batch with its own close.
          arm(2 * linger + config.ackTimeoutMs, "ACK_TIMEOUT");
          after(linger, () => {
            if (settled || peerEnded || error) return;
            weEnded = true;
            stream.end();
          });
        });
      };
      raw.once("connect", () => {
        linger = lingerFor(clock.now() - startedAt);
        if (!this.o.tls) {
          write();
          return;
        }
        const secure = tls.connect({
          ...this.o.tls,
          socket: raw,
          host: config.host,
          ...(this.o.tls.servername || net.isIP(config.host) ? {} : { servername: config.host }),
        });
        stream = secure;
        secure.on("error", onError);
        secure.once("secureConnect", write);
        secure.once("close", finish);
      });
      raw.once("close", () => {
        if (stream === raw) finish();
        else if (!settled) stream.destroy();
      });
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.stopping || (this.draining && ms > 5)) return resolve();
      const timer = this.o.clock.setTimeout(() => {
        this.sleeper = undefined;
        resolve();
      }, ms);
      this.sleeper = { timer, resolve };
    });
  }

  private cancelSleep(): void {
    const s = this.sleeper;
    if (!s) return;
    this.sleeper = undefined;
    this.o.clock.clearTimeout(s.timer);
    s.resolve();
  }
}

/**
 * How long the batch stays on the wire before the sending side is closed: three TCP connect times
 * (a round trip each), at least MIN_LINGER_MS. A collector that closes on its own while the batch is
 * on its way then closes before the agent does, which the agent counts as a failure.
 */
export function lingerFor(connectMs: number): number {
  return Math.min(MAX_LINGER_MS, Math.max(MIN_LINGER_MS, Math.ceil(3 * connectMs)));
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}
