import { readFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";

/**
 * Absolute wall time in milliseconds with sub-millisecond resolution. Comparable across processes on
 * one machine (both sides derive it from the system clock at their start), which is what the
 * cross-process figures need.
 */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Nearest-rank percentile of an unsorted sample (p in 0..100). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

export function round(value: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export interface Figure {
  name: string;
  value: number;
  unit: string;
  /** The goal as text, e.g. "<= 2". */
  goal: string;
  ok?: boolean;
  /** Anything that explains the figure: sample sizes, parts, conditions. */
  [extra: string]: unknown;
}

/** Goal checkers: `atMost(2)` → { goal: "<= 2", ok: value <= 2 }. */
export function atMost(limit: number): (value: number) => { goal: string; ok: boolean } {
  return (value) => ({ goal: `<= ${limit}`, ok: value <= limit });
}

export function atLeast(limit: number): (value: number) => { goal: string; ok: boolean } {
  return (value) => ({ goal: `>= ${limit}`, ok: value >= limit });
}

export function info(): (value: number) => { goal: string } {
  return () => ({ goal: "info" });
}

export function figure(
  name: string,
  value: number,
  unit: string,
  check: (value: number) => { goal: string; ok?: boolean },
  extra: Record<string, unknown> = {},
): Figure {
  return { name, value: round(value, 3), unit, ...check(value), ...extra };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Progress goes to stderr so stdout stays one JSON object per line. */
export function progress(text: string): void {
  process.stderr.write(`[bench] ${text}\n`);
}

export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  node: string;
  loadavg: [number, number, number];
  memTotalMb: number;
}

export function machineInfo(): MachineInfo {
  let cpuModel = cpus()[0]?.model ?? "unknown";
  try {
    const line = readFileSync("/proc/cpuinfo", "utf8")
      .split("\n")
      .find((l) => l.startsWith("model name"));
    if (line) cpuModel = line.split(":")[1]!.trim();
  } catch {
    // Not Linux: os.cpus() is good enough.
  }
  let memTotalMb = 0;
  try {
    const m = /MemTotal:\s+(\d+) kB/.exec(readFileSync("/proc/meminfo", "utf8"));
    if (m) memTotalMb = Math.round(Number(m[1]) / 1024);
  } catch {
    // ignore
  }
  const [l1, l5, l15] = loadavg();
  return {
    nproc: cpus().length,
    cpuModel,
    node: process.version,
    loadavg: [round(l1!, 2), round(l5!, 2), round(l15!, 2)],
    memTotalMb,
  };
}

/** VmRSS / VmHWM of a process, MB, from /proc (Linux). */
export function procMemory(pid: number): { rssMb: number; hwmMb: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? Number.NaN);
    return { rssMb: kb("VmRSS") / 1024, hwmMb: kb("VmHWM") / 1024 };
  } catch {
    return undefined;
  }
}
