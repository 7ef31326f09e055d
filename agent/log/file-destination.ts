import * as nodeFs from "node:fs";
import { hostname } from "node:os";
import { dirname, join, parse, sep } from "node:path";
import { type Clock, systemClock, type TimerHandle } from "../util/clock.js";
import { CodedError } from "../util/errors.js";

/**
 * `log.file` (docs/operations.md#logs): JSON lines appended to a file, and a file that fails never
 * takes the agent down (issue 16, case 4).
 *
 * Why not pino.destination() (SonicBoom 4) for the file, as before: a write error is emitted as
 * `error`, which pino re-emits with no listener (an open error killed the start with a stack trace);
 * the failed buffer is kept and tried again at every later write; and its flushSync() (pino's exit
 * hook, sync mode) answers any error but EAGAIN by sleeping 100 ms on the main thread and trying the
 * same write again, for ever: on a full disk the old agent hung that way, answering nothing. Here:
 * - start: the file is opened once, synchronously, before anything else runs; a path that cannot
 *   work (missing directory, a directory, read-only file system, no permission) is a LogFileError,
 *   which `run` prints as one line. A full disk or an I/O error is not a reason to refuse: the agent
 *   starts with the file failing, as below (a restart on a full disk must come up).
 * - run time: lines are written in order with asynchronous fs.write (the libuv pool), so a slow or
 *   dying disk never holds the event loop: D1 pushes are answered meanwhile. A failed write (ENOSPC,
 *   EIO, EDQUOT, EROFS after a remount, …) throws nowhere: that line and every line after it go to
 *   stderr (the journal under systemd) and are counted as lost from the file; one warning line on
 *   stderr says so. A timer (backoff 1 s doubling to 30 s) re-opens the file and writes a
 *   "writable again" line into it; when that succeeds, lines go to the file again and the same
 *   warning goes to stderr.
 * - a write cut short leaves part of a line in the file; the first write after it starts with a
 *   newline, so every other line of the file stays one JSON object.
 * - a disk that takes writes too slowly: up to maxQueuedBytes wait for it, further lines go to
 *   stderr (counted, with one warning), so memory stays bounded.
 */

export class LogFileError extends CodedError<"LOG_FILE_UNUSABLE"> {
  constructor(
    /** The errno code of the failed open (ENOENT, EISDIR, EROFS, EACCES, …). */
    readonly errno: string,
    message: string,
  ) {
    super("LOG_FILE_UNUSABLE", message);
  }
}

/** Errors of the file system's state, not of the configured path: start anyway, fall back, retry. */
const TRANSIENT_OPEN_ERRORS = new Set(["ENOSPC", "EDQUOT", "EIO", "EMFILE", "ENFILE", "EAGAIN", "EINTR"]);

/** The file system calls used; tests pass failing ones (EIO cannot be had from a real disk here). */
export interface LogFs {
  openSync(path: string, flags: string, mode: number): number;
  open(
    path: string,
    flags: string,
    mode: number,
    cb: (err: NodeJS.ErrnoException | null, fd: number) => void,
  ): void;
  write(
    fd: number,
    buffer: Buffer,
    offset: number,
    length: number,
    position: null,
    cb: (err: NodeJS.ErrnoException | null, written: number) => void,
  ): void;
  writeSync(fd: number, buffer: Buffer, offset: number, length: number): number;
  close(fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void;
}

/** Where lines go while the file fails: stderr, unless a test captures them. */
export interface FallbackStream {
  write(text: string): unknown;
  flushSync?(): void;
}

export interface LogFileOptions {
  /** pino's `name`, repeated in the destination's own notice lines. */
  name?: string;
  /** Backoff of the re-open attempts while the file fails. */
  retry?: { initialMs: number; maxMs: number };
  /** More than this many bytes waiting for a slow disk: further lines go to stderr (counted lost). */
  maxQueuedBytes?: number;
  fallback?: FallbackStream;
  fs?: LogFs;
  clock?: Clock;
}

export interface LogFileStatus {
  file: string;
  /** Lines that did not reach the file (each one went to stderr instead), since the start. */
  linesLost: number;
  /** True while writes to the file fail and lines go to stderr. */
  failing: boolean;
  /** The errno code of the failure while failing. */
  code?: string;
}

/** Every open file destination of this process, for /metrics (one in `run`). */
const openDestinations = new Set<LogFileDestination>();
/** Lines lost by destinations already closed, so the counter never goes back. */
let linesLostClosed = 0;

/** What /metrics reports: lines lost from log.file since the start, and whether it fails now. */
export function logFileStats(): { linesLost: number; failing: boolean } {
  let linesLost = linesLostClosed;
  let failing = false;
  for (const d of openDestinations) {
    linesLost += d.status.linesLost;
    failing ||= d.status.failing;
  }
  return { linesLost, failing };
}

// The service's own lines, private to its user as the data directory's files are (issue 14); `run` also
// sets umask 0077.
const MODE = 0o600;
const NEWLINE = 0x0a;
/** One fs.write at most this big: a line is never split between two unless it is bigger. */
const MAX_CHUNK = 64 * 1024;

/**
 * Opens `log.file` for appending, or throws a LogFileError whose message is the one line to print
 * (without the "kiosk-agent: cannot start: " prefix). See the class comment for what is refused.
 */
export function openLogFile(file: string, options: LogFileOptions = {}): LogFileDestination {
  const fs = options.fs ?? nodeFs;
  let fd: number | undefined;
  let code: string | undefined;
  try {
    fd = fs.openSync(file, "a", MODE);
  } catch (err) {
    code = (err as NodeJS.ErrnoException).code ?? "EUNKNOWN";
    if (!TRANSIENT_OPEN_ERRORS.has(code)) throw new LogFileError(code, describeOpenError(file, code));
  }
  return new LogFileDestination(file, fd, code, options);
}

/** The pino destination for `log.file`; made by openLogFile(). */
export class LogFileDestination {
  private readonly fs: LogFs;
  private readonly clock: Clock;
  private fallbackStream: FallbackStream | undefined;
  private readonly name: string;
  private readonly retryMs: { initialMs: number; maxMs: number };
  private readonly maxQueuedBytes: number;
  private fd: number | undefined;
  private queue: string[] = [];
  private queuedBytes = 0;
  /** The chunk fs.write is writing now, and how much of it reached the file. */
  private inFlight: { buf: Buffer; lineEnds: number[]; written: number } | undefined;
  /**
   * The file ends in part of a line (a write was cut short, then failed). Only ever true while the
   * file fails: the write that ends the failure is the retry's line, which starts with a newline.
   */
  private torn = false;
  private failure: { code: string; since: number; linesLost: number } | undefined;
  private retryTimer: TimerHandle | undefined;
  private nextRetryMs: number;
  private closed = false;
  /** Lines are being sent to stderr because the queue for a slow disk is full. */
  private overflowing = false;
  private linesLost = 0;
  private drainWaiters: Array<() => void> = [];
  private readonly onExit = (): void => this.flushSync();

  constructor(
    readonly file: string,
    fd: number | undefined,
    openError: string | undefined,
    options: LogFileOptions = {},
  ) {
    this.fs = options.fs ?? nodeFs;
    this.clock = options.clock ?? systemClock;
    this.fallbackStream = options.fallback;
    this.name = options.name ?? "kiosk-agent";
    this.retryMs = options.retry ?? { initialMs: 1_000, maxMs: 30_000 };
    this.maxQueuedBytes = options.maxQueuedBytes ?? 4 * 1024 * 1024;
    this.nextRetryMs = this.retryMs.initialMs;
    this.fd = fd;
    openDestinations.add(this);
    // A process.exit() or a crash must not drop the lines still queued (the last ones say why).
    process.once("exit", this.onExit);
    if (fd === undefined) this.fail(openError ?? "EUNKNOWN", []);
  }

  /** stderr, opened the first time it is needed: a healthy file never touches it. */
  private get fallback(): FallbackStream {
    this.fallbackStream ??= new StderrWriter();
    return this.fallbackStream;
  }

  get status(): LogFileStatus {
    return {
      file: this.file,
      linesLost: this.linesLost,
      failing: this.failure !== undefined,
      ...(this.failure ? { code: this.failure.code } : {}),
    };
  }

  /** pino calls this with one finished line (newline included). Never throws, never blocks. */
  write(line: string): boolean {
    if (this.closed) return true;
    if (this.failure) {
      this.lose([line]);
      return true;
    }
    const bytes = Buffer.byteLength(line);
    if (this.queuedBytes + bytes > this.maxQueuedBytes) {
      // The disk takes writes, only too slowly: memory stays bounded, the line still reaches the journal.
      if (!this.overflowing) {
        this.overflowing = true;
        this.fallback.write(
          this.notice(40, "log.file too slow: log lines go to stderr until it catches up", {
            file: this.file,
            queuedBytes: this.queuedBytes,
          }),
        );
      }
      this.lose([line]);
      return true;
    }
    this.queue.push(line);
    this.queuedBytes += bytes;
    if (!this.inFlight) this.pump();
    return true;
  }

  /** Calls back once every line written so far has been handed to the file (or to stderr). */
  flush(cb?: (err?: Error) => void): void {
    if (!cb) return;
    if (!this.inFlight && this.queue.length === 0) {
      cb();
      return;
    }
    this.drainWaiters.push(() => cb());
  }

  /**
   * Writes what is queued, synchronously: at exit only, when no later callback would run. A chunk
   * already handed to fs.write is left to it (writing it again could double it in the file).
   */
  flushSync(): void {
    if (this.fd !== undefined && !this.failure && this.queue.length > 0) {
      const lines = this.queue.splice(0);
      this.queuedBytes = 0;
      const { buf, lineEnds } = chunkOf(lines);
      let written = 0;
      try {
        while (written < buf.length) {
          const n = this.fs.writeSync(this.fd, buf, written, buf.length - written);
          if (n <= 0) break;
          written += n;
        }
      } catch {
        // Nothing left to retry with: the lines not written go to stderr below.
      }
      const lost = lines.slice(reachedFile(lineEnds, written));
      if (lost.length > 0) this.lose(lost);
    }
    this.fallbackStream?.flushSync?.();
  }

  /** Stops the retries and closes the file once what is queued is written. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.retryTimer) this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const finish = (): void => {
      process.off("exit", this.onExit);
      openDestinations.delete(this);
      linesLostClosed += this.linesLost;
      if (this.fd !== undefined) this.fs.close(this.fd, () => undefined);
      this.fd = undefined;
    };
    if (!this.inFlight && this.queue.length === 0) finish();
    else this.drainWaiters.push(finish);
  }

  private pump(): void {
    if (this.inFlight || this.failure || this.fd === undefined) return;
    if (this.queue.length === 0) {
      this.overflowing = false;
      for (const waiter of this.drainWaiters.splice(0)) waiter();
      return;
    }
    // Lines up to MAX_CHUNK in one write: fewer syscalls when lines come in a burst.
    let take = 0;
    let bytes = 0;
    while (
      take < this.queue.length &&
      (take === 0 || bytes + Buffer.byteLength(this.queue[take]!) <= MAX_CHUNK)
    ) {
      bytes += Buffer.byteLength(this.queue[take]!);
      take += 1;
    }
    const lines = this.queue.splice(0, take);
    this.queuedBytes -= bytes;
    const { buf, lineEnds } = chunkOf(lines);
    this.inFlight = { buf, lineEnds, written: 0 };
    this.writeRest(lines);
  }

  private writeRest(lines: string[]): void {
    const chunk = this.inFlight!;
    const fd = this.fd!;
    this.fs.write(fd, chunk.buf, chunk.written, chunk.buf.length - chunk.written, null, (err, n) => {
      if (!err && n > 0) {
        chunk.written += n;
        this.torn = chunk.buf[chunk.written - 1] !== NEWLINE;
        // A short write (the disk filled up within it): the rest is tried at once; that try gives
        // the error, or takes it.
        if (chunk.written < chunk.buf.length) return this.writeRest(lines);
        this.inFlight = undefined;
        this.pump();
        return;
      }
      this.inFlight = undefined;
      // n === 0 without an error would loop for ever: treated as a failure of its own.
      this.fail(
        err?.code ?? (err ? "EUNKNOWN" : "EZEROWRITE"),
        lines.slice(reachedFile(chunk.lineEnds, chunk.written)),
      );
    });
  }

  /** The file stopped taking lines: `lost` and everything queued go to stderr until a retry works. */
  private fail(code: string, lost: string[]): void {
    const queued = this.queue.splice(0);
    this.queuedBytes = 0;
    this.failure = { code, since: this.clock.now(), linesLost: 0 };
    this.fallback.write(
      this.notice(40, "log.file failing: log lines go to stderr until it takes writes again", {
        file: this.file,
        code,
        retryInMs: this.nextRetryMs,
      }),
    );
    this.lose([...lost, ...queued]);
    this.scheduleRetry();
    for (const waiter of this.drainWaiters.splice(0)) waiter();
  }

  private lose(lines: string[]): void {
    for (const line of lines) this.fallback.write(line);
    this.linesLost += lines.length;
    if (this.failure) this.failure.linesLost += lines.length;
  }

  private scheduleRetry(): void {
    if (this.closed || this.retryTimer) return;
    const delay = this.nextRetryMs;
    this.nextRetryMs = Math.min(this.nextRetryMs * 2, this.retryMs.maxMs);
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = undefined;
      this.retry();
    }, delay);
    // The retries must not keep a stopping process alive.
    (this.retryTimer as { unref?: () => void }).unref?.();
  }

  /**
   * Re-opens the file (a replaced or remounted file is picked up, a broken descriptor is dropped)
   * and writes the "writable again" line into it: that line is the test, a real write of real bytes.
   */
  private retry(): void {
    const failure = this.failure;
    if (!failure || this.closed) return;
    this.fs.open(this.file, "a", MODE, (openErr, fd) => {
      if (openErr) {
        failure.code = openErr.code ?? failure.code;
        this.scheduleRetry();
        return;
      }
      const text = this.notice(40, "log.file writable again", {
        file: this.file,
        code: failure.code,
        linesLost: failure.linesLost,
        failedForMs: Math.round(this.clock.now() - failure.since),
      });
      const buf = Buffer.from((this.torn ? "\n" : "") + text);
      let written = 0;
      const attempt = (): void => {
        this.fs.write(fd, buf, written, buf.length - written, null, (err, n) => {
          if (!err && n > 0) {
            written += n;
            this.torn = buf[written - 1] !== NEWLINE;
            if (written < buf.length) return attempt();
            return this.recovered(fd, text);
          }
          if (err?.code) failure.code = err.code;
          this.fs.close(fd, () => undefined);
          this.scheduleRetry();
        });
      };
      attempt();
    });
  }

  private recovered(fd: number, text: string): void {
    const old = this.fd;
    this.fd = fd;
    if (old !== undefined && old !== fd) this.fs.close(old, () => undefined);
    this.failure = undefined;
    this.nextRetryMs = this.retryMs.initialMs;
    this.fallback.write(text);
    if (this.closed) {
      this.fs.close(fd, () => undefined);
      this.fd = undefined;
      return;
    }
    this.pump();
  }

  /** A line in pino's shape, for the destination's own warnings (no card data: path, code, counts). */
  private notice(level: number, msg: string, fields: Record<string, unknown>): string {
    return `${JSON.stringify({
      level,
      time: this.clock.wallNow(),
      pid: process.pid,
      hostname: hostname(),
      name: this.name,
      component: "log",
      ...fields,
      linesLostTotal: this.linesLost,
      msg,
    })}\n`;
  }
}

/** The lines as one buffer, and where each line ends in it. */
function chunkOf(lines: string[]): { buf: Buffer; lineEnds: number[] } {
  const buf = Buffer.from(lines.join(""));
  const lineEnds: number[] = [];
  let at = 0;
  for (const line of lines) {
    at += Buffer.byteLength(line);
    lineEnds.push(at);
  }
  return { buf, lineEnds };
}

/** How many of a chunk's lines reached the file whole after `written` bytes. */
function reachedFile(lineEnds: number[], written: number): number {
  let n = 0;
  while (n < lineEnds.length && lineEnds[n]! <= written) n += 1;
  return n;
}

/**
 * stderr (the journal under systemd), written asynchronously in order, with bounded memory. Not
 * pino.destination(2): its exit hook calls SonicBoom's flushSync(), which answers any error but
 * EAGAIN by sleeping 100 ms on the main thread and trying again, for ever (the hang of issue 16).
 * Here a full pipe (EAGAIN) is waited for with a timer; any other error drops what it was writing:
 * there is nowhere left to report it.
 */
export class StderrWriter implements FallbackStream {
  private queue: string[] = [];
  private queuedBytes = 0;
  private writing = false;
  /** Lines dropped because stderr itself failed or was too far behind. */
  dropped = 0;

  constructor(
    private readonly fs: Pick<LogFs, "write" | "writeSync"> = nodeFs,
    private readonly fd = 2,
    private readonly maxQueuedBytes = 4 * 1024 * 1024,
  ) {}

  write(text: string): void {
    const bytes = Buffer.byteLength(text);
    if (this.queuedBytes + bytes > this.maxQueuedBytes) {
      this.dropped += 1;
      return;
    }
    this.queue.push(text);
    this.queuedBytes += bytes;
    this.pump();
  }

  /** At exit: one try to write what is queued, no waiting. */
  flushSync(): void {
    if (this.writing || this.queue.length === 0) return;
    const buf = Buffer.from(this.queue.splice(0).join(""));
    this.queuedBytes = 0;
    try {
      this.fs.writeSync(this.fd, buf, 0, buf.length);
    } catch {
      this.dropped += 1;
    }
  }

  private pump(): void {
    if (this.writing || this.queue.length === 0) return;
    const buf = Buffer.from(this.queue.splice(0).join(""));
    this.queuedBytes = 0;
    this.writing = true;
    this.writeFrom(buf, 0);
  }

  private writeFrom(buf: Buffer, offset: number): void {
    this.fs.write(this.fd, buf, offset, buf.length - offset, null, (err, n) => {
      if (err?.code === "EAGAIN") {
        setTimeout(() => this.writeFrom(buf, offset), 50).unref();
        return;
      }
      if (!err && n > 0 && offset + n < buf.length) {
        this.writeFrom(buf, offset + n);
        return;
      }
      if (err || n <= 0) this.dropped += 1;
      this.writing = false;
      this.pump();
    });
  }
}

/** One line for an open that cannot work: what is wrong with the path, and what to do. */
export function describeOpenError(file: string, code: string): string {
  const orJournal = "or remove log.file to log to the journal";
  const dir = dirname(file);
  switch (code) {
    case "ENOENT":
      return `log.file ${file}: directory ${dir} does not exist; create it, writable by the service's user (the agent does not create it), ${orJournal}`;
    case "EISDIR":
      return `log.file ${file} is a directory; name a file in it (e.g. ${join(file, "agent.log")}), ${orJournal}`;
    case "ENOTDIR":
      return `log.file ${file}: ${firstNonDirectory(file) ?? "a part of the path"} is not a directory; fix the path, ${orJournal}`;
    case "EROFS":
      return `log.file ${file} is on a read-only file system; point it at a writable one (under systemd: a path in ReadWritePaths= or LogsDirectory=), ${orJournal}`;
    case "EACCES":
    case "EPERM": {
      const who = typeof process.getuid === "function" ? `uid ${process.getuid()}` : "this user";
      const target = existsOrUndefined(file) ? file : dir;
      return `log.file ${file}: permission denied for ${who}; let that user write ${target} (chown/chmod), ${orJournal}`;
    }
    default:
      return `log.file ${file} cannot be opened for appending (${code}); fix the path, ${orJournal}`;
  }
}

/** The first component of the path that exists and is not a directory (ENOTDIR's culprit). */
function firstNonDirectory(file: string): string | undefined {
  const { root } = parse(file);
  const parts = file.slice(root.length).split(sep).filter(Boolean);
  let at = root;
  for (const part of parts.slice(0, -1)) {
    at = join(at, part);
    try {
      if (!nodeFs.statSync(at).isDirectory()) return at;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

function existsOrUndefined(path: string): boolean {
  try {
    nodeFs.statSync(path);
    return true;
  } catch {
    return false;
  }
}
