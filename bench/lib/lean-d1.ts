import { timingSafeEqual } from "node:crypto";
import type { AddressInfo } from "node:net";
import { type RawData, type WebSocket, WebSocketServer } from "ws";
import { nowMs } from "./util.js";

/**
 * A minimal D1 for the benchmarks: a real `ws` server speaking the same protocol as
 * simulator/d1-emulator (bearer token, hello → welcome, push → push-result, notify → ack), and
 * nothing else. The D1 emulator is a contract checker: it validates every frame with zod, scans each
 * one for the card data of every job pushed so far and keeps every event, which costs more per frame
 * as a run grows and would be charged to the agent in a same-process measurement. The benchmark
 * still runs its first cards through the real emulator (bench/figures/smoke.ts) to show the
 * assembly honours the contract.
 */

export interface PushAnswer {
  type: "push-result";
  requestId: string;
  operationId?: string;
  result: "accepted" | "refused";
  duplicate?: boolean;
  errorCode?: string;
}

export interface StatusEvent {
  operationId: string;
  status: string;
  /** nowMs() when the notify frame was read. */
  at: number;
}

interface Pending {
  resolve: (answer: PushAnswer & { at: number }) => void;
  reject: (err: Error) => void;
}

export class LeanD1 {
  private wss: WebSocketServer | undefined;
  private socket: WebSocket | undefined;
  private readonly pending = new Map<string, Pending>();
  private seq = 0;
  private stationWaiters: Array<() => void> = [];
  /** Called for every status in every notify (duplicates included; the agent rarely resends). */
  onStatus: ((event: StatusEvent) => void) | undefined;
  /** nowMs() of the last hello. */
  helloAt = 0;
  readonly stats = { hellos: 0, pushes: 0, notifies: 0, events: 0, framesIn: 0 };
  /** Error frames the agent sent (a correct run has none). */
  readonly errors: string[] = [];

  constructor(private readonly token: string) {}

  async start(): Promise<string> {
    const wss = new WebSocketServer({
      host: "127.0.0.1",
      port: 0,
      verifyClient: (info, cb) => {
        const given = Buffer.from(info.req.headers.authorization ?? "");
        const expected = Buffer.from(`Bearer ${this.token}`);
        cb(given.length === expected.length && timingSafeEqual(given, expected), 401);
      },
    });
    await new Promise<void>((resolve, reject) => {
      wss.once("listening", resolve);
      wss.once("error", reject);
    });
    wss.on("connection", (ws) => this.onConnection(ws));
    this.wss = wss;
    return `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  }

  get connected(): boolean {
    return this.socket !== undefined && this.helloAt > 0;
  }

  waitForStation(timeoutMs = 15_000): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no agent connected to the bench D1")), timeoutMs);
      this.stationWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Pushes a job; resolves with the push-result and the time it was read. */
  push(job: unknown): Promise<PushAnswer & { at: number }> {
    const requestId = `b${++this.seq}`;
    return this.pushFrame(JSON.stringify({ type: "push", requestId, job }), requestId);
  }

  /** Pushes an already serialised `push` frame (so D1-side JSON work stays out of a rate figure). */
  pushFrame(frame: string, requestId: string): Promise<PushAnswer & { at: number }> {
    const socket = this.socket;
    if (!socket) return Promise.reject(new Error("no agent connected"));
    return new Promise((resolve, reject) => {
      this.pending.set(requestId, { resolve, reject });
      this.stats.pushes++;
      socket.send(frame);
    });
  }

  async stop(): Promise<void> {
    for (const p of this.pending.values()) p.reject(new Error("bench D1 stopped"));
    this.pending.clear();
    this.socket?.terminate();
    const wss = this.wss;
    this.wss = undefined;
    if (wss) await new Promise<void>((resolve) => wss.close(() => resolve()));
  }

  private onConnection(ws: WebSocket): void {
    // The newest link wins, as with the emulator.
    this.socket?.terminate();
    this.socket = ws;
    ws.on("message", (data: RawData) => this.onFrame(ws, data));
    ws.on("close", () => {
      if (this.socket === ws) {
        this.socket = undefined;
        this.helloAt = 0;
      }
      for (const p of this.pending.values()) p.reject(new Error("agent link closed"));
      this.pending.clear();
    });
  }

  private onFrame(ws: WebSocket, data: RawData): void {
    const at = nowMs();
    this.stats.framesIn++;
    const message = JSON.parse(data.toString()) as { type: string } & Record<string, unknown>;
    switch (message.type) {
      case "hello": {
        this.stats.hellos++;
        this.helloAt = at;
        ws.send(JSON.stringify({ type: "welcome", serverTime: new Date().toISOString() }));
        const waiters = this.stationWaiters;
        this.stationWaiters = [];
        for (const w of waiters) w();
        return;
      }
      case "push-result": {
        const answer = message as unknown as PushAnswer;
        const p = this.pending.get(answer.requestId);
        if (!p) return;
        this.pending.delete(answer.requestId);
        p.resolve({ ...answer, at });
        return;
      }
      case "notify": {
        this.stats.notifies++;
        const ops = message["operations"] as Array<{ operationId: string; details: { status: string } }>;
        const ids = message["eventIds"] as string[];
        ws.send(JSON.stringify({ type: "ack", eventIds: ids }));
        this.stats.events += ops.length;
        if (this.onStatus)
          for (const op of ops) this.onStatus({ operationId: op.operationId, status: op.details.status, at });
        return;
      }
      case "error":
        this.errors.push(JSON.stringify(message).slice(0, 200));
        return;
      default:
        return;
    }
  }
}
