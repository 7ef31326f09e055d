import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * `DATA_DIR/agent.pid`: the running agent's process id, written at start and removed at stop. A
 * technician's standalone `kiosk-agent printer …` (agent/cli/printer.ts) reads it so it never opens
 * the printer under a running agent. A file left by an agent that was killed names a dead process:
 * stale, and ignored.
 */
export const PID_FILE = "agent.pid";

export function pidFilePath(dataDir: string): string {
  return join(dataDir, PID_FILE);
}

/** Writes this process's id. Never throws: a failure goes to `onError` and the agent runs on. */
export function writePidFile(dataDir: string, onError?: (err: unknown) => void): void {
  try {
    writeFileSync(pidFilePath(dataDir), `${process.pid}\n`, { mode: 0o644 });
  } catch (err) {
    onError?.(err);
  }
}

/** Removes the file if it still names this process (another agent may have started since). */
export function removePidFile(dataDir: string): void {
  try {
    if (readPidFile(dataDir) === process.pid) rmSync(pidFilePath(dataDir), { force: true });
  } catch {
    // nothing to remove
  }
}

/** The pid in the file, or undefined when there is none (or it holds no number). */
export function readPidFile(dataDir: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(pidFilePath(dataDir), "utf8").trim();
  } catch {
    return undefined;
  }
  return /^\d{1,10}$/.test(text) && Number(text) > 0 ? Number(text) : undefined;
}

/** Whether a process with this id exists (`kill(pid, 0)`: EPERM means it exists, as another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * What the pid file in `dataDir` says: no agent (no file), a live agent, or a stale file left by an
 * agent that is gone.
 */
export function agentPidState(
  dataDir: string,
): { state: "none" } | { state: "alive"; pid: number } | { state: "stale"; pid: number } {
  const pid = readPidFile(dataDir);
  if (pid === undefined) return { state: "none" };
  return processAlive(pid) ? { state: "alive", pid } : { state: "stale", pid };
}
