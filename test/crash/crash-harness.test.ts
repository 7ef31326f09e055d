import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";

/**
 * `npm run crash` in short: the real agent as a child process, SIGKILLed at planned moments and
 * restarted, then drained and checked from D1's and the printer's records. A fixed seed fixes the
 * plan; the outcome (nothing lost, nothing twice, statuses in order) holds for any timing.
 */

const ITERATIONS = 5;
const SEED = 20_251_123;

let harness: ChildProcess | undefined;
let dir: string | undefined;

afterAll(() => {
  // The harness runs in its own process group with its agents and pty bridge: never leave them.
  if (harness?.pid !== undefined && harness.exitCode === null && harness.signalCode === null) {
    try {
      process.kill(-harness.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  // Kept by the harness when an extra check found something; the assertions have spoken by now.
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Live processes whose command line mentions `text` (Linux /proc). */
function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(text)) pids.push(Number(entry));
    } catch {
      // Exited meanwhile.
    }
  }
  return pids;
}

describe("crash harness", () => {
  it("kills the agent at each iteration and finds nothing lost, nothing twice, no status out of order", async () => {
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "simulator/crash/harness.ts",
        "--iterations",
        String(ITERATIONS),
        "--seed",
        String(SEED),
      ],
      { cwd: process.cwd(), stdio: ["ignore", "pipe", "pipe"], detached: true },
    );
    harness = child;
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
    const lines = stdout.trim().split("\n");
    const last = JSON.parse(lines[lines.length - 1] ?? "{}") as Record<string, unknown>;
    if (code !== 0) console.log(stderr);

    expect(Object.keys(last).slice(0, 7)).toEqual([
      "iterations",
      "kills",
      "jobs",
      "lost",
      "duplicateCards",
      "orderViolations",
      "seed",
    ]);
    expect(last).toMatchObject({
      iterations: ITERATIONS,
      lost: 0,
      duplicateCards: 0,
      orderViolations: 0,
      seed: SEED,
    });
    expect(last["kills"]).toBeGreaterThanOrEqual(ITERATIONS);
    expect(last["jobs"]).toBeGreaterThan(0);
    expect(last["outboxLeft"]).toBe(0);
    expect(code).toBe(0);

    dir = /dir (\S+kiosk-crash-\S+)/.exec(stderr)?.[1];
    expect(dir).toBeDefined();
    expect(processesMentioning(dir!)).toEqual([]);
  }, 60_000);
});
