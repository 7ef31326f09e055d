import { join } from "node:path";
import { benchDataDir, benchJob, newRunId, newToken } from "../lib/assemble.js";
import { AgentChild, childRuntime } from "../lib/child.js";
import { LeanD1 } from "../lib/lean-d1.js";
import {
  atLeast,
  atMost,
  type Figure,
  figure,
  info,
  nowMs,
  procMemory,
  progress,
  round,
  sleep,
} from "../lib/util.js";

export interface QueueOptions {
  /** Jobs queued for the memory figure. */
  jobs: number;
  /**
   * The first `timedJobs` pushes are the accept-rate figure (synchronous=FULL, as shipped). The rest
   * only fill the queue for the memory figure and are accepted with synchronous=OFF to save bench
   * time: fsync costs time, not memory. FULL is restored before memory is read.
   */
  timedJobs: number;
  /** Pushes D1 keeps in flight (sent, not yet answered). */
  window: number;
  experiments?: string[];
  /** Run the agent's TypeScript under the tsx loader instead of the shipped bundle (comparison). */
  tsx?: boolean;
  /** Extra node flags for the agent process (experiments, e.g. --max-semi-space-size=1). */
  nodeArgs?: string[];
  /** Suffix for the figure names of a variant run, e.g. "_exp_tsx". */
  suffix?: string;
  /** Only the accept-rate figure (experiment runs). */
  acceptOnly?: boolean;
}

export interface QueueResult {
  figures: Figure[];
  /** The store the run left: `jobs` READY jobs, every event acknowledged (cold start reuses it). */
  dataDir: string;
}

/**
 * Figures 4 and 5. The agent (child process) runs with a printer whose feeder is empty, so every
 * accepted job waits; the hold bound is an hour, so none fails during the run. D1 (this process)
 * pushes jobs through the ws link with `window` in flight. A push counts as accepted when its
 * push-result arrives, which the agent sends only after the accept transaction committed (WAL,
 * synchronous=FULL: the WAL is fsynced at every commit). Then, with every job queued and every READY
 * event acknowledged, the agent's RSS.
 */
export async function queueFigures(o: QueueOptions): Promise<QueueResult> {
  const suffix = o.suffix ?? "";
  const token = newToken();
  const d1 = new LeanD1(token);
  const url = await d1.start();
  const dataDir = benchDataDir("queue");
  const child = new AgentChild(
    {
      d1Url: url,
      token,
      dataDir,
      logFile: join(dataDir, "agent.log"),
      feederEmpty: true,
      holdWhileStoppedSec: 3600,
      render: "resvg",
      ...(o.experiments ? { experiments: o.experiments } : {}),
    },
    {
      ...(o.tsx ? { tsx: true } : {}),
      ...(o.nodeArgs ? { nodeArgs: o.nodeArgs } : {}),
    },
  );
  try {
    await child.ready;
    await d1.waitForStation();
    await sleep(300);
    const idle = await child.request<{ rssMb: number }>("mem");

    // D1's side of the work (JSON of every job) is done before the clock starts.
    const runId = newRunId();
    const total = o.acceptOnly ? o.timedJobs : o.jobs;
    const frames = Array.from({ length: total }, (_, i) => {
      const requestId = `q${i}`;
      return { requestId, frame: JSON.stringify({ type: "push", requestId, job: benchJob(i, runId) }) };
    });

    /** Pushes frames[from, to) with `window` in flight; resolves with each acceptance time. */
    const pushRange = (from: number, to: number): Promise<number[]> => {
      const acceptedAt: number[] = [];
      let next = from;
      let inFlight = 0;
      return new Promise<number[]>((resolve, reject) => {
        const pump = (): void => {
          while (inFlight < o.window && next < to) {
            const { frame, requestId } = frames[next++]!;
            inFlight++;
            d1.pushFrame(frame, requestId).then((answer) => {
              inFlight--;
              if (answer.result !== "accepted" || answer.duplicate) {
                reject(new Error(`bench push not accepted: ${answer.result} ${answer.errorCode ?? ""}`));
                return;
              }
              acceptedAt.push(answer.at);
              if (acceptedAt.length === to - from) resolve(acceptedAt);
              else pump();
            }, reject);
          }
        };
        pump();
      });
    };

    const t0 = nowMs();
    const timed = await pushRange(0, o.timedJobs);
    const elapsedS = (timed[timed.length - 1]! - t0) / 1000;
    const k = Math.min(1000, Math.floor(o.timedJobs / 3));
    const rate = (from: number, to: number): number =>
      (to - from) / ((timed[to - 1]! - (from === 0 ? t0 : timed[from - 1]!)) / 1000);
    progress(`accept${suffix}: ${o.timedJobs} jobs in ${round(elapsedS, 1)} s`);
    const accept = figure(`accept_jobs_per_s${suffix}`, o.timedJobs / elapsedS, "jobs/s", atLeast(2000), {
      jobs: o.timedJobs,
      window: o.window,
      [`first_${k}_per_s`]: round(rate(0, k), 0),
      [`last_${k}_per_s`]: round(rate(o.timedJobs - k, o.timedJobs), 0),
      ...(o.experiments ? { experiments: o.experiments } : {}),
    });
    if (o.acceptOnly) return { dataDir, figures: [accept] };

    if (o.jobs > o.timedJobs) {
      await child.request("sync", { mode: "OFF" });
      const t1 = nowMs();
      await pushRange(o.timedJobs, o.jobs);
      await child.request("sync", { mode: "FULL" });
      progress(`queue fill: ${o.jobs - o.timedJobs} more jobs in ${round((nowMs() - t1) / 1000, 1)} s`);
    }

    // Every READY event acknowledged, nothing in flight: the queue at rest.
    const until = Date.now() + 60_000;
    while (Date.now() < until) {
      const db = await child.request<{ outboxDepth: number }>("db");
      if (db.outboxDepth === 0) break;
      await sleep(200);
    }
    await sleep(1000);
    const db = await child.request<{
      journalMode: string;
      synchronous: number;
      counts: Record<string, number>;
      outboxDepth: number;
    }>("db");
    const mem = await child.request<{ rssMb: number; heapUsedMb: number; externalMb: number }>("mem");
    const proc = procMemory(child.pid);
    if ((db.counts["READY"] ?? 0) !== o.jobs) {
      throw new Error(`expected ${o.jobs} READY jobs, store has ${JSON.stringify(db.counts)}`);
    }
    accept["journal_mode"] = db.journalMode;
    accept["synchronous"] = db.synchronous === 2 ? "FULL" : db.synchronous;
    return {
      dataDir,
      figures: [
        ...(suffix === "" ? [accept] : []),
        figure(`rss_mb_10k_queued${suffix}`, mem.rssMb, "MB", suffix === "" ? atMost(80) : info(), {
          queued_jobs: db.counts["READY"],
          outbox_unacked: db.outboxDepth,
          rss_idle_empty_store_mb: round(idle.rssMb, 1),
          heap_used_mb: round(mem.heapUsedMb, 1),
          external_mb: round(mem.externalMb, 1),
          vm_hwm_mb: proc ? round(proc.hwmMb, 1) : undefined,
          runtime: childRuntime(o),
          ...(o.experiments ? { experiments: o.experiments } : {}),
          ...(o.nodeArgs ? { node_args: o.nodeArgs } : {}),
        }),
      ],
    };
  } finally {
    await child.stop();
    await d1.stop();
  }
}
