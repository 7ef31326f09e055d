import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { Socket } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CodedError } from "../../agent/util/errors.js";

/**
 * LazyFS (third_party/lazyfs, built by scripts/powerloss/build-lazyfs.sh): a FUSE file system with
 * its own page cache that writes a file's data to the backing directory only when the file is
 * fsynced. `clearCache()` drops whatever was not fsynced, which is what a power cut does to the page
 * cache (a SIGKILL does not: the kernel still writes the dead process's data). Names (create,
 * rename, link, unlink, mkdir) go to the backing directory at once, so a missing directory fsync is
 * not modelled: only file data is lost.
 */

export type LazyFsErrorCode =
  | "LAZYFS_NOT_BUILT"
  | "LAZYFS_NO_FUSE"
  | "LAZYFS_MOUNT_FAILED"
  | "LAZYFS_COMMAND_FAILED"
  | "LAZYFS_COMMAND_TIMEOUT"
  | "LAZYFS_EXITED";

export class LazyFsError extends CodedError<LazyFsErrorCode> {}

const REPO = fileURLToPath(new URL("../../", import.meta.url));
/** Where scripts/powerloss/build-lazyfs.sh puts the binary. */
export const LAZYFS_BINARY = join(REPO, ".cache/lazyfs/lazyfs");

/**
 * The binary to use (`KIOSK_LAZYFS_BIN` overrides the built one) and whether this machine can mount
 * it; a reason instead when it cannot, so a caller can skip with a clear line.
 */
export function lazyFsAvailability(): { binary: string } | { unavailable: string; code: LazyFsErrorCode } {
  const binary = process.env["KIOSK_LAZYFS_BIN"] || LAZYFS_BINARY;
  try {
    accessSync(binary, constants.X_OK);
  } catch {
    return {
      code: "LAZYFS_NOT_BUILT",
      unavailable: `LazyFS is not built (${binary}): run scripts/powerloss/build-lazyfs.sh (npm run crash:powerloss does)`,
    };
  }
  try {
    accessSync("/dev/fuse", constants.R_OK | constants.W_OK);
  } catch {
    return {
      code: "LAZYFS_NO_FUSE",
      unavailable: "/dev/fuse is missing or not usable: FUSE cannot mount here",
    };
  }
  if (spawnSync("fusermount3", ["-V"]).status !== 0) {
    return { code: "LAZYFS_NO_FUSE", unavailable: "fusermount3 is missing (Debian package fuse3)" };
  }
  return { binary };
}

export interface LazyFsOptions {
  /** Holds everything of this mount: backing dir, mount point, FIFOs, config, LazyFS's log. */
  workDir: string;
  /** LazyFS's cache, preallocated (its own figure format: "64mb"). Must hold all un-synced data. */
  cacheSize?: string;
  /** How long a command (report, clear) may take before it is given up. */
  commandTimeoutMs?: number;
}

export class LazyFs {
  /** What the applications use: every file here goes through LazyFS's cache. */
  readonly mountPoint: string;
  /** Where the synced data lands (what survives a cut). */
  readonly backingDir: string;
  private readonly faultsFifo: string;
  private readonly completedFifo: string;
  private readonly logFile: string;
  private readonly timeoutMs: number;
  private completions: Socket | undefined;
  private completedLines: string[] = [];
  private readonly lineWaiters = new Set<() => void>();
  private pending = "";
  /** Commands are one per FIFO read on LazyFS's side: never two in flight. */
  private queue: Promise<unknown> = Promise.resolve();
  private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exited: Promise<void>;

  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    options: LazyFsOptions,
  ) {
    this.mountPoint = join(dir, "mnt");
    this.backingDir = join(dir, "root");
    this.faultsFifo = join(dir, "faults.fifo");
    this.completedFifo = join(dir, "completed.fifo");
    this.logFile = join(dir, "lazyfs.log");
    this.timeoutMs = options.commandTimeoutMs ?? 10_000;
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.exit = { code, signal };
        for (const w of this.lineWaiters) w();
        resolve();
      });
    });
  }

  /** Mounts a new, empty LazyFS under `workDir`; rejects with a LazyFsError if it cannot. */
  static async mount(options: LazyFsOptions): Promise<LazyFs> {
    const available = lazyFsAvailability();
    if ("unavailable" in available) throw new LazyFsError(available.code, available.unavailable);
    const dir = join(options.workDir, "lazyfs");
    for (const d of [dir, join(dir, "root"), join(dir, "mnt")])
      mkdirSync(d, { recursive: true, mode: 0o700 });
    const faults = join(dir, "faults.fifo");
    const completed = join(dir, "completed.fifo");
    for (const fifo of [faults, completed]) {
      const made = spawnSync("mkfifo", ["-m", "600", fifo]);
      if (made.status !== 0) {
        throw new LazyFsError("LAZYFS_MOUNT_FAILED", `mkfifo ${fifo}: ${made.stderr?.toString().trim()}`);
      }
    }
    // The report and the acknowledgements go to the log file; the clear's completion to its FIFO.
    writeFileSync(
      join(dir, "config.toml"),
      [
        "[faults]",
        `fifo_path="${faults}"`,
        `fifo_path_completed="${completed}"`,
        "[cache]",
        // No eviction: nothing un-synced may reach the backing dir before a sync (a real page cache
        // may write back early; the harsher model loses more).
        "apply_eviction=false",
        "[cache.simple]",
        `custom_size="${options.cacheSize ?? "128mb"}"`,
        "blocks_per_page=1",
        "[filesystem]",
        "log_all_operations=false",
        `logfile="${join(dir, "lazyfs.log")}"`,
        "",
      ].join("\n"),
    );
    const out = openSync(join(dir, "stdout.log"), "a");
    let child: ChildProcess;
    try {
      // In the foreground (-f): the process is the mount; `modules=subdir` maps the mount's paths
      // onto the backing dir (LazyFS's own operations take them as absolute paths).
      child = spawn(
        available.binary,
        [
          join(dir, "mnt"),
          "--config-path",
          join(dir, "config.toml"),
          "-o",
          "modules=subdir",
          "-o",
          `subdir=${join(dir, "root")}`,
          "-f",
        ],
        { stdio: ["ignore", out, out] },
      );
    } finally {
      closeSync(out);
    }
    const fs = new LazyFs(child, dir, options);
    try {
      await fs.waitForMount();
    } catch (err) {
      await fs.unmount().catch(() => undefined);
      throw err;
    }
    return fs;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  /**
   * The bytes LazyFS holds un-synced (its `unsynced-data-report`: the dirty extent of each cached
   * block, so a partly rewritten 4 KiB block counts from its first to its last written byte).
   */
  unsyncedBytes(): Promise<number> {
    return this.serial(async () => {
      const from = existsSync(this.logFile) ? statSync(this.logFile).size : 0;
      this.send("lazyfs::unsynced-data-report");
      const deadline = Date.now() + this.timeoutMs;
      for (;;) {
        const text = readFrom(this.logFile, from);
        const total = /report: total number of bytes un-fsynced: (\d+) bytes/.exec(text);
        if (total) return Number(total[1]);
        if (text.includes("report: all data blocks are synced!")) return 0;
        this.assertRunning("unsynced-data-report");
        if (Date.now() > deadline) {
          throw new LazyFsError(
            "LAZYFS_COMMAND_TIMEOUT",
            `LazyFS did not report within ${this.timeoutMs} ms`,
          );
        }
        await sleep(5);
      }
    });
  }

  /** Drops every un-synced write (the power cut), resolving once LazyFS says it is done. */
  clearCache(): Promise<void> {
    return this.serial(async () => {
      const before = this.completedLines.length;
      this.send("lazyfs::clear-cache");
      await this.waitForLine(before, "finished::clear-cache");
    });
  }

  /** Unmounts (fusermount3 -u) and waits for the process; a lazy unmount and a kill if it hangs. */
  async unmount(): Promise<void> {
    this.completions?.destroy();
    if (this.isMounted()) spawnSync("fusermount3", ["-u", this.mountPoint]);
    if (this.running && !(await this.waitExit(5_000))) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
    // A LazyFS killed while mounted leaves the mount point dead ("transport endpoint is not
    // connected") until it is detached.
    if (this.isMounted()) spawnSync("fusermount3", ["-u", "-z", this.mountPoint]);
  }

  // ---- internals ------------------------------------------------------------------------------

  private async waitForMount(): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!this.isMounted()) {
      if (!this.running) {
        throw new LazyFsError(
          "LAZYFS_MOUNT_FAILED",
          `LazyFS exited (${this.exit?.signal ?? this.exit?.code}) before mounting: ${this.tail()}`,
        );
      }
      if (Date.now() > deadline)
        throw new LazyFsError("LAZYFS_MOUNT_FAILED", `LazyFS did not mount: ${this.tail()}`);
      await sleep(10);
    }
    // LazyFS's fault worker opens the completion FIFO for writing and waits for a reader there;
    // read/write here so the FIFO never reads as closed, and the open never waits.
    const fd = openSync(this.completedFifo, constants.O_RDWR | constants.O_NONBLOCK);
    this.completions = new Socket({ fd, readable: true, writable: false });
    this.completions.on("data", (chunk: Buffer) => {
      this.pending += chunk.toString("utf8");
      const lines = this.pending.split("\n");
      this.pending = lines.pop() ?? "";
      this.completedLines.push(...lines.filter((l) => l.trim() !== ""));
      for (const w of this.lineWaiters) w();
    });
    this.completions.on("error", () => undefined);
    // The fault FIFO has a reader once the worker runs; until then a non-blocking open fails ENXIO.
    while (!this.canSend()) {
      this.assertRunning("start");
      if (Date.now() > deadline) {
        throw new LazyFsError("LAZYFS_MOUNT_FAILED", "LazyFS mounted but its fault FIFO has no reader");
      }
      await sleep(10);
    }
  }

  private isMounted(): boolean {
    try {
      return readFileSync("/proc/self/mountinfo", "utf8")
        .split("\n")
        .some((line) => line.split(" ")[4] === this.mountPoint && line.includes(" - fuse"));
    } catch {
      return false;
    }
  }

  private canSend(): boolean {
    try {
      closeSync(openSync(this.faultsFifo, constants.O_WRONLY | constants.O_NONBLOCK));
      return true;
    } catch {
      return false;
    }
  }

  private send(command: string): void {
    this.assertRunning(command);
    let fd: number;
    try {
      fd = openSync(this.faultsFifo, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch (cause) {
      throw new LazyFsError("LAZYFS_COMMAND_FAILED", `cannot open LazyFS's fault FIFO for ${command}`, {
        cause,
      });
    }
    try {
      // One line, far below PIPE_BUF: one atomic write, read by LazyFS as one command.
      writeSync(fd, `${command}\n`);
    } finally {
      closeSync(fd);
    }
  }

  private async waitForLine(after: number, line: string): Promise<void> {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      if (this.completedLines.slice(after).includes(line)) return;
      this.assertRunning(line);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new LazyFsError(
          "LAZYFS_COMMAND_TIMEOUT",
          `LazyFS did not answer ${line} within ${this.timeoutMs} ms`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.lineWaiters.add(done);
      }).finally(() => this.lineWaiters.clear());
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private assertRunning(what: string): void {
    if (!this.running) {
      throw new LazyFsError(
        "LAZYFS_EXITED",
        `LazyFS exited (${this.exit?.signal ?? this.exit?.code}) during ${what}: ${this.tail()}`,
      );
    }
  }

  private async waitExit(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([
      this.exited.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
      }),
    ]);
    clearTimeout(timer);
    return ok;
  }

  private tail(): string {
    const text = readFrom(join(this.dir, "stdout.log"), 0).trim().split("\n").slice(-3).join(" | ");
    return text || "(no output)";
  }
}

/** The text of `file` from byte `from` on ("" if it is not there). */
function readFrom(file: string, from: number): string {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch {
    return "";
  }
  try {
    const size = statSync(file).size;
    if (size <= from) return "";
    const buf = Buffer.alloc(size - from);
    const n = readSync(fd, buf, 0, buf.length, from);
    return buf.subarray(0, n).toString("utf8");
  } finally {
    closeSync(fd);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
