/**
 * `npm run bench`: every figure of docs/performance.md against the simulator, one JSON object a line
 * on stdout ({"name","value","unit","goal","ok",…}); progress on stderr; the whole run also goes to
 * tmp/bench-last.json. Budget: under 5 minutes on 2 cores.
 *
 *   npm run bench                       all figures
 *   npm run bench -- --only per-card    some sections: smoke, disk, per-card, queue, cold-start, long-run
 *   npm run bench -- --full             long run to 20 000 cards whatever the time
 *   npm run bench -- --experiments      also the runtime experiments (sync off, tsx, semi-space)
 *
 * The agent's process runs bench/agent-child.ts bundled exactly as `npm run build` bundles the
 * product (scripts/build.ts), under plain node: the agent as shipped.
 *
 * BENCH_CHILD_NODE_ARGS="--cpu-prof --cpu-prof-dir=tmp/prof" profiles the agent process of any
 * section (bench/tools/cpuprofile-top.ts summarises a profile).
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { coldStartFigures } from "./figures/cold-start.js";
import { diskFigures } from "./figures/disk.js";
import { longRunFigures } from "./figures/long-run.js";
import { perCardFigures } from "./figures/per-card.js";
import { queueFigures } from "./figures/queue.js";
import { smokeCheck } from "./figures/smoke.js";
import { childRuntime, useShippedEntry } from "./lib/child.js";
import { precompile } from "./lib/precompile.js";
import { type Figure, figure, machineInfo, nowMs, progress, round } from "./lib/util.js";

const BUDGET_S = 285;
const SECTIONS = ["smoke", "disk", "per-card", "queue", "cold-start", "long-run"] as const;
type Section = (typeof SECTIONS)[number];

const argv = process.argv.slice(2);
const onlyAt = argv.indexOf("--only");
const only = onlyAt >= 0 ? new Set(argv[onlyAt + 1]!.split(",")) : undefined;
const full = argv.includes("--full");
const experiments = argv.includes("--experiments");
const wanted = (s: Section) => !only || only.has(s);

const started = nowMs();
const machineAtStart = machineInfo();
const all: Figure[] = [];
const emit = (figures: Figure[]) => {
  for (const f of figures) {
    all.push(f);
    process.stdout.write(`${JSON.stringify(f)}\n`);
  }
};
const elapsedS = () => (nowMs() - started) / 1000;

progress(
  `machine: ${machineAtStart.nproc} × ${machineAtStart.cpuModel}, node ${machineAtStart.node}, ` +
    `load ${machineAtStart.loadavg.join(" ")}`,
);

const QUEUED = 10_000;
let queuedDir: string | undefined;
let precompiledChild: string | undefined;
try {
  // Built first and used by every agent process below: the agent as shipped, not under tsx.
  precompiledChild = await precompile("bench/agent-child.ts", "agent-child", { bundlePackages: true });
  if (!precompiledChild) progress("esbuild not loadable: the agent processes run under tsx");
  useShippedEntry(precompiledChild);
  progress(`agent processes: ${childRuntime()}`);
  if (wanted("smoke")) await smokeCheck(3);
  if (wanted("disk")) emit(diskFigures());

  if (wanted("per-card")) {
    emit(
      await perCardFigures({
        warmup: 10,
        cards: 100,
        cardsNoRender: 150,
        statusCards: 150,
        wireBaselineCards: 10,
      }),
    );
  }

  if (wanted("queue") || wanted("cold-start")) {
    const q = await queueFigures({ jobs: QUEUED, timedJobs: 3000, window: 64 });
    queuedDir = q.dataDir;
    if (wanted("queue")) emit(q.figures);
  }

  if (wanted("cold-start") && queuedDir) {
    emit(await coldStartFigures({ queuedDataDir: queuedDir, queuedJobs: QUEUED, runs: 3, precompiledChild }));
  }
  if (queuedDir) rmSync(queuedDir, { recursive: true, force: true });

  if (experiments) emit(await experimentFigures());

  if (wanted("long-run")) {
    const deadline = full || experiments ? undefined : started + (BUDGET_S - 15) * 1000;
    emit(
      await longRunFigures({
        cards: 20_000,
        sampleEvery: 1000,
        baselineAt: 1000,
        ahead: 4,
        layouts: 64,
        rateProbeCards: 100,
        ...(deadline ? { deadline } : {}),
      }),
    );
  }
} finally {
  const machine = machineInfo();
  emit([
    figure("bench_total_s", elapsedS(), "s", (v) => ({ goal: "<= 300", ok: v <= 300 }), {
      nproc: machine.nproc,
      cpu: machine.cpuModel,
      node: machine.node,
      loadavg_start: machineAtStart.loadavg,
      loadavg_end: machine.loadavg,
      mem_total_mb: machine.memTotalMb,
      argv,
    }),
  ]);
  const out = join(process.cwd(), "tmp");
  mkdirSync(out, { recursive: true });
  writeFileSync(
    join(out, "bench-last.json"),
    JSON.stringify({ at: new Date().toISOString(), figures: all }, null, 2),
  );
  progress(`total ${round(elapsedS(), 1)} s; results in tmp/bench-last.json`);
}

/**
 * The experiments behind the proposals in docs/performance.md, each changing one thing at run time
 * (no source edit): figure names end with the experiment.
 */
async function experimentFigures(): Promise<Figure[]> {
  const out: Figure[] = [];
  // What the fsyncs cost: the same figures with SQLite's synchronous=OFF (not a proposal: the
  // promises to D1 need them).
  out.push(
    ...(await perCardFigures({
      warmup: 5,
      cards: 0,
      cardsNoRender: 100,
      statusCards: 100,
      wireBaselineCards: 0,
      experiments: ["sync-off"],
      suffix: "_exp_sync_off",
    })),
  );
  {
    const q = await queueFigures({
      jobs: 3000,
      timedJobs: 3000,
      window: 64,
      experiments: ["sync-off"],
      acceptOnly: true,
      suffix: "_exp_sync_off",
    });
    rmSync(q.dataDir, { recursive: true, force: true });
    out.push(...q.figures.map((f) => ({ ...f, goal: "info", ok: undefined })));
  }
  // Memory: the product before it shipped a bundle (tsx), and V8's young generation left to grow.
  const variants: Array<[string, Parameters<typeof queueFigures>[0]]> = [
    ["_exp_tsx", { jobs: QUEUED, timedJobs: 500, window: 64, tsx: true }],
    // The service pins the young generation at 1 MB; 16 MB is V8's own upper bound on 64-bit.
    ["_exp_semi16", { jobs: QUEUED, timedJobs: 500, window: 64, nodeArgs: ["--max-semi-space-size=16"] }],
  ];
  for (const [suffix, options] of variants) {
    const q = await queueFigures({ ...options, suffix });
    rmSync(q.dataDir, { recursive: true, force: true });
    out.push(...q.figures);
  }
  return out;
}
