import { rmSync } from "node:fs";
import { join } from "node:path";
import { benchDataDir, benchJob, newRunId, newToken } from "../lib/assemble.js";
import { AgentChild } from "../lib/child.js";
import { LeanD1 } from "../lib/lean-d1.js";
import {
  atMost,
  type Figure,
  figure,
  info,
  mean,
  nowMs,
  percentile,
  progress,
  round,
  sleep,
} from "../lib/util.js";

const BAUD_BYTES_PER_S = 115_200 / 10; // 8N1: 10 bits a byte on the line

export interface PerCardOptions {
  warmup: number;
  /** Cards through the agent as shipped (resvg renders each panel on the card's path). */
  cards: number;
  /** Cards with the pipeline's renderer swapped for panels rendered ahead. */
  cardsNoRender: number;
  /** Cards for the status-latency figure. */
  statusCards: number;
  /** Cards for which the uncompressed baseline is sent as well. */
  wireBaselineCards: number;
  /** Child experiments (agent-child.ts); their figures get `suffix` and goal "info". */
  experiments?: string[];
  suffix?: string;
}

interface Pair {
  agentMs: number;
  bareMs: number;
  acceptMs: number;
  agentBytes: number;
  bareBytes: number;
}

type Job = Record<string, unknown> & { operationId: string };

/**
 * Figures 1–3. The agent runs in bench/agent-child.ts with zero-latency virtual printers; D1 is the
 * bench D1 in this process, so D1's work never sits on the agent's event loop and timestamps are
 * taken where D1 would take them. The bare reference is a second EvolisPrinter inside the agent's
 * process, on its own virtual printer and the same transport stack, running the pipeline's command
 * sequence for the same job, with no store, pipeline or D1 around it.
 */
export async function perCardFigures(o: PerCardOptions): Promise<Figure[]> {
  const token = newToken();
  const d1 = new LeanD1(token);
  const url = await d1.start();
  const dataDir = benchDataDir("percard");
  const child = new AgentChild({
    d1Url: url,
    token,
    dataDir,
    logFile: join(dataDir, "agent.log"),
    bare: true,
    render: "resvg",
    ...(o.experiments ? { experiments: o.experiments } : {}),
  });
  const suffix = o.suffix ?? "";
  try {
    await child.ready;
    await d1.waitForStation();
    const done = new Map<string, (at: number) => void>();
    d1.onStatus = (e) => {
      if (e.status === "CARD_PROD_DONE") done.get(e.operationId)?.(e.at);
    };
    const runId = newRunId();
    let next = 0;
    const newJob = (): Job => benchJob(next++, runId) as Job;

    /** One card through the whole agent: push → … → CARD_PROD_DONE read by D1. */
    const agentCard = async (job: Job) => {
      const bytes0 = (await child.request<{ agent: number }>("bytes")).agent;
      const doneAt = new Promise<number>((resolve) => done.set(job.operationId, resolve));
      const t0 = nowMs();
      const answer = await d1.push(job);
      if (answer.result !== "accepted") throw new Error(`bench job refused: ${answer.errorCode}`);
      const t1 = await doneAt;
      done.delete(job.operationId);
      const bytes1 = (await child.request<{ agent: number }>("bytes")).agent;
      return { ms: t1 - t0, acceptMs: answer.at - t0, bytes: bytes1 - bytes0 };
    };

    const pairs = async (n: number, label: string, prerender: boolean): Promise<Pair[]> => {
      const out: Pair[] = [];
      const t0 = nowMs();
      for (let i = 0; i < n; i++) {
        const job = newJob();
        if (prerender) await child.request("prerender", { job });
        await sleep(1);
        const a = await agentCard(job);
        await sleep(1);
        const b = await child.request<{ ms: number; bytes: number }>("bare", { job });
        out.push({
          agentMs: a.ms,
          bareMs: b.ms,
          acceptMs: a.acceptMs,
          agentBytes: a.bytes,
          bareBytes: b.bytes,
        });
      }
      progress(`${label}: ${n} card pairs in ${round((nowMs() - t0) / 1000, 1)} s`);
      return out;
    };

    // ---- figure 1: overhead per card, agent as shipped (resvg on the card's path) ----
    await pairs(o.warmup, "warm-up", false);
    const shipped = await pairs(o.cards, "overhead, as shipped", false);
    const renderMs =
      o.cards === 0
        ? []
        : (
            await child.request<{ ms: number[] }>("render-time", {
              jobs: Array.from({ length: 40 }, () => newJob()),
            })
          ).ms;

    // ---- figure 1b: rendering off the card's path (panels rendered before the push) ----
    await child.request("render-mode", { mode: "prerendered" });
    if (o.cardsNoRender > 0) await pairs(Math.min(o.warmup, 10), "warm-up (render off the path)", true);
    const noRender = await pairs(o.cardsNoRender, "overhead, render off the path", true);
    await child.request("render-mode", { mode: "resvg" });

    // ---- figure 2: wire bytes against the uncompressed baseline, same jobs ----
    const wire: Array<{ agent: number; raw: number }> = [];
    for (let i = 0; i < o.wireBaselineCards; i++) {
      const job = newJob();
      const a = await agentCard(job);
      const r = await child.request<{ bytes: number; same: boolean }>("bare", { job, raw: true });
      if (!r.same) throw new Error("bench: the baseline printer did not print the agent's panels");
      wire.push({ agent: a.bytes, raw: r.bytes });
    }

    // ---- figure 3: card taken → CARD_PROD_DONE read by D1 ----
    // The cardholder reaches for the card 5–60 ms after it is presented, in step with nothing.
    const taken = new Map<string, number>();
    const doneSent = new Map<string, number>();
    child.onTaken = (e) => {
      if (e.operationId) taken.set(e.operationId, e.at);
    };
    child.onDoneSent = (e) => {
      if (e.operationId && !doneSent.has(e.operationId)) doneSent.set(e.operationId, e.at);
    };
    const statusJobs: string[] = [];
    await child.request("take", { mode: { kind: "random", minMs: 5, maxMs: 60, seed: 7 } });
    const statusMs: number[] = [];
    const t0 = nowMs();
    for (let i = 0; i < o.statusCards; i++) {
      const job = newJob();
      const doneAt = new Promise<number>((resolve) => done.set(job.operationId, resolve));
      await d1.push(job);
      const t = await doneAt;
      const tk = taken.get(job.operationId);
      if (tk === undefined) throw new Error("bench: no card-taken event for a DONE job");
      statusMs.push(t - tk);
      statusJobs.push(job.operationId);
      await sleep(1);
    }
    progress(`status latency: ${o.statusCards} cards in ${round((nowMs() - t0) / 1000, 1)} s`);
    await child.request("take", { mode: { kind: "now" } });
    // The child's IPC report of the socket write may arrive after D1 read the frame.
    await sleep(100);
    const inAgentMs = statusJobs.flatMap((id) => {
      const sentAt = doneSent.get(id);
      const tk = taken.get(id);
      return sentAt === undefined || tk === undefined ? [] : [sentAt - tk];
    });
    if (d1.errors.length > 0) throw new Error(`agent sent error frames: ${d1.errors[0]}`);

    const ov = shipped.map((c) => c.agentMs - c.bareMs);
    const ovNr = noRender.map((c) => c.agentMs - c.bareMs);
    const wireAgent = mean(wire.map((w) => w.agent));
    const wireRaw = mean(wire.map((w) => w.raw));
    const dist = (v: number[]) => ({ p50: round(percentile(v, 50)), p99: round(percentile(v, 99)) });
    const figures: Figure[] = [];
    if (shipped.length > 0)
      figures.push(
        figure("overhead_ms_per_card_p50", percentile(ov, 50), "ms", atMost(2), {
          cards: ov.length,
          includes: "resvg render of both panels (on the card's path as shipped)",
          agent_card_ms: dist(shipped.map((c) => c.agentMs)),
          bare_driver_ms: dist(shipped.map((c) => c.bareMs)),
          render_ms_per_card: dist(renderMs),
          push_to_accepted_ms: dist(shipped.map((c) => c.acceptMs)),
        }),
        figure("overhead_ms_per_card_p99", percentile(ov, 99), "ms", atMost(10), { cards: ov.length }),
      );
    if (noRender.length > 0)
      figures.push(
        figure("overhead_ms_per_card_excl_render_p50", percentile(ovNr, 50), "ms", atMost(2), {
          cards: ovNr.length,
          note: "pipeline renderer swapped for panels rendered before the push (bench-only)",
          agent_card_ms: dist(noRender.map((c) => c.agentMs)),
          bare_driver_ms: dist(noRender.map((c) => c.bareMs)),
          push_to_accepted_ms: dist(noRender.map((c) => c.acceptMs)),
        }),
        figure("overhead_ms_per_card_excl_render_p99", percentile(ovNr, 99), "ms", atMost(10), {
          cards: ovNr.length,
        }),
      );
    if (wire.length > 0)
      figures.push(
        figure("wire_bytes_per_card", wireAgent, "bytes", info(), {
          cards: wire.length,
          min: Math.min(...wire.map((w) => w.agent)),
          max: Math.max(...wire.map((w) => w.agent)),
          bare_driver_bytes: round(mean(shipped.map((c) => c.bareBytes)), 0),
          baseline_db_bytes: round(wireRaw, 0),
        }),
        figure("wire_ratio_to_uncompressed_pct", (wireAgent / wireRaw) * 100, "%", atMost(5), {
          baseline: "same EvolisPrinter sequence with each panel sent as plain Db (82 296 bytes a side)",
        }),
        figure("wire_ms_per_card_115200", (wireAgent / BAUD_BYTES_PER_S) * 1000, "ms", info(), {
          baseline_db_ms: round((wireRaw / BAUD_BYTES_PER_S) * 1000, 0),
          line: "115200 baud 8N1 = 11 520 bytes/s",
        }),
      );
    if (statusMs.length > 0)
      figures.push(
        figure("status_latency_ms_p50", percentile(statusMs, 50), "ms", info(), {
          cards: statusMs.length,
          from: "virtual printer card-taken (agent process)",
          to: "D1 reads CARD_PROD_DONE (bench process)",
          taken_to_socket_write_ms: dist(inAgentMs),
        }),
        figure("status_latency_ms_p99", percentile(statusMs, 99), "ms", atMost(20), {
          cards: statusMs.length,
          max: round(Math.max(...statusMs)),
        }),
      );
    // Experiment runs: same figures, named with the suffix, informative only.
    return suffix === ""
      ? figures
      : figures.map(({ ok: _ok, ...f }) => ({
          ...f,
          name: `${f.name}${suffix}`,
          goal: "info",
          experiments: o.experiments,
        }));
  } finally {
    await child.stop();
    await d1.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
