import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { ChildOptions } from "../agent-child.js";
import { shippedNodeFlags } from "./shipped-node-flags.js";
import { nowMs } from "./util.js";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const ENTRY = fileURLToPath(new URL("../agent-child.ts", import.meta.url));

export interface ReadyInfo {
  pid: number;
  timeOrigin: number;
  readyAbs: number;
  /** performance.now() values inside the child (ms since its process start). */
  marks: Record<string, number>;
  /** nowMs() in the parent just before spawn, and when the ready message arrived. */
  spawnedAt: number;
  readyReceivedAt: number;
}

export interface TakenEvent {
  operationId: string | undefined;
  at: number;
}

/**
 * bench/agent-child.ts bundled the way the product is (bench/lib/precompile.ts → scripts/build.ts),
 * which run.ts makes first: every child runs it under plain node, as bin/kiosk-agent.mjs runs
 * dist/kiosk-agent.mjs. Undefined (esbuild missing): the children run under tsx, and say so.
 */
let shippedEntry: string | undefined;

export function useShippedEntry(bundle: string | undefined): void {
  shippedEntry = bundle;
}

export function childRuntime(run: { tsx?: boolean } = {}): string {
  const how = !run.tsx && shippedEntry ? "bundle under plain node" : "TypeScript under the tsx loader";
  return `${how}, node ${shippedNodeFlags().join(" ")} (the service's flags)`;
}

/**
 * The parent's handle on bench/agent-child.ts: spawn, wait for ready, request/reply over IPC.
 * Extra node flags (e.g. `--cpu-prof`, `--expose-gc`) come from `nodeArgs` and from
 * BENCH_CHILD_NODE_ARGS, so any figure can be profiled without editing the harness.
 */
export class AgentChild {
  readonly process: ChildProcess;
  readonly ready: Promise<ReadyInfo>;
  readonly exited: Promise<number | null>;
  onTaken: ((event: TakenEvent) => void) | undefined;
  /** The agent handed a notify with CARD_PROD_DONE to its socket. */
  onDoneSent: ((event: TakenEvent) => void) | undefined;
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  /**
   * `precompiled`: this bundle instead of the shipped-form one; `tsx`: the TypeScript entry under the
   * tsx loader instead (how the product ran before it shipped a bundle, kept for comparison).
   */
  constructor(options: ChildOptions, run: { nodeArgs?: string[]; precompiled?: string; tsx?: boolean } = {}) {
    const extra = (process.env["BENCH_CHILD_NODE_ARGS"] ?? "").split(" ").filter(Boolean);
    const bundle = run.tsx ? undefined : (run.precompiled ?? shippedEntry);
    const entry = bundle ? [bundle] : ["--import", "tsx", ENTRY];
    // The service's own node flags first (deploy/kiosk-agent.service); an experiment's come after
    // and win.
    const flags = [...shippedNodeFlags(), ...(run.nodeArgs ?? [])];
    const spawnedAt = nowMs();
    this.process = spawn(process.execPath, [...flags, ...extra, ...entry, JSON.stringify(options)], {
      cwd: REPO,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.exited = new Promise((resolve) => this.process.once("exit", (code) => resolve(code)));
    this.ready = new Promise((resolve, reject) => {
      this.process.once("exit", (code) => reject(new Error(`agent child exited (${code}) before ready`)));
      this.process.on("message", (m: Record<string, unknown>) => {
        if (m["ev"] === "ready") {
          resolve({ ...(m as unknown as ReadyInfo), spawnedAt, readyReceivedAt: nowMs() });
        } else if (m["ev"] === "taken") {
          this.onTaken?.(m as unknown as TakenEvent);
        } else if (m["ev"] === "done-sent") {
          this.onDoneSent?.(m as unknown as TakenEvent);
        } else if (typeof m["id"] === "number") {
          const p = this.pending.get(m["id"]);
          if (!p) return;
          this.pending.delete(m["id"]);
          if (m["ok"]) p.resolve(m["result"]);
          else p.reject(new Error(`agent child: ${String(m["error"])}`));
        }
      });
    });
    this.ready.catch(() => undefined);
    this.process.once("exit", () => {
      for (const p of this.pending.values()) p.reject(new Error("agent child exited"));
      this.pending.clear();
    });
  }

  get pid(): number {
    return this.process.pid!;
  }

  request<T = Record<string, unknown>>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.process.send({ id, cmd, ...args });
    });
  }

  /** Stops the agent cleanly (agent.stop()) and waits for the process to end. */
  async stop(): Promise<void> {
    if (this.process.exitCode !== null) return;
    await this.request("stop").catch(() => undefined);
    this.process.disconnect();
    const timer = setTimeout(() => this.process.kill("SIGKILL"), 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}
