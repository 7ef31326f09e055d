import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_PCSCD_SOCKET, PcscApduTransport, probePcscd } from "../../drivers/chip/pcsc-transport.js";
import { VPCD_DEFAULT_PORT } from "./vpcd-protocol.js";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const INSTALL_SCRIPT = join(REPO, "scripts/pcsc/install.sh");
const VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
const VPCD_CONF = "/etc/reader.conf.d/vpcd";
/** vpcd names its readers "<FRIENDLYNAME> <index> <slot>"; the first one listens on port 35963. */
export const VPCD_READER_PREFIX = "Virtual PCD";

/** The PC/SC stack cannot run here (not installed and no root to install, pcscd will not start). */
export class PcscUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PcscUnavailableError";
  }
}

export interface PcscStackOptions {
  /** pcscd's log (`pcscd.log`, debug level, never `--apdu`) goes here when this starts pcscd. */
  logDir: string;
  /** Install pcscd + vsmartcard-vpcd with apt when missing (root only). Default true. */
  install?: boolean;
  /** Reader name or prefix to look for. Default "Virtual PCD" (resolves to "Virtual PCD 00 00"). */
  readerPrefix?: string;
  /** How long to wait for pcscd's socket and for the reader. Default 10000. */
  startTimeoutMs?: number;
  /**
   * How long to wait for another run (a demo, a test) on this machine to release the stack: one
   * vpcd reader holds one card, so runs take turns. Default 60000.
   */
  lockTimeoutMs?: number;
  /** Progress lines (installing, started, reusing). */
  onProgress?: (line: string) => void;
}

export interface PcscStack {
  /** The full PC/SC name of the vpcd reader, for `PcscApduTransport({ reader })`. */
  readerName: string;
  /** vpcd's TCP port for that reader, for `VpcdCard({ port })`. */
  vpcdPort: number;
  socketPath: string;
  /** False when a pcscd was already running: stop() then leaves it alone. */
  startedPcscd: boolean;
  /** pcscd's log file when this started it. */
  pcscdLog: string | undefined;
  /** Stops the pcscd this started (SIGTERM, then SIGKILL after 5 s); nothing else. */
  stop(): Promise<void>;
}

/** True when pcscd and the vpcd driver are installed. */
export function pcscInstalled(): boolean {
  const pcscd = existsSync("/usr/sbin/pcscd") || spawnSync("sh", ["-c", "command -v pcscd"]).status === 0;
  return pcscd && existsSync(VPCD_DRIVER) && existsSync(VPCD_CONF);
}

/**
 * Brings up the real PC/SC stack for the demo and the end-to-end test: installs pcscd and vpcd if
 * missing, starts pcscd in the foreground with its own log (or reuses one that already runs), waits
 * for its socket, and finds the vpcd reader. Throws PcscUnavailableError when that cannot be done.
 */
export async function startPcscStack(options: PcscStackOptions): Promise<PcscStack> {
  const progress = options.onProgress ?? (() => undefined);
  const timeoutMs = options.startTimeoutMs ?? 10_000;
  const socketPath = DEFAULT_PCSCD_SOCKET;
  const release = await acquireStackLock(options.lockTimeoutMs ?? 60_000, progress);
  try {
    return await bringUp(options, progress, timeoutMs, socketPath, release);
  } catch (err) {
    release();
    throw err;
  }
}

async function bringUp(
  options: PcscStackOptions,
  progress: (line: string) => void,
  timeoutMs: number,
  socketPath: string,
  release: () => void,
): Promise<PcscStack> {
  if (!pcscInstalled()) {
    if (options.install === false)
      throw new PcscUnavailableError("pcscd / vsmartcard-vpcd are not installed");
    progress("pcsc: installing pcscd and vsmartcard-vpcd (apt)");
    const r = spawnSync("bash", [INSTALL_SCRIPT], { encoding: "utf8", timeout: 300_000 });
    if (r.status !== 0 || !pcscInstalled()) {
      const why = (r.stderr || r.stdout || r.error?.message || "").trim().split("\n").slice(-3).join(" / ");
      throw new PcscUnavailableError(
        `could not install pcscd / vsmartcard-vpcd: ${why || `exit ${r.status}`}`,
      );
    }
  }

  let child: ChildProcess | undefined;
  let pcscdLog: string | undefined;
  if (await answers(socketPath)) {
    progress(`pcsc: using the pcscd already running on ${socketPath}`);
  } else {
    if (typeof process.getuid === "function" && process.getuid() !== 0) {
      throw new PcscUnavailableError("pcscd is not running and starting it needs root");
    }
    mkdirSync(options.logDir, { recursive: true });
    pcscdLog = join(options.logDir, "pcscd.log");
    child = startPcscd(pcscdLog);
    let exitedWith: string | undefined;
    child.once("exit", (code, signal) => {
      exitedWith = `pcscd exited (${signal ?? code})`;
    });
    const ready = await waitForSocket(socketPath, timeoutMs, () => exitedWith);
    if (ready !== true) {
      await stopChild(child);
      throw new PcscUnavailableError(`${ready}; see ${pcscdLog}: ${tail(pcscdLog)}`);
    }
    progress(`pcsc: pcscd started (pid ${child.pid}), log ${pcscdLog}`);
  }

  const stop = async (): Promise<void> => {
    if (child) await stopChild(child);
    child = undefined;
    release();
  };
  try {
    const prefix = options.readerPrefix ?? VPCD_READER_PREFIX;
    let readerName = await findReader(prefix, timeoutMs).catch(() => undefined);
    if (!readerName && !child) {
      // A pcscd started before vpcd was installed has not read /etc/reader.conf.d/vpcd: ask it to.
      spawnSync("pcscd", ["--hotplug"]);
      readerName = await findReader(prefix, timeoutMs).catch(() => undefined);
    }
    if (!readerName)
      throw new PcscUnavailableError(`pcscd lists no "${prefix}" reader (is vpcd configured?)`);
    const index = Number.parseInt(readerName.split(" ").at(-2) ?? "0", 16);
    return {
      readerName,
      vpcdPort: VPCD_DEFAULT_PORT + (Number.isNaN(index) ? 0 : index),
      socketPath,
      startedPcscd: child !== undefined,
      pcscdLog,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

const LOCK_FILE = join(tmpdir(), "kiosk-agent-pcsc-stack.lock");

/**
 * A machine-wide turn for the PC/SC stack (pcscd, and vpcd's single virtual card port): an exclusive
 * lock file holding the owner's pid; a lock whose owner died is taken over. Returns the release.
 */
async function acquireStackLock(timeoutMs: number, progress: (line: string) => void): Promise<() => void> {
  // Deadlines here and below on performance.now(): monotonic, a clock step moves none of them.
  const deadline = performance.now() + timeoutMs;
  let told = false;
  for (;;) {
    try {
      const fd = openSync(LOCK_FILE, "wx");
      writeSync(fd, String(process.pid));
      closeSync(fd);
      let held = true;
      const release = (): void => {
        if (!held) return;
        held = false;
        process.off("exit", release);
        try {
          unlinkSync(LOCK_FILE);
        } catch {
          // already gone
        }
      };
      process.on("exit", release);
      return release;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = Number.parseInt(readFileSafe(LOCK_FILE), 10);
    if (!Number.isInteger(owner) || owner <= 0 || !alive(owner)) {
      try {
        unlinkSync(LOCK_FILE);
      } catch {
        // someone else took it over first
      }
      continue;
    }
    if (performance.now() > deadline) {
      throw new Error(
        `the PC/SC stack is in use by process ${owner} (lock ${LOCK_FILE}) for over ${timeoutMs} ms`,
      );
    }
    if (!told) progress(`pcsc: waiting for process ${owner} to finish with the PC/SC stack`);
    told = true;
    await new Promise((r) => setTimeout(r, 100));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readFileSafe(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

function startPcscd(logFile: string): ChildProcess {
  const fd = openSync(logFile, "a");
  try {
    // --debug shows every SCardConnect/TRANSMIT/disconnect and the ATR; never --apdu (command bytes).
    return spawn("pcscd", ["--foreground", "--debug"], { stdio: ["ignore", fd, fd] });
  } finally {
    closeSync(fd);
  }
}

async function answers(socketPath: string): Promise<boolean> {
  try {
    await probePcscd(socketPath, 500);
    return true;
  } catch {
    return false;
  }
}

async function waitForSocket(
  socketPath: string,
  timeoutMs: number,
  died: () => string | undefined,
): Promise<true | string> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const death = died();
    if (death) return death;
    if (await answers(socketPath)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return `pcscd did not open ${socketPath} within ${timeoutMs} ms`;
}

async function findReader(prefix: string, timeoutMs: number): Promise<string> {
  const transport = new PcscApduTransport({ reader: prefix, matchPrefix: true, readerTimeoutMs: timeoutMs });
  try {
    return await transport.resolveReader();
  } finally {
    await transport.close();
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

function tail(file: string): string {
  try {
    return readFileSync(file, "utf8").trim().split("\n").slice(-3).join(" / ");
  } catch {
    return "(no log)";
  }
}
