import { rmSync } from "node:fs";
import { join } from "node:path";
import type { ChildOptions } from "../agent-child.js";
import { benchDataDir, benchJob, newRunId, newToken } from "../lib/assemble.js";
import { AgentChild } from "../lib/child.js";
import { LeanD1 } from "../lib/lean-d1.js";
import { atMost, type Figure, figure, info, nowMs, progress, round } from "../lib/util.js";

export interface LongRunOptions {
  cards: number;
  /** RSS is sampled every this many cards; the figure is RSS(cards) − RSS(baselineAt). */
  sampleEvery: number;
  baselineAt: number;
  /** Jobs pushed ahead of production (queued at the agent). */
  ahead: number;
  /** Distinct print layouts: the render cache holds 2 × layouts panels. */
  layouts: number;
  /** Cards produced as shipped in a separate run first, for the as-shipped rate (0: skip). */
  rateProbeCards: number;
  /** nowMs() after which no new job is pushed (the 5-minute budget); the real count is reported. */
  deadline?: number;
  /** Child experiments (agent-child.ts); figure names get `suffix`, goals become "info". */
  experiments?: string[];
  suffix?: string;
}

interface GcSample {
  rssMb: number;
  heapUsedMb: number;
  heapTotalMb: number;
  rssAnonMb?: number;
  rssFileMb?: number;
}

interface Sample {
  cards: number;
  rssMb: number;
  heapUsedMb: number;
}

/**
 * Figure 6. The agent (child process) produces cards on a zero-latency printer whose cardholder takes
 * each card at once; D1 (this process) keeps `ahead` jobs queued. RSS is read inside the child every
 * `sampleEvery` cards without forcing a GC (what the OS sees: `rss_samples_mb`). The figure compares
 * RSS right after a forced full GC at card `baselineAt` and at the end, so that V8's heap cycle (tens
 * of MB up and down) does not decide it.
 *
 * Time, not memory, is what 20 000 cards cost as shipped: resvg takes ~25–30 ms a card and the store
 * fsyncs at every commit. So the long run memoises the pipeline's renderer on the print lines
 * (bench-only, assemble.ts#cachedRenderer; jobs repeat `layouts` layouts with unique ids) and runs
 * SQLite with synchronous=OFF (an fsync allocates nothing); everything else runs as shipped. The
 * as-shipped rate comes from a separate short run. If the budget still runs out (`deadline`), no more
 * jobs are pushed and the JSON says how many cards were made and what the slope projects.
 */
export async function longRunFigures(o: LongRunOptions): Promise<Figure[]> {
  const probe = o.rateProbeCards > 0 ? await produce(o, o.rateProbeCards, "as-shipped") : undefined;
  const run = await produce(o, o.cards, "long");
  const { samples, seconds, stoppedByBudget, baseGc, endGc, renderCache } = run;
  const base = samples.find((s) => s.cards === o.baselineAt);
  const last = samples[samples.length - 1];
  if (!base || !last || !baseGc) throw new Error("long run: not enough cards for a baseline sample");
  // RSS right after a full GC at both points: without it the difference is mostly where V8 happens to
  // be in its heap growing/shrinking cycle (tens of MB either way), not what the agent keeps.
  const growth = endGc.rssMb - baseGc.rssMb;
  // Least-squares slope over the samples from the baseline on, MB per 1000 cards.
  const after = samples.filter((s) => s.cards >= o.baselineAt);
  const mx = after.reduce((a, s) => a + s.cards, 0) / after.length;
  const my = after.reduce((a, s) => a + s.rssMb, 0) / after.length;
  const slope =
    (after.reduce((a, s) => a + (s.cards - mx) * (s.rssMb - my), 0) /
      after.reduce((a, s) => a + (s.cards - mx) ** 2, 0)) *
    1000;
  const half = after.filter((s) => s.cards >= last.cards / 2);
  const figures: Figure[] = [
    figure("rss_growth_mb_20k_cards", growth, "MB", atMost(2), {
      cards: last.cards,
      target_cards: o.cards,
      ...(stoppedByBudget
        ? {
            stopped_by_time_budget: true,
            projected_growth_mb_at_target: round((slope * (o.cards - o.baselineAt)) / 1000, 2),
          }
        : {}),
      measured: "RSS after a forced full GC (global.gc) at the baseline and at the end",
      baseline_at_cards: o.baselineAt,
      rss_after_gc_mb: { baseline: round(baseGc.rssMb, 1), end: round(endGc.rssMb, 1) },
      heap_used_after_gc_mb: { baseline: round(baseGc.heapUsedMb, 1), end: round(endGc.heapUsedMb, 1) },
      heap_total_after_gc_mb: { baseline: round(baseGc.heapTotalMb, 1), end: round(endGc.heapTotalMb, 1) },
      rss_anon_after_gc_mb: {
        baseline: round(baseGc.rssAnonMb ?? Number.NaN, 1),
        end: round(endGc.rssAnonMb ?? Number.NaN, 1),
      },
      rss_file_after_gc_mb: {
        baseline: round(baseGc.rssFileMb ?? Number.NaN, 1),
        end: round(endGc.rssFileMb ?? Number.NaN, 1),
      },
      rss_no_gc_mb: { baseline: round(base.rssMb, 1), end: round(last.rssMb, 1) },
      max_rss_mb: round(Math.max(...samples.map((s) => s.rssMb)), 1),
      slope_mb_per_1000_cards: round(slope, 3),
      growth_over_second_half_mb: round(last.rssMb - half[0]!.rssMb, 2),
      rss_samples_mb: samples.map((s) => round(s.rssMb, 1)),
      render: `memoised resvg (${renderCache.misses} renders, ${renderCache.hits} cache hits)`,
      sqlite_synchronous: "OFF (time only: fsync allocates nothing)",
    }),
    figure("cards_per_s_render_cached", last.cards / seconds, "cards/s", info(), {
      cards: last.cards,
      seconds: round(seconds, 1),
      conditions: "render memoised, synchronous=OFF",
    }),
  ];
  if (probe) {
    const rate = o.rateProbeCards / probe.seconds;
    figures.push(
      figure("cards_per_s_as_shipped", rate, "cards/s", info(), {
        cards: o.rateProbeCards,
        note: `resvg and fsync on every card; 20 000 cards would take ${round(20_000 / rate / 60, 1)} min`,
      }),
    );
  }
  const suffix = o.suffix ?? "";
  return suffix === ""
    ? figures
    : figures.map(({ ok: _ok, ...f }) => ({
        ...f,
        name: `${f.name}${suffix}`,
        goal: "info",
        experiments: o.experiments,
      }));
}

async function produce(o: LongRunOptions, cards: number, mode: "as-shipped" | "long") {
  const token = newToken();
  const d1 = new LeanD1(token);
  const url = await d1.start();
  const dataDir = benchDataDir("longrun");
  const options: ChildOptions = {
    d1Url: url,
    token,
    dataDir,
    logFile: join(dataDir, "agent.log"),
    render: mode === "long" ? "cache" : "resvg",
    ...(o.experiments ? { experiments: o.experiments } : {}),
  };
  const child = new AgentChild(options, { nodeArgs: ["--expose-gc"] });
  try {
    await child.ready;
    await d1.waitForStation();
    if (mode === "long") await child.request("sync", { mode: "OFF" });
    const runId = newRunId();
    const samples: Sample[] = [];
    let pushed = 0;
    let done = 0;
    let failed = 0;
    let stoppedByBudget = false;
    let baseGc: GcSample | undefined;
    let sampling = Promise.resolve();
    let finish!: () => void;
    let fail!: (e: Error) => void;
    const finished = new Promise<void>((resolve, reject) => {
      finish = resolve;
      fail = reject;
    });
    const target = (): number => (stoppedByBudget ? pushed : cards);
    const push = (): void => {
      if (mode === "long" && o.deadline !== undefined && nowMs() > o.deadline && !stoppedByBudget) {
        stoppedByBudget = true;
        progress(`long run: time budget reached after ${done} cards`);
      }
      while (!stoppedByBudget && pushed < cards && pushed - done < o.ahead) {
        const i = pushed++;
        d1.push(benchJob(i, runId, o.layouts)).then((a) => {
          if (a.result !== "accepted") fail(new Error(`push refused: ${a.errorCode}`));
        }, fail);
      }
    };
    d1.onStatus = (e) => {
      if (e.status !== "CARD_PROD_DONE" && e.status !== "CARD_PROD_EXCEPTION") return;
      if (e.status === "CARD_PROD_EXCEPTION") failed++;
      done++;
      if (mode === "long" && done % o.sampleEvery === 0) {
        const at = done;
        sampling = sampling.then(async () => {
          const m = await child.request<{ rssMb: number; heapUsedMb: number }>("mem");
          samples.push({ cards: at, rssMb: m.rssMb, heapUsedMb: m.heapUsedMb });
          if (at === o.baselineAt) baseGc = await child.request("mem", { gc: true });
          if (at % 5000 === 0) progress(`long run: ${at} cards, RSS ${round(m.rssMb, 1)} MB`);
        });
      }
      if (done < target()) push();
      if (done === target()) void sampling.then(finish);
    };
    const t0 = nowMs();
    push();
    await finished;
    const seconds = (nowMs() - t0) / 1000;
    if (failed > 0) throw new Error(`${failed} cards failed during the ${mode} run`);
    const endGc = await child.request<GcSample>("mem", { gc: true });
    const db = await child.request<{ renderCache: { hits: number; misses: number } }>("db");
    progress(`${mode} run: ${done} cards in ${round(seconds, 1)} s`);
    return { samples, seconds, stoppedByBudget, baseGc, endGc, renderCache: db.renderCache };
  } finally {
    await child.stop();
    await d1.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
