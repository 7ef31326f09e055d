import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import { STATION, sampleJob } from "../ops/rig.js";
import { parseExposition } from "../ops/scrape.js";
import { tempDir } from "../ops/support.js";
import { fill, freeBytes, jsonLines, mountTmpfs, unmount, until } from "./support.js";

/**
 * Issue 16, case 4: `kiosk-agent run` (the real bin, a real process) with log.file on a small tmpfs
 * that is filled until the kernel answers ENOSPC. Before, SonicBoom's unhandled `error` killed the
 * process. Now it stays up and answers D1, its lines go to stderr (one warning first), /metrics
 * counts them, and once space is freed the file takes lines again by itself.
 */
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The file's lines, parsed; a line that is not JSON (a write cut short by the full disk) is kept as text. */
function fileLines(file: string): Array<Record<string, unknown> | string> {
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return l;
      }
    });
}

const isLine = (l: Record<string, unknown> | string): l is Record<string, unknown> => typeof l !== "string";

/** `fullBeforeStart`: the log's tmpfs is filled before the agent starts (a restart on a full disk). */
async function startAgent(options: { fullBeforeStart?: boolean } = {}) {
  const { dir, remove } = tempDir("kiosk-log-full-");
  cleanups.push(remove);
  const logDir = join(dir, "logs");
  mkdirSync(logDir);
  // 256 KiB: filled in a few milliseconds; the store (dataDir) stays on the normal disk.
  mountTmpfs(logDir, { sizeKb: 256 });
  cleanups.push(() => unmount(logDir));
  const logFile = join(logDir, "agent.log");
  const filled = options.fullBeforeStart ? fill(join(logDir, "filler")) : undefined;
  if (filled) cleanups.push(() => filled.free());

  const token = randomBytes(12).toString("hex");
  const emulator = new D1Emulator({ token });
  const { url } = await emulator.start();
  cleanups.push(() => emulator.stop());

  const configFile = join(dir, "config.json");
  writeFileSync(
    configFile,
    JSON.stringify({
      station: { id: STATION },
      d1: { url, token, allowInsecure: true },
      dataDir: join(dir, "data"),
      // No printer: accepted jobs wait READY; every push still writes its "job accepted" line.
      printer: { path: join(dir, "no-printer") },
      health: { enabled: true, port: 0 },
      log: { level: "info", file: logFile },
    }),
  );
  const child: ChildProcess = spawn(
    process.execPath,
    ["bin/kiosk-agent.mjs", "run", "--config", configFile],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let stderr = "";
  let stdout = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString("utf8");
  });
  child.stdout?.on("data", (chunk: Buffer) => {
    stdout += chunk.toString("utf8");
  });
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  // Killed and gone before the tmpfs is unmounted (it holds the log file open).
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  });
  /** Fails at once, with what the agent said, if the process has died: the bug this test is about. */
  const alive = <T>(check: () => T): (() => T) => {
    return () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(
          `the agent exited (code ${child.exitCode}, signal ${child.signalCode}); stderr:\n${stderr.slice(-3000)}`,
        );
      }
      return check();
    };
  };
  // Loading the sources through tsx takes a second or two on a busy machine.
  await until(
    alive(() => emulator.station(STATION) !== undefined),
    "the agent's hello to D1",
  );
  // Whole lines only: a pipe read may end inside a line still being written.
  const stderrLines = () => jsonLines(stderr.slice(0, stderr.lastIndexOf("\n") + 1));
  const allLines = () => [...fileLines(logFile), ...stderrLines()];
  await until(
    alive(() => allLines().some((l) => isLine(l) && l.msg === "health endpoint listening")),
    "the health endpoint's line in the log file or on stderr",
  );
  const healthLine = allLines().find((l) => isLine(l) && l.msg === "health endpoint listening");
  const port = (healthLine as { port: number }).port;
  const get = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, text: await res.text() };
  };
  const metric = async (name: string) =>
    parseExposition((await get("/metrics")).text).find((s) => s.name === name)?.value;

  return {
    logDir,
    logFile,
    filled,
    alive,
    emulator,
    child,
    exited,
    get,
    metric,
    stderrLines,
    stdout: () => stdout,
    /** Pushes a job; resolves with how long D1 waited for the answer. */
    async push(): Promise<{ operationId: string; ms: number }> {
      const job = sampleJob();
      const started = performance.now();
      expect(await emulator.push(job, { timeoutMs: 5_000 })).toMatchObject({ result: "accepted" });
      return { operationId: job.operationId as string, ms: performance.now() - started };
    },
  };
}

describe("log.file on a disk that fills up (real tmpfs, the real agent process)", { timeout: 30_000 }, () => {
  it("stays up and answers D1; lines go to stderr, counted in /metrics; after space is freed the file takes lines again", async () => {
    const a = await startAgent();
    const acceptedLine = (operationId: string) => (l: Record<string, unknown> | string) =>
      isLine(l) && l.msg === "job accepted" && l.operationId === operationId;

    const disk = fill(join(a.logDir, "filler"));
    cleanups.push(() => disk.free());
    expect(freeBytes(a.logDir)).toBe(0);

    // The log file's last page may still take a line or two: push until a line goes to stderr.
    const whileFull: Array<{ operationId: string; ms: number }> = [];
    for (;;) {
      expect(whileFull.length).toBeLessThan(40);
      const pushed = await a.push();
      whileFull.push(pushed);
      await until(
        a.alive(
          () =>
            fileLines(a.logFile).some(acceptedLine(pushed.operationId)) ||
            a.stderrLines().some(acceptedLine(pushed.operationId)),
        ),
        `the line of push ${whileFull.length} in the file or on stderr`,
      );
      if (a.stderrLines().some(acceptedLine(pushed.operationId))) break;
    }
    // A few more while the disk is full: each is answered at once, each line goes to stderr.
    for (let i = 0; i < 5; i++) whileFull.push(await a.push());
    for (const p of whileFull) expect(p.ms).toBeLessThan(2_000);
    const lostOnes = whileFull.filter((p) => !fileLines(a.logFile).some(acceptedLine(p.operationId)));
    await until(
      a.alive(() => lostOnes.every((p) => a.stderrLines().some(acceptedLine(p.operationId)))),
      "every push's line that missed the file on stderr",
    );

    // One warning on stderr, before the lines, naming the file and the kernel's reason.
    const warnings = a.stderrLines().filter((l) => String(l.msg).startsWith("log.file failing"));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ level: 40, file: a.logFile, code: "ENOSPC" });
    expect(a.stderrLines()[0]).toEqual(warnings[0]);

    // Up, answering, and counting.
    expect((await a.get("/healthz")).status).toBe(200);
    expect(await a.metric("kiosk_agent_log_file_failing")).toBe(1);
    const lost = await a.metric("kiosk_agent_log_lines_lost_total");
    expect(lost).toBeGreaterThanOrEqual(lostOnes.length);
    expect(a.child.exitCode).toBeNull();

    // Space again: the next retry (1 s, 2 s, 4 s … after the failure) writes into the file.
    disk.free();
    await until(
      a.alive(() => fileLines(a.logFile).some((l) => isLine(l) && l.msg === "log.file writable again")),
      "the file to take lines again",
      12_000,
    );
    const after = await a.push();
    await until(
      a.alive(() => fileLines(a.logFile).some(acceptedLine(after.operationId))),
      "a new line in the file",
    );
    expect(a.stderrLines().some(acceptedLine(after.operationId))).toBe(false);
    expect(a.stderrLines().at(-1)).toMatchObject({ msg: "log.file writable again", file: a.logFile });
    expect(await a.metric("kiosk_agent_log_file_failing")).toBe(0);

    // The file: JSON lines, except at most the part of one line the full disk cut, alone on its line.
    const lines = fileLines(a.logFile);
    expect(lines.filter((l) => !isLine(l)).length).toBeLessThanOrEqual(1);
    const recovered = lines.find((l) => isLine(l) && l.msg === "log.file writable again");
    expect(recovered).toMatchObject({ code: "ENOSPC", linesLost: expect.any(Number) });
    expect((recovered as { linesLost: number }).linesLost).toBeGreaterThanOrEqual(lostOnes.length);

    // And it still stops as asked.
    a.child.kill("SIGTERM");
    expect(await a.exited).toEqual({ code: 0, signal: null });
    expect(fileLines(a.logFile).at(-1)).toMatchObject({ msg: "kiosk agent stopped" });
    expect(a.stdout()).toBe("");
  });

  it("starts on a disk that is already full (a restart while full): its lines go to stderr until there is room", async () => {
    const a = await startAgent({ fullBeforeStart: true });
    // Up: connected to D1 (waited for above), answering health and pushes.
    expect((await a.get("/healthz")).status).toBe(200);
    const pushed = await a.push();
    expect(pushed.ms).toBeLessThan(2_000);
    await until(
      a.alive(() =>
        a.stderrLines().some((l) => l.msg === "job accepted" && l.operationId === pushed.operationId),
      ),
      "the push's line on stderr",
    );
    expect(a.stderrLines()[0]).toMatchObject({
      msg: expect.stringMatching(/^log\.file failing/),
      code: "ENOSPC",
    });
    expect(a.stderrLines().map((l) => l.msg)).toContain("kiosk agent starting");
    expect(await a.metric("kiosk_agent_log_lines_lost_total")).toBeGreaterThanOrEqual(3);

    a.filled!.free();
    await until(
      a.alive(() => fileLines(a.logFile).some((l) => isLine(l) && l.msg === "log.file writable again")),
      "the file to take lines again",
      12_000,
    );
    a.child.kill("SIGTERM");
    expect(await a.exited).toEqual({ code: 0, signal: null });
    expect(fileLines(a.logFile).filter(isLine).at(-1)).toMatchObject({ msg: "kiosk agent stopped" });
  });
});
