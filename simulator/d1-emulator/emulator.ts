import { type KeyObject, timingSafeEqual } from "node:crypto";
import { EventEmitter } from "node:events";
import { appendFileSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Logger } from "pino";
import { type RawData, WebSocket, WebSocketServer } from "ws";
import type { z } from "zod";
import { encryptProductionData } from "../../agent/crypto/jwe.js";
import {
  AgentToD1,
  type CancelResultMessage,
  type ErrorMessage,
  type HelloMessage,
  type NotifyMessage,
  type PushResultMessage,
  type StatusResultMessage,
} from "../../agent/d1/messages.js";
import {
  D1_STATUSES,
  type D1Status,
  type Operation,
  OperationSchema,
  TERMINAL_D1_STATUSES,
  topLevelStatus,
} from "../../agent/d1/operation.js";
import { silentLogger } from "../../agent/log/logger.js";
import { CodedError } from "../../agent/util/errors.js";

/**
 * D1 emulator: the issuer platform's side of the agent link (docs/protocol.md), on a real `ws`
 * WebSocketServer. Tests and the demo push jobs through it and read back what the agent reported.
 *
 * It is also a contract checker: every inbound frame is validated with the wire schemas, and
 * anything off-contract (bad JSON, unknown type, invalid fields, extra operation fields, a status
 * that does not match its top-level status, a changed startTime, card data in a frame…) is counted
 * in `stats.protocolViolations` and listed in `violations`, never thrown. A correct agent leaves
 * `violations` empty.
 *
 * Card data: jobs are never logged; logs carry message types, requestIds and operationIds only.
 */

export type CancelResult = z.infer<typeof CancelResultMessage>;
export type StatusResult = z.infer<typeof StatusResultMessage>;

export interface D1EmulatorOptions {
  /** The bearer token the agent must present in `Authorization: Bearer <token>`. */
  token: string;
  /** 0 (default) = ephemeral. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** "auto" (default): every notify is acked at once. "manual": the test calls ack() / dropUnacked(). */
  ackMode?: "auto" | "manual";
  /** Each new (non-duplicate) operation object is appended here as one JSON line, synchronously. */
  recordFile?: string;
  logger?: Logger;
  /** Default timeout of push() / cancel() / queryStatus(), ms. Default 10 000. */
  requestTimeoutMs?: number;
  /**
   * Serve wss:// with this certificate and key (PEM). With `ca` + `requestCert`, a client certificate
   * signed by `ca` is required (mutual TLS); connections without one fail the TLS handshake.
   */
  tls?: { cert: string | Buffer; key: string | Buffer; ca?: string | Buffer; requestCert?: boolean };
  /**
   * Encrypt every pushed job's productionData to this station public key (JWE, agent/crypto/jwe.ts),
   * as D1 does for stations that have one. push(job, { encrypt: false }) sends one in clear.
   */
  stationPublicKey?: KeyObject;
}

export interface StationInfo {
  persoStation: string;
  agentVersion: string;
  sessionId: string;
  connectedAt: string;
  /** The subject CN of the client certificate the agent presented (mutual TLS only). */
  clientCertSubject?: string;
}

export interface ReceivedEvent {
  at: string;
  eventId: string;
  /** The operation exactly as D1 defines it (unknown fields removed). */
  operation: Operation;
  /** True when this eventId had been received before: not counted again in operations(). */
  duplicate: boolean;
  station: string;
}

export type ViolationKind =
  | "binary-frame"
  | "invalid-frame"
  | "malformed-json"
  | "invalid-message"
  | "before-hello"
  | "repeated-hello"
  | "notify-length-mismatch"
  | "event-id-reused"
  | "extra-fields"
  | "status-mismatch"
  | "end-time"
  | "start-time-changed"
  | "unexpected-answer"
  | "push-result-mismatch"
  | "card-data-leak";

export interface ProtocolViolation {
  at: string;
  kind: ViolationKind;
  station?: string;
  /** The message type, when it could be read. */
  type?: string;
  /** What was wrong: paths and codes, never values. */
  detail: string;
}

export interface PushRecord {
  requestId: string;
  station: string;
  /** The job's operationId, when it has one. */
  operationId?: string;
  sentAt: string;
  answer?: PushResultMessage;
  answeredAt?: string;
  /** Why push() rejected, if it did (a late answer may still arrive and is then kept in `answer`). */
  failure?: "timeout" | "link-closed" | "agent-error" | "stopped";
}

export interface AgentErrorRecord {
  at: string;
  station?: string;
  message: ErrorMessage;
}

export interface D1EmulatorStats {
  /** WebSocket connections accepted (bad-token attempts excluded). */
  connections: number;
  authFailures: number;
  hellos: number;
  framesIn: number;
  framesOut: number;
  protocolViolations: number;
  pushes: number;
  notifies: number;
  newEvents: number;
  duplicateEvents: number;
  acksSent: number;
  /** TLS handshakes that failed (no or untrusted client certificate, …). */
  tlsFailures: number;
}

export interface D1EmulatorEvents {
  /** A station said hello. */
  connection: [StationInfo];
  /** A socket closed (station undefined if it never said hello). */
  disconnect: [{ station: string | undefined; code: number }];
  /** Every valid agent message, after the emulator has handled it. */
  message: [AgentToD1, string | undefined];
  /** A new (non-duplicate) status event: the operation, then its record (eventId, station, time). */
  operation: [Operation, ReceivedEvent];
  /** A re-sent status event (eventId seen before). */
  duplicate: [Operation, ReceivedEvent];
  violation: [ProtocolViolation];
  "push-result": [PushResultMessage, PushRecord | undefined];
  "agent-error": [AgentErrorRecord];
}

export type D1EmulatorErrorCode =
  | "NOT_STARTED"
  | "NO_STATION"
  | "TIMEOUT"
  | "LINK_CLOSED"
  | "AGENT_ERROR"
  | "STOPPED";

export class D1EmulatorError extends CodedError<D1EmulatorErrorCode> {}

type AnswerType = "push-result" | "cancel-result" | "status-result";

interface Link {
  ws: WebSocket;
  station?: string;
  hello?: StationInfo;
  /** blackhole(): neither reads nor writes, the socket stays open. */
  frozen: boolean;
  clientCertSubject?: string;
  closed: Promise<void>;
}

interface Pending {
  type: AnswerType;
  link: Link;
  resolve: (message: AgentToD1) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

interface Waiter {
  check: () => void;
  fail: (error: Error) => void;
}

const OPERATION_KEYS = new Set(Object.keys(OperationSchema.shape));
const DETAILS_KEYS = new Set(["status", "reason"]);
const KNOWN_STATUSES: ReadonlySet<string> = new Set(D1_STATUSES);
const DEFAULT_WAIT_MS = 5_000;

export class D1Emulator extends EventEmitter<D1EmulatorEvents> {
  /** Requests whose wait timed out, by requestId: an answer that comes after is late, not a violation. */
  private readonly timedOut = new Map<string, string>();
  /** Answers that came after their request's timeout. */
  readonly lateAnswers: Array<{ requestId: string; type: string }> = [];
  readonly stats: D1EmulatorStats = {
    connections: 0,
    authFailures: 0,
    hellos: 0,
    framesIn: 0,
    framesOut: 0,
    protocolViolations: 0,
    pushes: 0,
    notifies: 0,
    newEvents: 0,
    duplicateEvents: 0,
    acksSent: 0,
    tlsFailures: 0,
  };
  /** Every status event received, duplicates included, in arrival order. */
  readonly received: ReceivedEvent[] = [];
  readonly violations: ProtocolViolation[] = [];
  readonly pushes: PushRecord[] = [];
  /** Every hello, in order: a changed sessionId means the agent restarted. */
  readonly hellos: StationInfo[] = [];
  readonly agentErrors: AgentErrorRecord[] = [];
  /** operationIds D1 was told were accepted (push-result `accepted`). */
  readonly accepted = new Set<string>();

  private readonly options: Required<
    Pick<D1EmulatorOptions, "token" | "port" | "host" | "ackMode" | "requestTimeoutMs">
  > &
    Pick<D1EmulatorOptions, "recordFile" | "tls" | "stationPublicKey">;
  private readonly log: Logger;
  private wss: WebSocketServer | undefined;
  private https: HttpsServer | undefined;
  private url: string | undefined;
  private readonly links = new Set<Link>();
  private readonly stations = new Map<string, Link>();
  private readonly pending = new Map<string, Pending>();
  private readonly waiters = new Set<Waiter>();
  private readonly byEventId = new Map<string, ReceivedEvent>();
  private readonly fresh: ReceivedEvent[] = [];
  private readonly firstStartTime = new Map<string, string>();
  private readonly firstAnswer = new Map<string, PushResultMessage["result"]>();
  /** Received, not yet acked eventIds (manual mode) → the station that sent them. */
  private readonly unacked = new Map<string, string>();
  /** Card data of pushed jobs: a frame from the agent containing any of these is a leak. */
  private readonly secrets = new Set<string>();
  private requestSeq = 0;

  constructor(options: D1EmulatorOptions) {
    super();
    this.options = {
      token: options.token,
      port: options.port ?? 0,
      host: options.host ?? "127.0.0.1",
      ackMode: options.ackMode ?? "auto",
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      recordFile: options.recordFile,
      tls: options.tls,
      stationPublicKey: options.stationPublicKey,
    };
    this.log = (options.logger ?? silentLogger).child({ component: "d1-emulator" });
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  async start(): Promise<{ url: string }> {
    if (this.wss) throw new Error("D1Emulator already started");
    const tls = this.options.tls;
    const https = tls
      ? createHttpsServer({
          cert: tls.cert,
          key: tls.key,
          ...(tls.ca ? { ca: tls.ca } : {}),
          requestCert: tls.requestCert === true,
          rejectUnauthorized: tls.requestCert === true,
        })
      : undefined;
    https?.on("tlsClientError", (err) => {
      this.stats.tlsFailures++;
      this.log.warn({ code: (err as NodeJS.ErrnoException).code }, "TLS handshake failed");
      this.changed();
    });
    const wss = new WebSocketServer({
      ...(https ? { server: https } : { host: this.options.host, port: this.options.port }),
      verifyClient: (info, callback) => {
        if (this.authorized(info.req)) return callback(true);
        this.stats.authFailures++;
        this.log.warn(
          { remote: info.req.socket.remoteAddress },
          "upgrade refused: bad or missing bearer token",
        );
        callback(false, 401, "Unauthorized", { "WWW-Authenticate": "Bearer" });
      },
    });
    await new Promise<void>((resolve, reject) => {
      if (https) {
        https.once("error", reject);
        https.listen(this.options.port, this.options.host, () => resolve());
        return;
      }
      wss.once("listening", resolve);
      wss.once("error", reject);
    });
    wss.on("error", (err) => this.log.error({ err: err.message }, "server error"));
    wss.on("connection", (ws, req) => this.onConnection(ws, req));
    this.wss = wss;
    this.https = https;
    const { port } = (https ?? wss).address() as AddressInfo;
    const host = this.options.host.includes(":") ? `[${this.options.host}]` : this.options.host;
    this.url = `${https ? "wss" : "ws"}://${host}:${port}`;
    this.log.info({ url: this.url, ackMode: this.options.ackMode }, "D1 emulator listening");
    return { url: this.url };
  }

  /** Closes every link abruptly, rejects pending requests and waits, closes the server. */
  async stop(): Promise<void> {
    const wss = this.wss;
    if (!wss) return;
    this.wss = undefined;
    for (const [requestId, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(requestId);
      this.markPushFailure(requestId, "stopped");
      p.reject(new D1EmulatorError("STOPPED", `emulator stopped while waiting for ${p.type} ${requestId}`));
    }
    for (const w of [...this.waiters]) w.fail(new D1EmulatorError("STOPPED", "emulator stopped"));
    const closing = [...this.links].map((link) => {
      link.ws.terminate();
      return link.closed;
    });
    await Promise.all(closing);
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    const https = this.https;
    this.https = undefined;
    if (https) {
      https.closeAllConnections();
      await new Promise<void>((resolve) => https.close(() => resolve()));
    }
    this.log.info("D1 emulator stopped");
  }

  get address(): string | undefined {
    return this.url;
  }

  /** Stations that said hello and are still connected. */
  connectedStations(): string[] {
    return [...this.stations.keys()];
  }

  station(persoStation: string): StationInfo | undefined {
    return this.stations.get(persoStation)?.hello;
  }

  // ---- D1 → agent requests ----------------------------------------------------------------------

  /** Pushes a production job; resolves with the agent's push-result. The job is never logged. */
  async push(
    job: unknown,
    opts: { station?: string; requestId?: string; timeoutMs?: number; encrypt?: boolean } = {},
  ): Promise<PushResultMessage> {
    const link = this.pickLink(opts.station);
    const requestId = opts.requestId ?? this.nextRequestId("push");
    const operationId = operationIdOf(job);
    const record: PushRecord = {
      requestId,
      station: link.station!,
      ...(operationId !== undefined ? { operationId } : {}),
      sentAt: new Date().toISOString(),
    };
    this.pushes.push(record);
    this.stats.pushes++;
    for (const s of secretsOf(job)) this.secrets.add(s);
    const key = this.options.stationPublicKey;
    const data = (job as { productionData?: unknown } | null)?.productionData;
    const wire =
      key && opts.encrypt !== false && data !== null && typeof data === "object"
        ? {
            ...(job as Record<string, unknown>),
            productionData: await encryptProductionData(data, operationId ?? "", key),
          }
        : job;
    this.log.info({ requestId, operationId, station: link.station, encrypted: wire !== job }, "push");
    const answer = await this.request(
      link,
      "push-result",
      { type: "push", requestId, job: wire },
      opts.timeoutMs,
    );
    return answer as PushResultMessage;
  }

  async cancel(
    operationId: string,
    opts: { station?: string; requestId?: string; timeoutMs?: number } = {},
  ): Promise<CancelResult> {
    const link = this.pickLink(opts.station);
    const requestId = opts.requestId ?? this.nextRequestId("cancel");
    this.log.info({ requestId, operationId, station: link.station }, "cancel");
    const answer = await this.request(
      link,
      "cancel-result",
      { type: "cancel", requestId, operationId },
      opts.timeoutMs,
    );
    return answer as CancelResult;
  }

  async queryStatus(
    query: { operationIds?: string[]; since?: string } = {},
    opts: { station?: string; requestId?: string; timeoutMs?: number } = {},
  ): Promise<StatusResult> {
    const link = this.pickLink(opts.station);
    const requestId = opts.requestId ?? this.nextRequestId("status");
    this.log.info({ requestId, operationIds: query.operationIds, since: query.since }, "status-query");
    const message = {
      type: "status-query",
      requestId,
      ...(query.operationIds ? { operationIds: query.operationIds } : {}),
      ...(query.since ? { since: query.since } : {}),
    };
    return (await this.request(link, "status-result", message, opts.timeoutMs)) as StatusResult;
  }

  /** Manual ack mode: acknowledges these eventIds (default: every unacked one). */
  ack(eventIds?: string[]): void {
    const ids = eventIds ?? [...this.unacked.keys()];
    const byStation = new Map<string, string[]>();
    for (const id of ids) {
      const station = this.unacked.get(id) ?? this.byEventId.get(id)?.station;
      this.unacked.delete(id);
      if (station === undefined) continue;
      byStation.set(station, [...(byStation.get(station) ?? []), id]);
    }
    for (const [station, stationIds] of byStation) {
      const link = this.stations.get(station);
      if (link) this.sendAck(link, stationIds);
    }
  }

  /** Manual ack mode: forgets the unacked eventIds without acking them (the agent must resend). */
  dropUnacked(): string[] {
    const ids = [...this.unacked.keys()];
    this.unacked.clear();
    return ids;
  }

  /** eventIds received but not acked yet (manual mode). */
  unackedEventIds(): string[] {
    return [...this.unacked.keys()];
  }

  // ---- fault helpers ------------------------------------------------------------------------

  /** Terminates the link(s) abruptly, as a network drop (no close frame). Default: every link. */
  async dropLink(station?: string): Promise<void> {
    const links = this.linksFor(station);
    this.log.info({ station, links: links.length }, "dropping link");
    for (const link of links) link.ws.terminate();
    await Promise.all(links.map((l) => l.closed));
  }

  /**
   * Half-open link: stops reading (so pings get no pong) and writing, without closing. The agent
   * must notice by its missed pongs. A later hello from the same station replaces the link.
   */
  blackhole(station?: string): void {
    for (const link of this.linksFor(station)) {
      link.frozen = true;
      link.ws.pause();
    }
  }

  /** Sends any text frame to the station (default: the only connected one), e.g. malformed JSON. */
  sendRaw(text: string, station?: string): void {
    const link = this.pickLink(station);
    if (link.ws.readyState !== WebSocket.OPEN) throw new D1EmulatorError("LINK_CLOSED", "link is not open");
    link.ws.send(text);
    this.stats.framesOut++;
  }

  // ---- waiting --------------------------------------------------------------------------------

  /** The next valid agent message (received after this call) that matches. */
  nextMessage<T extends AgentToD1>(
    predicate: (message: AgentToD1, station: string | undefined) => message is T,
    timeoutMs?: number,
  ): Promise<T>;
  nextMessage(
    predicate?: (message: AgentToD1, station: string | undefined) => boolean,
    timeoutMs?: number,
  ): Promise<AgentToD1>;
  nextMessage(
    predicate: (message: AgentToD1, station: string | undefined) => boolean = () => true,
    timeoutMs = DEFAULT_WAIT_MS,
  ): Promise<AgentToD1> {
    return new Promise((resolve, reject) => {
      const onMessage = (message: AgentToD1, station: string | undefined): void => {
        let ok: boolean;
        try {
          ok = predicate(message, station);
        } catch (err) {
          cleanup();
          reject(err as Error);
          return;
        }
        if (!ok) return;
        cleanup();
        resolve(message);
      };
      const waiter: Waiter = {
        check: () => {},
        fail: (error) => {
          cleanup();
          reject(error);
        },
      };
      const timer = setTimeout(
        () => waiter.fail(new D1EmulatorError("TIMEOUT", `no matching agent message within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off("message", onMessage);
        this.waiters.delete(waiter);
      };
      this.waiters.add(waiter);
      this.on("message", onMessage);
    });
  }

  /** Resolves once predicate() holds; re-checked after every frame, connection and disconnect. */
  waitFor(predicate: () => boolean, timeoutMs = DEFAULT_WAIT_MS, what = "condition"): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => waiter.fail(new D1EmulatorError("TIMEOUT", `${what} not met within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const waiter: Waiter = {
        check: () => {
          let ok: boolean;
          try {
            ok = predicate();
          } catch (err) {
            waiter.fail(err as Error);
            return;
          }
          if (!ok) return;
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve();
        },
        fail: (error) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          reject(error);
        },
      };
      this.waiters.add(waiter);
      waiter.check();
    });
  }

  /** Resolves when the station (default: any) has said hello and is connected. */
  async waitForConnection(station?: string, timeoutMs = DEFAULT_WAIT_MS): Promise<StationInfo> {
    const find = (): StationInfo | undefined =>
      station !== undefined ? this.stations.get(station)?.hello : this.stations.values().next().value?.hello;
    await this.waitFor(() => find() !== undefined, timeoutMs, `connection of ${station ?? "a station"}`);
    return find()!;
  }

  // ---- queries ----------------------------------------------------------------------------------

  /** New (non-duplicate) operation events in arrival order, optionally for one operationId. */
  operations(operationId?: string): Operation[] {
    return this.fresh
      .filter((e) => operationId === undefined || e.operation.operationId === operationId)
      .map((e) => e.operation);
  }

  /**
   * The newest known state of an operation, decided as D1 does: an event with an endTime (terminal)
   * beats one without; among those, the later endTime, then the later arrival.
   */
  latest(operationId: string): Operation | undefined {
    let best: Operation | undefined;
    for (const op of this.operations(operationId)) {
      if (best === undefined || newerThan(best, op)) best = op;
    }
    return best;
  }

  /** How many terminal events (distinct eventIds) the operation produced. A correct agent: 0 or 1. */
  terminalCount(operationId: string): number {
    return this.operations(operationId).filter((op) => TERMINAL_D1_STATUSES.has(op.details.status)).length;
  }

  // ---- internals: connection ------------------------------------------------------------------

  private authorized(req: IncomingMessage): boolean {
    const header = req.headers.authorization;
    if (typeof header !== "string") return false;
    const expected = Buffer.from(`Bearer ${this.options.token}`);
    const given = Buffer.from(header);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  private onConnection(ws: WebSocket, req?: IncomingMessage): void {
    this.stats.connections++;
    const socket = req?.socket as TLSSocket | undefined;
    const subject = socket?.getPeerCertificate?.()?.subject?.CN;
    let markClosed!: () => void;
    const closed = new Promise<void>((resolve) => {
      markClosed = resolve;
    });
    const link: Link = {
      ws,
      frozen: false,
      closed,
      ...(typeof subject === "string" ? { clientCertSubject: subject } : {}),
    };
    this.links.add(link);
    ws.on("message", (data, isBinary) => this.onFrame(link, data, isBinary));
    ws.on("error", (err) => {
      // ws reports frames it cannot decode (bad UTF-8, oversize, bad opcode) here, then closes.
      this.violation(link, "invalid-frame", err.message);
    });
    ws.on("close", (code) => {
      this.links.delete(link);
      if (link.station !== undefined && this.stations.get(link.station) === link)
        this.stations.delete(link.station);
      for (const [requestId, p] of this.pending) {
        if (p.link !== link) continue;
        clearTimeout(p.timer);
        this.pending.delete(requestId);
        this.markPushFailure(requestId, "link-closed");
        p.reject(
          new D1EmulatorError(
            "LINK_CLOSED",
            `link closed (${code}) while waiting for ${p.type} ${requestId}`,
          ),
        );
      }
      this.log.info({ station: link.station, code }, "link closed");
      markClosed();
      this.emit("disconnect", { station: link.station, code });
      this.changed();
    });
    this.log.info("link opened");
    this.changed();
  }

  private linksFor(station: string | undefined): Link[] {
    if (station === undefined) return [...this.links];
    const link = this.stations.get(station);
    return link ? [link] : [];
  }

  private pickLink(station: string | undefined): Link {
    if (!this.wss) throw new D1EmulatorError("NOT_STARTED", "emulator not started");
    if (station !== undefined) {
      const link = this.stations.get(station);
      if (!link) throw new D1EmulatorError("NO_STATION", `station ${station} is not connected`);
      return link;
    }
    const [first, second] = this.stations.values();
    if (!first) throw new D1EmulatorError("NO_STATION", "no station connected");
    if (second) throw new D1EmulatorError("NO_STATION", "several stations connected: name one");
    return first;
  }

  private nextRequestId(kind: string): string {
    this.requestSeq++;
    return `${kind}-${this.requestSeq}-${Date.now().toString(36)}`;
  }

  private request(
    link: Link,
    type: AnswerType,
    message: Record<string, unknown>,
    timeoutMs?: number,
  ): Promise<AgentToD1> {
    const requestId = message["requestId"] as string;
    const ms = timeoutMs ?? this.options.requestTimeoutMs;
    return new Promise((resolve, reject) => {
      if (this.pending.has(requestId)) {
        reject(new Error(`requestId ${requestId} is already waiting for an answer`));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        this.timedOut.set(requestId, type);
        this.markPushFailure(requestId, "timeout");
        reject(new D1EmulatorError("TIMEOUT", `no ${type} for ${requestId} within ${ms} ms`));
      }, ms);
      this.pending.set(requestId, { type, link, resolve, reject, timer });
      if (!this.send(link, message)) {
        clearTimeout(timer);
        this.pending.delete(requestId);
        this.markPushFailure(requestId, "link-closed");
        reject(new D1EmulatorError("LINK_CLOSED", `link to ${link.station} is not open`));
      }
    });
  }

  private send(link: Link, message: Record<string, unknown>): boolean {
    if (link.frozen || link.ws.readyState !== WebSocket.OPEN) return false;
    link.ws.send(JSON.stringify(message));
    this.stats.framesOut++;
    return true;
  }

  private sendAck(link: Link, eventIds: string[]): void {
    if (eventIds.length === 0) return;
    if (this.send(link, { type: "ack", eventIds })) this.stats.acksSent++;
  }

  private markPushFailure(requestId: string, failure: NonNullable<PushRecord["failure"]>): void {
    const record = this.pushes.find((p) => p.requestId === requestId);
    if (record && !record.answer) record.failure = failure;
  }

  private changed(): void {
    for (const w of [...this.waiters]) w.check();
  }

  private violation(link: Link | undefined, kind: ViolationKind, detail: string, type?: string): void {
    const v: ProtocolViolation = {
      at: new Date().toISOString(),
      kind,
      ...(link?.station !== undefined ? { station: link.station } : {}),
      ...(type !== undefined ? { type } : {}),
      detail,
    };
    this.violations.push(v);
    this.stats.protocolViolations++;
    this.log.warn({ kind, station: v.station, type, detail }, "protocol violation");
    this.emit("violation", v);
  }

  // ---- internals: inbound ---------------------------------------------------------------------

  private onFrame(link: Link, data: RawData, isBinary: boolean): void {
    this.stats.framesIn++;
    if (link.frozen) return;
    try {
      this.handleFrame(link, data, isBinary);
    } finally {
      this.changed();
    }
  }

  private handleFrame(link: Link, data: RawData, isBinary: boolean): void {
    if (isBinary) {
      this.violation(link, "binary-frame", "binary frame; the protocol uses text frames");
      return;
    }
    const text = rawText(data);
    for (const secret of this.secrets) {
      if (text.includes(secret)) {
        this.violation(link, "card-data-leak", "frame contains card data of a pushed job");
        break;
      }
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      // The parser's message quotes the text: do not keep it.
      this.violation(link, "malformed-json", `text frame of ${text.length} chars is not JSON`);
      return;
    }
    const typeName = typeOf(json);
    const parsed = AgentToD1.safeParse(json);
    if (!parsed.success) {
      this.violation(link, "invalid-message", describeIssues(parsed.error), typeName);
      return;
    }
    const message = parsed.data;

    if (message.type === "hello") this.onHello(link, message);
    else if (!link.hello) {
      this.violation(link, "before-hello", "message before hello", message.type);
      return;
    } else {
      switch (message.type) {
        case "notify":
          this.onNotify(link, message, json);
          break;
        case "push-result":
        case "cancel-result":
        case "status-result":
          this.onAnswer(link, message, json);
          break;
        case "error":
          this.onAgentError(link, message);
          break;
      }
    }
    this.emit("message", message, link.station);
  }

  private onHello(link: Link, hello: HelloMessage): void {
    if (link.hello) {
      this.violation(link, "repeated-hello", "second hello on one link", "hello");
      return;
    }
    const info: StationInfo = {
      persoStation: hello.persoStation,
      agentVersion: hello.agentVersion,
      sessionId: hello.sessionId,
      connectedAt: new Date().toISOString(),
      ...(link.clientCertSubject ? { clientCertSubject: link.clientCertSubject } : {}),
    };
    const previous = this.stations.get(hello.persoStation);
    if (previous && previous !== link) {
      // The agent reconnected while D1 still held the old (half-open) link: the new one wins.
      this.log.info({ station: hello.persoStation }, "station reconnected: replacing its old link");
      previous.ws.terminate();
    }
    link.station = hello.persoStation;
    link.hello = info;
    this.stations.set(hello.persoStation, link);
    this.hellos.push(info);
    this.stats.hellos++;
    this.log.info(
      { station: info.persoStation, agentVersion: info.agentVersion, sessionId: info.sessionId },
      "hello",
    );
    this.send(link, { type: "welcome", serverTime: new Date().toISOString() });
    this.emit("connection", info);
  }

  private onNotify(link: Link, message: NotifyMessage, raw: unknown): void {
    const station = link.station!;
    this.stats.notifies++;
    if (message.operations.length !== message.eventIds.length) {
      this.violation(
        link,
        "notify-length-mismatch",
        `${message.operations.length} operations but ${message.eventIds.length} eventIds; not acked`,
        "notify",
      );
      return;
    }
    const rawOperations = (raw as { operations: unknown[] }).operations;
    const at = new Date().toISOString();
    const toAck: string[] = [];
    message.operations.forEach((operation, i) => {
      const eventId = message.eventIds[i]!;
      const previous = this.byEventId.get(eventId);
      const event: ReceivedEvent = { at, eventId, operation, duplicate: previous !== undefined, station };
      this.received.push(event);
      if (!toAck.includes(eventId)) toAck.push(eventId);
      if (previous) {
        if (JSON.stringify(previous.operation) !== JSON.stringify(operation)) {
          this.violation(
            link,
            "event-id-reused",
            `eventId ${eventId} re-sent with a different operation`,
            "notify",
          );
        }
        this.stats.duplicateEvents++;
        this.emit("duplicate", operation, event);
        return;
      }
      this.checkOperation(link, rawOperations[i], operation, "notify");
      const first = this.firstStartTime.get(operation.operationId);
      if (first === undefined) this.firstStartTime.set(operation.operationId, operation.startTime);
      else if (first !== operation.startTime) {
        this.violation(link, "start-time-changed", `startTime of ${operation.operationId} changed`, "notify");
      }
      this.byEventId.set(eventId, event);
      this.fresh.push(event);
      this.stats.newEvents++;
      if (this.options.recordFile) appendFileSync(this.options.recordFile, `${JSON.stringify(operation)}\n`);
      this.emit("operation", operation, event);
    });
    this.log.info(
      { station, eventIds: message.eventIds, operationIds: message.operations.map((o) => o.operationId) },
      "notify",
    );
    if (this.options.ackMode === "auto") this.sendAck(link, toAck);
    else for (const id of toAck) this.unacked.set(id, station);
  }

  /** Contract checks on one operation object beyond its schema. */
  private checkOperation(link: Link, raw: unknown, op: Operation, type: string): void {
    const extra = extraKeys(raw, OPERATION_KEYS).concat(
      extraKeys((raw as { details?: unknown } | undefined)?.details, DETAILS_KEYS).map((k) => `details.${k}`),
    );
    if (extra.length > 0) {
      this.violation(
        link,
        "extra-fields",
        `operation ${op.operationId} has fields D1 does not define: ${extra.join(", ")}`,
        type,
      );
    }
    if (KNOWN_STATUSES.has(op.details.status)) {
      const expected = topLevelStatus(op.details.status as D1Status);
      if (expected !== op.status) {
        this.violation(
          link,
          "status-mismatch",
          `operation ${op.operationId}: details.status ${op.details.status} goes with status ${expected}, got ${op.status}`,
          type,
        );
      }
      const terminal = TERMINAL_D1_STATUSES.has(op.details.status);
      if (terminal !== (op.endTime !== undefined)) {
        this.violation(
          link,
          "end-time",
          `operation ${op.operationId}: ${op.details.status} ${terminal ? "needs" : "must not have"} an endTime`,
          type,
        );
      }
    }
  }

  private onAnswer(link: Link, message: PushResultMessage | CancelResult | StatusResult, raw: unknown): void {
    const pending = this.pending.get(message.requestId);
    const record =
      message.type === "push-result" ? this.pushes.find((p) => p.requestId === message.requestId) : undefined;
    if (message.type === "cancel-result" && message.operation) {
      this.checkOperation(link, (raw as { operation?: unknown }).operation, message.operation, message.type);
    }
    if (message.type === "status-result") {
      const rawOps = (raw as { operations: unknown[] }).operations;
      for (const [i, op] of message.operations.entries())
        this.checkOperation(link, rawOps[i], op, message.type);
    }
    if (message.type === "push-result") this.onPushResult(link, message, record);

    if (pending && pending.link === link && pending.type === message.type) {
      clearTimeout(pending.timer);
      this.pending.delete(message.requestId);
      pending.resolve(message);
    } else if (this.timedOut.get(message.requestId) === message.type) {
      // D1 stopped waiting, the agent still answered: late, not wrong (a cancel answers once the card
      // is in the reject box, which a busy printer may take longer than D1's patience).
      this.timedOut.delete(message.requestId);
      this.lateAnswers.push({ requestId: message.requestId, type: message.type });
    } else if (!(record && record.failure === "timeout" && record.answer === message)) {
      this.violation(
        link,
        "unexpected-answer",
        `${message.type} for unknown requestId ${message.requestId}`,
        message.type,
      );
    }
  }

  private onPushResult(link: Link, message: PushResultMessage, record: PushRecord | undefined): void {
    this.log.info(
      {
        requestId: message.requestId,
        operationId: message.operationId,
        result: message.result,
        duplicate: message.duplicate,
        errorCode: message.errorCode,
      },
      "push-result",
    );
    if (record && !record.answer) {
      record.answer = message;
      record.answeredAt = new Date().toISOString();
      if (
        record.operationId !== undefined &&
        message.operationId !== undefined &&
        record.operationId !== message.operationId
      ) {
        this.violation(
          link,
          "push-result-mismatch",
          `push ${message.requestId} was for ${record.operationId}, answer names ${message.operationId}`,
          message.type,
        );
      }
    }
    const operationId = message.operationId;
    if (operationId !== undefined) {
      const first = this.firstAnswer.get(operationId);
      // Refused jobs are not stored, so a later push of that operationId may be accepted; an
      // accepted one, though, must be answered `accepted` (duplicate) for ever.
      if (first === undefined || first === "refused") this.firstAnswer.set(operationId, message.result);
      else if (message.result !== "accepted") {
        this.violation(
          link,
          "push-result-mismatch",
          `${operationId} answered ${message.result} after ${first}: a re-push must get the first answer`,
          message.type,
        );
      }
      if (message.result === "accepted") this.accepted.add(operationId);
    }
    this.emit("push-result", message, record);
  }

  private onAgentError(link: Link, message: ErrorMessage): void {
    const record: AgentErrorRecord = {
      at: new Date().toISOString(),
      ...(link.station !== undefined ? { station: link.station } : {}),
      message,
    };
    this.agentErrors.push(record);
    this.log.warn(
      { station: link.station, code: message.code, requestId: message.requestId },
      "agent error message",
    );
    this.emit("agent-error", record);
    const requestId = message.requestId;
    if (requestId === undefined) return;
    const pending = this.pending.get(requestId);
    if (!pending || pending.link !== link) return;
    clearTimeout(pending.timer);
    this.pending.delete(requestId);
    this.markPushFailure(requestId, "agent-error");
    pending.reject(
      new D1EmulatorError("AGENT_ERROR", `agent answered ${requestId} with error ${message.code}`),
    );
  }
}

// ---- helpers ------------------------------------------------------------------------------------

function rawText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString("utf8");
  return data.toString("utf8");
}

function typeOf(json: unknown): string | undefined {
  if (json === null || typeof json !== "object") return undefined;
  const t = (json as { type?: unknown }).type;
  return typeof t === "string" ? t.slice(0, 40) : undefined;
}

/** Issue paths and codes only: zod messages never quote values, but keep it that way. */
function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.join(".") || "(root)"}: ${i.code}`)
    .join("; ");
}

function extraKeys(raw: unknown, known: ReadonlySet<string>): string[] {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return [];
  return Object.keys(raw).filter((k) => !known.has(k));
}

function operationIdOf(job: unknown): string | undefined {
  if (job === null || typeof job !== "object") return undefined;
  const id = (job as { operationId?: unknown }).operationId;
  return typeof id === "string" ? id : undefined;
}

/** True when `b` is newer than `a` by D1's rule (endTime beats none; later endTime; later arrival). */
function newerThan(a: Operation, b: Operation): boolean {
  if (a.endTime === undefined) return true;
  if (b.endTime === undefined) return false;
  return Date.parse(b.endTime) >= Date.parse(a.endTime);
}

/** The strings of a job that must never come back from the agent: tracks, PAN, sensitive print, APDUs. */
function secretsOf(job: unknown): string[] {
  const out: string[] = [];
  const add = (s: unknown, min = 8): void => {
    if (typeof s === "string" && s.length >= min) out.push(s);
  };
  const pd = (job as { productionData?: Record<string, unknown> } | null)?.productionData;
  if (!pd || typeof pd !== "object") return out;
  const mag = pd["magstripe"] as Record<string, unknown> | undefined;
  if (mag && typeof mag === "object") {
    for (const t of ["track1", "track2", "track3"]) add(mag[t]);
    const t2 = mag["track2"];
    if (typeof t2 === "string") add(t2.split("=")[0], 12);
    const t1 = mag["track1"];
    if (typeof t1 === "string") add(t1.replace(/^B/, "").split("^")[0], 12);
  }
  const print = pd["print"] as Record<string, unknown> | undefined;
  for (const side of ["front", "back"]) {
    const items = print && typeof print === "object" ? print[side] : undefined;
    if (!Array.isArray(items)) continue;
    for (const item of items as Array<{ text?: unknown; sensitive?: unknown }>) {
      if (item?.sensitive !== true || typeof item.text !== "string") continue;
      add(item.text);
      add(item.text.replace(/[ -]/g, ""));
    }
  }
  const apdus = (pd["chip"] as { apdus?: unknown } | undefined)?.apdus;
  if (Array.isArray(apdus)) for (const a of apdus as Array<{ command?: unknown }>) add(a?.command, 16);
  return out;
}
