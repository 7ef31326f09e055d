import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import WebSocket from "ws";
import { IdSchema } from "../jobs/production-job.js";
import type { Logger } from "../log/logger.js";
import type { Clock, TimerHandle } from "../util/clock.js";
import { Backoff, type BackoffOptions } from "./backoff.js";
import { type AgentToD1, D1ToAgent, type ErrorMessage } from "./messages.js";

export interface D1LinkOptions {
  url: string;
  token: string;
  station: string;
  agentVersion: string;
  clock: Clock;
  logger: Logger;
  backoff: BackoffOptions;
  /** A ping every interval; the link is declared dead after `missedPongs` pings without a pong. */
  pingIntervalMs: number;
  missedPongs?: number;
  /** TLS options handed to `ws` (CA, client certificate) for wss:// URLs. */
  tls?: WebSocket.ClientOptions;
  /** The largest frame (message) read from D1, bytes. Default MAX_FRAME_BYTES (tests lower it). */
  maxFrameBytes?: number;
}

/**
 * The largest message D1 may send (docs/protocol.md, "Frames"): 1 MiB. The largest legitimate one,
 * a push with a JWE of MAX_JWE_LENGTH (1 000 000 characters), fits with room for the envelope. `ws`
 * checks a frame's declared length before it buffers the payload (and a compressed frame's inflated
 * size as it inflates), so a larger frame costs no memory: the socket is closed with 1009 (message
 * too big) and the link reconnects. `ws`'s own default is 100 MiB.
 */
export const MAX_FRAME_BYTES = 1024 * 1024;

type D1Message = Exclude<D1ToAgent, { type: "welcome" } | { type: "error" }>;

export interface D1LinkEvents {
  up: [];
  down: [reason: string];
  message: [message: D1Message];
}

const KNOWN_TYPES = new Set(["welcome", "push", "ack", "cancel", "status-query", "error"]);

/**
 * The agent's outbound WebSocket to D1. Kiosks sit behind NAT, so the agent dials out; D1 pushes jobs
 * down the same socket. The link is "up" only after D1 answered our hello with welcome. It never
 * gives up: every failure schedules a reconnect with capped, jittered backoff.
 */
export class D1Link extends EventEmitter<D1LinkEvents> {
  private socket: WebSocket | undefined;
  private up = false;
  private stopped = true;
  private reconnectTimer: TimerHandle | undefined;
  private pingTimer: TimerHandle | undefined;
  private missed = 0;
  /** Why the last attempt failed (TLS verification, refused, …): code and message, no secrets. */
  private lastError: { code?: string; message: string } | undefined;
  private readonly backoff: Backoff;
  private readonly log: Logger;
  readonly sessionId = randomUUID();
  /** `sessions` counts welcomes: every one after the first is a reconnect. */
  readonly stats = { sessions: 0, malformed: 0, oversized: 0, sent: 0, received: 0 };

  constructor(private readonly options: D1LinkOptions) {
    super();
    this.backoff = new Backoff(options.backoff);
    this.log = options.logger.child({ component: "d1-link" });
  }

  get isUp(): boolean {
    return this.up;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.clearTimers();
    const socket = this.socket;
    this.socket = undefined;
    if (!socket) return;
    await new Promise<void>((resolve) => {
      if (socket.readyState === WebSocket.CLOSED) return resolve();
      // A peer that never answers the close handshake must not hold shutdown.
      const timer = this.options.clock.setTimeout(() => {
        socket.terminate();
        resolve();
      }, 2000);
      socket.once("close", () => {
        // Cleared, or the process would linger for the rest of the 2 s after a clean close.
        this.options.clock.clearTimeout(timer);
        resolve();
      });
      socket.close(1001, "agent stopping");
    });
    this.markDown("stopped");
  }

  /** Sends a message if the link is up; returns false (nothing sent) otherwise. */
  send(message: AgentToD1): boolean {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    if (message.type !== "hello" && !this.up) return false;
    socket.send(JSON.stringify(message));
    this.stats.sent++;
    return true;
  }

  private connect(): void {
    if (this.stopped) return;
    const { url, token } = this.options;
    const maxPayload = this.options.maxFrameBytes ?? MAX_FRAME_BYTES;
    this.lastError = undefined;
    const socket = new WebSocket(url, {
      ...this.options.tls,
      headers: { Authorization: `Bearer ${token}` },
      handshakeTimeout: 10_000,
      maxPayload,
    });
    this.socket = socket;
    let tooLarge = false;
    socket.on("open", () => {
      this.send({
        type: "hello",
        persoStation: this.options.station,
        agentVersion: this.options.agentVersion,
        sessionId: this.sessionId,
      });
      this.startPinging(socket);
    });
    socket.on("message", (data, isBinary) => this.onFrame(socket, data, isBinary));
    socket.on("pong", () => {
      this.missed = 0;
    });
    socket.on("unexpected-response", (_req, res) => {
      this.lastError = { code: `HTTP_${res.statusCode}`, message: "D1 refused the upgrade" };
      this.log.warn({ httpStatus: res.statusCode }, "D1 refused the connection");
      socket.terminate();
    });
    socket.on("error", (err) => {
      // Followed by 'close'; reconnect is scheduled there. The message names the cause, not secrets.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH") {
        // Not read, not answered: the frame is dropped unread and ws closes the socket with 1009.
        // A peer that does not complete the close handshake must not hold the reconnect for 30 s.
        tooLarge = true;
        this.stats.oversized++;
        this.lastError = { code: "FRAME_TOO_LARGE", message: `D1 sent a frame over ${maxPayload} bytes` };
        this.log.warn(
          { limitBytes: maxPayload, closeCode: 1009 },
          "D1 sent a frame over the size limit; not read, link closed (1009), reconnecting",
        );
        const timer = this.options.clock.setTimeout(() => socket.terminate(), 1000);
        socket.once("close", () => this.options.clock.clearTimeout(timer));
        return;
      }
      // Terminating a refused upgrade ends in an error of its own: the HTTP status stays the cause.
      if (this.lastError?.code?.startsWith("HTTP_")) return;
      this.lastError = { ...(code ? { code } : {}), message: err.message };
      this.log.debug(
        { err: { message: err.message, code: (err as NodeJS.ErrnoException).code } },
        "D1 socket error",
      );
    });
    socket.on("close", (code) => {
      if (this.socket === socket) this.socket = undefined;
      this.clearPing();
      // After an oversized frame ws reports 1006 (D1's close frame is never parsed); we sent 1009.
      this.markDown(tooLarge ? "closed (1009: frame too large)" : `closed (${code})`);
      this.scheduleReconnect();
    });
  }

  private onFrame(socket: WebSocket, data: WebSocket.RawData, isBinary: boolean): void {
    this.stats.received++;
    let parsed: unknown;
    try {
      if (isBinary) throw new Error("binary frame");
      parsed = JSON.parse(data.toString());
    } catch {
      this.reject(socket, "MALFORMED_JSON", "frame is not a JSON text message");
      return;
    }
    const type = (parsed as { type?: unknown } | null)?.type;
    // Echoed (and logged) only when it is a valid id: a bad one may be huge or hold card data.
    const requestId = IdSchema.safeParse((parsed as { requestId?: unknown } | null)?.requestId);
    const reqId = requestId.success ? requestId.data : undefined;
    if (typeof type !== "string" || !KNOWN_TYPES.has(type)) {
      this.reject(
        socket,
        "UNKNOWN_TYPE",
        `unknown message type ${JSON.stringify(String(type)).slice(0, 40)}`,
        reqId,
      );
      return;
    }
    const result = D1ToAgent.safeParse(parsed);
    if (!result.success) {
      // Paths only: values may be card data.
      const paths = result.error.issues.map((i) => i.path.join(".") || "(root)").join(", ");
      this.reject(socket, "INVALID_MESSAGE", `invalid ${type} message at ${paths}`, reqId);
      return;
    }
    const message = result.data;
    switch (message.type) {
      case "welcome":
        if (!this.up) {
          this.up = true;
          this.stats.sessions++;
          this.backoff.reset();
          this.log.info("D1 link up");
          this.emit("up");
        }
        return;
      case "error":
        this.log.warn({ code: message.code, requestId: message.requestId }, "D1 reported an error");
        return;
      default:
        if (!this.up) {
          this.reject(socket, "INVALID_MESSAGE", "hello not answered with welcome yet", reqId);
          return;
        }
        this.emit("message", message);
    }
  }

  private reject(socket: WebSocket, code: ErrorMessage["code"], message: string, requestId?: string): void {
    this.stats.malformed++;
    this.log.warn({ code, requestId }, "unreadable message from D1");
    if (socket.readyState !== WebSocket.OPEN) return;
    const reply: ErrorMessage = { type: "error", code, message, ...(requestId ? { requestId } : {}) };
    socket.send(JSON.stringify(reply));
  }

  private startPinging(socket: WebSocket): void {
    this.missed = 0;
    const limit = this.options.missedPongs ?? 2;
    const tick = (): void => {
      if (this.socket !== socket) return;
      if (this.missed >= limit) {
        this.log.warn({ missedPongs: this.missed }, "D1 link dead (no pong), reconnecting");
        socket.terminate();
        return;
      }
      this.missed++;
      socket.ping();
      this.pingTimer = this.options.clock.setTimeout(tick, this.options.pingIntervalMs);
    };
    this.pingTimer = this.options.clock.setTimeout(tick, this.options.pingIntervalMs);
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    const { attempt, delayMs, ceilingMs } = this.backoff.next();
    // One line per backoff step, so an unreachable D1 does not flood the log.
    // The cause matters most for TLS: an untrusted certificate retries for ever, visibly.
    const cause = this.lastError;
    this.lastError = undefined;
    this.log.warn(
      { attempt, delayMs, ceilingMs, url: redactUrl(this.options.url), ...(cause ? { cause } : {}) },
      "D1 unreachable, retrying",
    );
    this.reconnectTimer = this.options.clock.setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect();
    }, delayMs);
  }

  private markDown(reason: string): void {
    if (!this.up) return;
    this.up = false;
    this.log.warn({ reason }, "D1 link down");
    this.emit("down", reason);
  }

  private clearPing(): void {
    if (this.pingTimer) this.options.clock.clearTimeout(this.pingTimer);
    this.pingTimer = undefined;
  }

  private clearTimers(): void {
    this.clearPing();
    if (this.reconnectTimer) this.options.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
  }
}

/** URLs may carry credentials in userinfo or query; log scheme, host and path only. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return "(unparseable url)";
  }
}
