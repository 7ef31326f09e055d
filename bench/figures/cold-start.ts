import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundleFreshness } from "../../bin/entry-freshness.mjs";
import { build, ENTRY, OUTFILE } from "../../scripts/build.js";
import { VirtualEvolisPrinter } from "../../simulator/printer/virtual-evolis-printer.js";
import { PtyDevice } from "../../simulator/pty/pty-device.js";
import { benchDataDir, newToken, STATION } from "../lib/assemble.js";
import { AgentChild, type ReadyInfo } from "../lib/child.js";
import { LeanD1 } from "../lib/lean-d1.js";
import { shippedNodeFlags } from "../lib/shipped-node-flags.js";
import {
  atMost,
  type Figure,
  figure,
  info,
  nowMs,
  percentile,
  procMemory,
  progress,
  round,
} from "../lib/util.js";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const CLI = join(REPO, "bin", "kiosk-agent.mjs");

export interface ColdStartOptions {
  /** Data dir holding the queued store (10 000 READY jobs) left by the queue figures. */
  queuedDataDir: string;
  queuedJobs: number;
  runs: number;
  /** Bundle of agent-child.ts (precompile()), for the no-tsx comparison; skipped when absent. */
  precompiledChild?: string;
}

interface Start {
  ms: number;
  parts?: Record<string, number>;
  /** CLI runs: what bin/kiosk-agent.mjs ran ("dist" or "tsx"), from its stderr notice. */
  entry?: "dist" | "tsx";
  /** CLI runs: VmRSS of the agent process when it became ready. */
  rssMb?: number;
  /** CLI runs: whether SIGTERM ended the process within 3 s of ready. */
  sigtermExited?: boolean;
  /** CLI runs: the first try could not open the pty printer and was discarded. */
  retried?: boolean;
}

/**
 * Figure 7: process start to ready (D1 link up and printer opened and read), with an empty store and
 * with the queued store. Four ways to start:
 *  - the product as shipped: `node bin/kiosk-agent.mjs run --config FILE`, which runs the bundle
 *    dist/kiosk-agent.mjs (`npm run build`, rebuilt here whenever the sources are newer, so the figure
 *    is never the tsx fallback; each run's entry is checked from bin's stderr) under plain node with
 *    the OS serial binding. The printer is a VirtualEvolisPrinter on a real pty (simulator/pty); ready is
 *    read from the agent's own log (`time` of "D1 link up" and of the first "printer state"
 *    idle/stopped), measured from the parent's clock just before spawn. This is the figure; the
 *    process's RSS at ready comes with it;
 *  - the same command with KIOSK_AGENT_FROM_SOURCE=1: the TypeScript under the tsx loader, as before
 *    the build existed (the comparison);
 *  - bench/agent-child.ts under tsx, which times its phases (node + tsx boot, module loading,
 *    construction incl. opening the store, link + printer) to say what dominates;
 *  - the same entry precompiled the same way (bench/lib/precompile.ts), for the same split without tsx.
 * The printer reports an empty feeder, so the 10 000 queued jobs stay queued across runs.
 */
export async function coldStartFigures(o: ColdStartOptions): Promise<Figure[]> {
  const token = newToken();
  const d1 = new LeanD1(token);
  const url = await d1.start();
  const emptyParent = benchDataDir("cold");
  const figures: Figure[] = [];
  try {
    const nodeBare = timeBareNode(o.runs);
    const stores: Array<["empty" | "10k", (run: number) => string]> = [
      [
        "empty",
        (run) => {
          const dir = join(emptyParent, `empty-${run}-${Math.random().toString(36).slice(2)}`);
          mkdirSync(dir, { recursive: true, mode: 0o700 });
          return dir;
        },
      ],
      ["10k", () => o.queuedDataDir],
    ];
    const cli: Record<string, Start[]> = { empty: [], "10k": [] };
    const tsx: Record<string, Start[]> = { empty: [], "10k": [] };
    const child: Record<string, Start[]> = { empty: [], "10k": [] };
    const pre: Record<string, Start[]> = { empty: [], "10k": [] };
    // One untimed start of each CLI form first: the bundle and the node binary in the page cache,
    // tsx's transform cache warm, as on a kiosk after its first boot.
    await ensureBuilt();
    await cliStart(d1, url, token, stores[0]![1](-1), "shipped");
    await cliStart(d1, url, token, stores[0]![1](-2), "from-source");
    for (let run = 0; run < o.runs; run++) {
      for (const [name, dir] of stores) {
        await ensureBuilt();
        cli[name]!.push(await cliStart(d1, url, token, dir(run), "shipped"));
        tsx[name]!.push(await cliStart(d1, url, token, dir(run), "from-source"));
        child[name]!.push(await childStart(d1, url, token, dir(run)));
        if (o.precompiledChild)
          pre[name]!.push(await childStart(d1, url, token, dir(run), o.precompiledChild));
        progress(
          `cold start ${name} #${run + 1}: cli ${round(cli[name]!.at(-1)!.ms, 0)} ms ` +
            `(${cli[name]!.at(-1)!.entry}), cli from source ${round(tsx[name]!.at(-1)!.ms, 0)} ms, ` +
            `bench entry ${round(child[name]!.at(-1)!.ms, 0)} ms` +
            (o.precompiledChild ? `, precompiled ${round(pre[name]!.at(-1)!.ms, 0)} ms` : ""),
        );
      }
    }
    const med = (starts: Start[]) =>
      percentile(
        starts.map((s) => s.ms),
        50,
      );
    const medParts = (starts: Start[]) => {
      const keys = Object.keys(starts[0]?.parts ?? {});
      return Object.fromEntries(
        keys.map((k) => [
          k,
          round(
            percentile(
              starts.map((s) => s.parts![k]!),
              50,
            ),
            0,
          ),
        ]),
      );
    };
    const medRss = (starts: Start[]) =>
      round(
        percentile(
          starts.map((s) => s.rssMb ?? Number.NaN),
          50,
        ),
        1,
      );
    for (const [name] of stores) {
      const label = name === "empty" ? "empty" : `${o.queuedJobs}_jobs`;
      const all = [...cli[name]!, ...tsx[name]!];
      figures.push(
        figure(`cold_start_ms_${label}`, med(cli[name]!), "ms", atMost(500), {
          runs: o.runs,
          all_ms: cli[name]!.map((s) => round(s.ms, 0)),
          command: `node ${shippedNodeFlags().join(" ")} bin/kiosk-agent.mjs run --config FILE (runs dist/kiosk-agent.mjs), printer on a pty`,
          ran_the_bundle: `${cli[name]!.filter((s) => s.entry === "dist").length}/${cli[name]!.length}`,
          from_source_tsx_ms: round(med(tsx[name]!), 0),
          from_source_tsx_all_ms: tsx[name]!.map((s) => round(s.ms, 0)),
          from_source_command: "KIOSK_AGENT_FROM_SOURCE=1 node bin/kiosk-agent.mjs run --config FILE (tsx)",
          discarded_pty_starts: all.filter((s) => s.retried).length,
          sigterm_exit_within_3s: `${all.filter((s) => s.sigtermExited).length}/${all.length}`,
          bench_entry_tsx_ms: round(med(child[name]!), 0),
          bench_entry_tsx_parts_ms: medParts(child[name]!),
          ...(o.precompiledChild
            ? {
                bench_entry_precompiled_ms: round(med(pre[name]!), 0),
                bench_entry_precompiled_parts_ms: medParts(pre[name]!),
              }
            : {}),
          node_bare_start_ms: round(nodeBare, 0),
        }),
        figure(`rss_mb_at_ready_${label}`, medRss(cli[name]!), "MB", info(), {
          command: "VmRSS of `node bin/kiosk-agent.mjs run` (the bundle) when ready, median",
          all_mb: cli[name]!.map((s) => round(s.rssMb ?? Number.NaN, 1)),
          from_source_tsx_mb: medRss(tsx[name]!),
          from_source_tsx_all_mb: tsx[name]!.map((s) => round(s.rssMb ?? Number.NaN, 1)),
        }),
      );
    }
    progress("cold start: done");
    figures.push(
      figure("cold_start_node_bare_ms", nodeBare, "ms", info(), {
        command: "node -e 0 (the floor any Node service pays)",
      }),
    );
    return figures;
  } finally {
    await d1.stop();
    rmSync(emptyParent, { recursive: true, force: true });
  }
}

/**
 * The product as shipped runs the bundle `npm run build` makes; bin/kiosk-agent.mjs runs it only while
 * it is newer than the sources. Rebuilt (same configuration, scripts/build.ts) when it is not, e.g.
 * after an edit, so the figure never measures the tsx fallback by accident.
 */
async function ensureBuilt(): Promise<void> {
  const state = bundleFreshness(REPO);
  if (state.state === "fresh") return;
  progress(`cold start: ${state.reason}: building it (npm run build)`);
  await build({ entry: ENTRY, outfile: OUTFILE });
}

function timeBareNode(runs: number): number {
  const ms: number[] = [];
  for (let i = 0; i < runs + 1; i++) {
    const t0 = nowMs();
    spawnSync(process.execPath, ["-e", "0"]);
    ms.push(nowMs() - t0);
  }
  return percentile(ms.slice(1), 50);
}

async function childStart(
  d1: LeanD1,
  url: string,
  token: string,
  dataDir: string,
  precompiled?: string,
): Promise<Start> {
  const child = new AgentChild(
    {
      d1Url: url,
      token,
      dataDir,
      logFile: join(dataDir, "agent-child.log"),
      feederEmpty: true,
      holdWhileStoppedSec: 3600,
      exitAfterReady: true,
    },
    precompiled ? { precompiled } : {},
  );
  const ready: ReadyInfo = await child.ready;
  await child.exited;
  void d1;
  const m = ready.marks;
  // Process start (performance.timeOrigin) is after fork/exec: the spawn itself is spawn_ms.
  return {
    ms: ready.readyReceivedAt - ready.spawnedAt,
    parts: {
      spawn_to_process_start: ready.timeOrigin - ready.spawnedAt,
      node_and_loader_boot: m["modulesStartedAt"]!,
      module_loading: m["modulesLoadedAt"]! - m["modulesStartedAt"]!,
      construct_agent_open_store: m["constructedAt"]! - m["constructStartedAt"]!,
      start_to_printer_ready: m["printerReadyAt"]! - m["startCalledAt"]!,
      start_to_link_up: m["linkUpAt"]! - m["startCalledAt"]!,
    },
  };
}

/** The product's own entry point against a pty printer; ready is read from its log. */
/**
 * The pty printer is occasionally not openable on this shared machine (other sessions open and close
 * ptys all the time; the agent then retries with its reopen backoff). Such a start is not a start-up
 * figure: it is retried once on a fresh pty and counted.
 */
async function cliStart(
  d1: LeanD1,
  url: string,
  token: string,
  dataDir: string,
  form: "shipped" | "from-source",
): Promise<Start> {
  try {
    return await cliStartOnce(d1, url, token, dataDir, form, 10_000);
  } catch (err) {
    progress(`cold start: CLI run discarded and retried (${(err as Error).message.split("\n")[0]})`);
    return { ...(await cliStartOnce(d1, url, token, dataDir, form, 30_000)), retried: true };
  }
}

async function cliStartOnce(
  d1: LeanD1,
  url: string,
  token: string,
  dataDir: string,
  form: "shipped" | "from-source",
  limitMs: number,
): Promise<Start> {
  const printer = new VirtualEvolisPrinter({ takeAfterMs: null, feederCards: 0 });
  const pty = await PtyDevice.start(printer);
  const configFile = join(dataDir, "bench-config.json");
  writeFileSync(
    configFile,
    JSON.stringify({
      station: { id: STATION },
      d1: { url, token, allowInsecure: true },
      dataDir,
      printer: { path: pty.path },
      production: { holdWhileStoppedSec: 3600 },
      log: { level: "info" },
    }),
  );
  const env = { ...process.env };
  delete env["KIOSK_AGENT_FROM_SOURCE"];
  if (form === "from-source") env["KIOSK_AGENT_FROM_SOURCE"] = "1";
  const t0 = nowMs();
  const agent = spawn(process.execPath, [...shippedNodeFlags(), CLI, "run", "--config", configFile], {
    cwd: REPO,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let rssMb: number | undefined;
  let linkUp: number | undefined;
  let printerReady: number | undefined;
  let sigtermExited = false;
  let stderr = "";
  agent.stderr.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-2000);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const seen: string[] = [];
      const timer = setTimeout(
        () =>
          reject(new Error(`CLI agent not ready in ${limitMs} ms: ${stderr}\n${seen.slice(-8).join("\n")}`)),
        limitMs,
      );
      let buffered = "";
      agent.stdout.on("data", (chunk: Buffer) => {
        buffered += chunk.toString();
        let nl = buffered.indexOf("\n");
        while (nl >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          nl = buffered.indexOf("\n");
          seen.push(line.slice(0, 300));
          let entry: { msg?: string; time?: number; state?: string };
          try {
            entry = JSON.parse(line);
          } catch {
            continue;
          }
          if (entry.msg === "D1 link up") linkUp ??= entry.time;
          if (entry.msg === "printer state" && (entry.state === "idle" || entry.state === "stopped"))
            printerReady ??= entry.time;
          if (linkUp !== undefined && printerReady !== undefined) {
            rssMb = agent.pid === undefined ? undefined : procMemory(agent.pid)?.rssMb;
            clearTimeout(timer);
            resolve();
          }
        }
      });
      agent.once("exit", (code) => reject(new Error(`CLI agent exited (${code}) before ready: ${stderr}`)));
    });
  } finally {
    // Only readiness is measured. SIGTERM first; if the agent has not exited after 3 s it is killed
    // (the store is not touched by a kill here: every queued job is READY, nothing is in production).
    agent.kill("SIGTERM");
    sigtermExited = await new Promise<boolean>((resolve) => {
      if (agent.exitCode !== null) return resolve(true);
      const timer = setTimeout(() => {
        agent.kill("SIGKILL");
        resolve(false);
      }, 3000);
      agent.once("exit", () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (agent.exitCode === null && agent.signalCode === null) {
      await new Promise((resolve) => agent.once("exit", resolve));
    }
    await pty.close();
  }
  void d1;
  // bin says on stderr when it falls back to the sources (nothing when asked to by the variable).
  const entry = form === "shipped" && !stderr.includes("npm run build") ? "dist" : "tsx";
  // Log times are whole milliseconds on the same clock as nowMs().
  return {
    ms: Math.max(linkUp!, printerReady!) - t0,
    sigtermExited,
    entry,
    ...(rssMb === undefined ? {} : { rssMb }),
  };
}
