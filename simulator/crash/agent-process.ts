import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { closeSync, constants, openSync, rmSync, writeSync } from "node:fs";
import { fileURLToPath } from "node:url";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const ENTRY = fileURLToPath(new URL("../../bin/kiosk-agent.mjs", import.meta.url));

/**
 * The real agent as a child process: `node bin/kiosk-agent.mjs run --config FILE`, with the OS
 * serialport binding. Its stdout/stderr are appended to `stdioFile` (its JSON log goes where the
 * config says).
 *
 * FILE is a named pipe. Loading the agent (tsx, zod, pino, ws, SQLite, resvg…) takes most of a
 * second; the agent reads its config only after that, and a read from an empty pipe waits. So the
 * harness starts the next agent while the current one is still running, and `release()` hands it
 * the config the moment the current one is killed: the agent's own start-up is unchanged, only the
 * module loading is moved out of the kill/restart cycle.
 */
export class AgentProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** When the config was handed over: the agent's start, as far as the harness is concerned. */
  startedAt = 0;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(
    private readonly configPipe: string,
    stdioFile: string,
  ) {
    rmSync(configPipe, { force: true });
    const made = spawnSync("mkfifo", ["-m", "600", configPipe]);
    if (made.status !== 0) throw new Error(`mkfifo ${configPipe} failed: ${made.stderr?.toString().trim()}`);
    const fd = openSync(stdioFile, "a");
    try {
      this.child = spawn(process.execPath, [ENTRY, "run", "--config", configPipe], {
        cwd: REPO,
        stdio: ["ignore", fd, fd],
      });
    } finally {
      // The child has its own copy of the descriptor.
      closeSync(fd);
    }
    this.exited = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /**
   * Hands the agent its config as soon as it waits in its config read; false if it died first
   * (e.g. the tree does not load).
   */
  async release(config: string): Promise<boolean> {
    // Never a blocking open: a thread stuck in open() on a pipe nobody will read keeps the
    // whole process from exiting. Non-blocking, the open fails with ENXIO until the agent reads.
    for (;;) {
      if (!this.running) {
        rmSync(this.configPipe, { force: true });
        return false;
      }
      let fd: number;
      try {
        fd = openSync(this.configPipe, constants.O_WRONLY | constants.O_NONBLOCK);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENXIO") throw err;
        await new Promise((resolve) => setTimeout(resolve, 10));
        continue;
      }
      try {
        // A few hundred bytes: far below the pipe's capacity, so the write never waits.
        writeSync(fd, config);
      } finally {
        closeSync(fd);
      }
      rmSync(this.configPipe, { force: true });
      this.startedAt = Date.now();
      return true;
    }
  }

  /**
   * SIGKILL: no handler runs, nothing is flushed; resolves once the process is gone, with false if
   * it had already exited by itself.
   */
  async kill(): Promise<boolean> {
    const wasRunning = this.running;
    if (wasRunning) this.child.kill("SIGKILL");
    await this.exited;
    rmSync(this.configPipe, { force: true });
    return wasRunning;
  }

  /** SIGTERM (the agent stops cleanly), SIGKILL after `graceMs`. True if it stopped by itself. */
  async stop(graceMs = 10_000): Promise<boolean> {
    if (!this.running) return true;
    this.child.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const clean = await Promise.race([
      this.exited.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), graceMs);
      }),
    ]);
    clearTimeout(timer);
    if (!clean) await this.kill();
    return clean;
  }
}
