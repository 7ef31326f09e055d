import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  type LogFileDestination,
  LogFileError,
  type LogFs,
  logFileStats,
  openLogFile,
  StderrWriter,
} from "../../agent/log/file-destination.js";
import { createLogger } from "../../agent/log/logger.js";
import { ManualClock } from "../../agent/util/clock.js";
import { jsonLines, until } from "./support.js";

/**
 * The log.file destination against a disk in memory that fails on demand: EIO cannot be had from a
 * real disk on a test machine, and a disk that hangs cannot be had at all. The real kernel's ENOSPC
 * and EROFS are in disk-full.test.ts and startup.test.ts. Retries run on a ManualClock: no waiting.
 */
class MemoryDisk implements LogFs {
  content = Buffer.alloc(0);
  /** Bytes the file may hold; a write beyond is cut short, then ENOSPC. */
  capacity = Number.POSITIVE_INFINITY;
  mode: "ok" | "eio" | "hang" = "ok";
  openError: string | undefined;
  opens = 0;
  writes = 0;
  readonly fds = new Set<number>();
  private nextFd = 10;
  private hung: Array<() => void> = [];

  openSync(): number {
    if (this.openError) throw errno(this.openError);
    return this.newFd();
  }
  open(
    _p: string,
    _f: string,
    _m: number,
    cb: (err: NodeJS.ErrnoException | null, fd: number) => void,
  ): void {
    this.opens += 1;
    setImmediate(() => (this.openError ? cb(errno(this.openError), -1) : cb(null, this.newFd())));
  }
  write(
    fd: number,
    buf: Buffer,
    off: number,
    len: number,
    _pos: null,
    cb: (err: NodeJS.ErrnoException | null, n: number) => void,
  ): void {
    this.writes += 1;
    const run = (): void => {
      try {
        cb(null, this.writeSync(fd, buf, off, len));
      } catch (err) {
        cb(err as NodeJS.ErrnoException, 0);
      }
    };
    if (this.mode === "hang") this.hung.push(run);
    else setImmediate(run);
  }
  writeSync(fd: number, buf: Buffer, off: number, len: number): number {
    if (!this.fds.has(fd)) throw errno("EBADF");
    if (this.mode === "eio") throw errno("EIO");
    const n = Math.min(len, this.capacity - this.content.length);
    if (n <= 0) throw errno("ENOSPC");
    this.content = Buffer.concat([this.content, buf.subarray(off, off + n)]);
    return n;
  }
  close(fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void {
    this.fds.delete(fd);
    setImmediate(() => cb(null));
  }
  /** The disk answers again: writes held while it hung complete now. */
  release(): void {
    this.mode = "ok";
    for (const run of this.hung.splice(0)) setImmediate(run);
  }
  text(): string {
    return this.content.toString("utf8");
  }
  private newFd(): number {
    const fd = this.nextFd++;
    this.fds.add(fd);
    return fd;
  }
}

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: simulated`), { code });
}

function capture(): {
  lines: () => Array<Record<string, unknown>>;
  text: () => string;
  write(t: string): void;
} {
  const chunks: string[] = [];
  return {
    write: (t) => void chunks.push(t),
    text: () => chunks.join(""),
    lines: () => jsonLines(chunks.join("")),
  };
}

const destinations: LogFileDestination[] = [];
afterEach(() => {
  for (const d of destinations.splice(0)) d.close();
});

function setUp(options: { maxQueuedBytes?: number; openError?: string } = {}) {
  const disk = new MemoryDisk();
  disk.openError = options.openError;
  const clock = new ManualClock();
  const stderr = capture();
  const destination = openLogFile("/var/log/kiosk-agent/agent.log", {
    fs: disk,
    clock,
    fallback: stderr,
    ...(options.maxQueuedBytes ? { maxQueuedBytes: options.maxQueuedBytes } : {}),
  });
  destinations.push(destination);
  disk.openError = undefined;
  const log = createLogger({ level: "info", destination });
  const fileLines = () => jsonLines(disk.text()).map((l) => l.msg);
  return { disk, clock, stderr, destination, log, fileLines };
}

describe("log.file destination", () => {
  it("writes every line to the file, in order, and nothing to stderr", async () => {
    const { stderr, destination, log, fileLines } = setUp();
    for (let i = 0; i < 200; i++) log.info(`line ${i}`);
    await new Promise<void>((resolve) => destination.flush(() => resolve()));
    expect(fileLines()).toEqual(Array.from({ length: 200 }, (_, i) => `line ${i}`));
    expect(stderr.text()).toBe("");
    expect(destination.status).toEqual({
      file: "/var/log/kiosk-agent/agent.log",
      linesLost: 0,
      failing: false,
    });
  });

  it("EIO: never throws; the line and the next ones go to stderr after one warning, counted; retries back off and recover by themselves", async () => {
    const { disk, clock, stderr, destination, log, fileLines } = setUp();
    const lostBefore = logFileStats().linesLost;
    log.info("before");
    await until(() => fileLines().length === 1, "the first line in the file");

    disk.mode = "eio";
    expect(() => log.info("one")).not.toThrow();
    await until(() => stderr.lines().length === 2, "the warning and the line on stderr");
    expect(stderr.lines()).toMatchObject([
      { level: 40, component: "log", code: "EIO", msg: expect.stringMatching(/^log\.file failing/) },
      { msg: "one" },
    ]);
    expect(destination.status).toMatchObject({ failing: true, code: "EIO", linesLost: 1 });
    expect(logFileStats()).toEqual({ linesLost: lostBefore + 1, failing: true });

    // While failing, a line costs no system call: straight to stderr.
    const writes = disk.writes;
    log.info("two");
    expect(disk.writes).toBe(writes);
    expect(stderr.lines().at(-1)).toMatchObject({ msg: "two" });

    // Retries at 1 s, then 2 s later, then 4 s: each one a re-open and a real write.
    clock.advance(999);
    expect(disk.opens).toBe(0);
    clock.advance(1);
    await until(() => clock.pendingTimers() === 1 && disk.opens === 1, "the first retry failing");
    clock.advance(1_999);
    expect(disk.opens).toBe(1);
    clock.advance(1);
    await until(() => clock.pendingTimers() === 1 && disk.opens === 2, "the second retry failing");
    expect(disk.fds.size).toBe(1);
    expect(destination.status.failing).toBe(true);

    disk.mode = "ok";
    clock.advance(4_000);
    await until(() => !destination.status.failing, "the file taking writes again");
    const recovered = { code: "EIO", linesLost: 2, msg: "log.file writable again" };
    expect(jsonLines(disk.text()).at(-1)).toMatchObject(recovered);
    expect(stderr.lines().at(-1)).toMatchObject(recovered);
    // The old descriptor is closed: one open file.
    expect(disk.fds.size).toBe(1);

    log.info("three");
    await until(() => fileLines().at(-1) === "three", "a line in the file after the recovery");
    expect(fileLines()).toEqual(["before", "log.file writable again", "three"]);
    expect(stderr.lines().map((l) => l.msg)).not.toContain("three");
    expect(logFileStats()).toEqual({ linesLost: lostBefore + 2, failing: false });
    // Back to the first step of the backoff for the next failure.
    disk.mode = "eio";
    log.info("four");
    await until(() => destination.status.failing, "the second failure");
    const opens = disk.opens;
    clock.advance(1_000);
    await until(() => disk.opens === opens + 1, "a retry 1 s after the second failure");
  });

  it("a disk that fills up within a write: the cut line stays on a line of its own; each line is in the file or on stderr, once", async () => {
    const { disk, clock, stderr, log } = setUp();
    log.info("fits");
    await until(() => disk.content.length > 0, "the first line");
    disk.capacity = disk.content.length + 40;
    log.info({ operationId: "op-cut" }, "this line is longer than the forty bytes left on the disk");
    log.info("after the cut");
    await until(() => stderr.lines().length === 3, "the warning and two lines on stderr");
    expect(disk.content.length).toBe(disk.capacity);
    expect(stderr.lines().map((l) => l.msg)).toEqual([
      expect.stringMatching(/^log\.file failing/),
      "this line is longer than the forty bytes left on the disk",
      "after the cut",
    ]);
    expect(stderr.lines()[0]).toMatchObject({ code: "ENOSPC" });

    // Still full at the first retry: no new line, no second fragment.
    clock.advance(1_000);
    await until(() => disk.opens === 1 && clock.pendingTimers() === 1, "the first retry");
    expect(disk.content.length).toBe(disk.capacity);

    disk.capacity = Number.POSITIVE_INFINITY;
    clock.advance(2_000);
    await until(() => disk.text().includes("writable again"), "the recovery line");
    log.info("last");
    await until(() => disk.text().endsWith('"msg":"last"}\n'), "the last line");

    const lines = disk.text().split("\n").filter(Boolean);
    const notJson = lines.filter((l) => {
      try {
        JSON.parse(l);
        return false;
      } catch {
        return true;
      }
    });
    // The cut part is alone on its line; the recovery line after it is whole.
    expect(notJson).toHaveLength(1);
    expect(lines.indexOf(notJson[0]!)).toBe(1);
    expect(stderr.text()).toContain(notJson[0]!);
    expect(jsonLines(lines.slice(2).join("\n")).map((l) => l.msg)).toEqual([
      "log.file writable again",
      "last",
    ]);
  });

  it("a disk that hangs holds up nothing: lines queue up to the bound, then go to stderr; all reach the file once it answers", async () => {
    const { disk, stderr, destination, log } = setUp({ maxQueuedBytes: 4_096 });
    disk.mode = "hang";
    const started = performance.now();
    for (let i = 0; i < 100; i++) log.info({ i }, "while the disk hangs");
    // pino's write returned for every line at once: nothing waited for the disk.
    expect(performance.now() - started).toBeLessThan(500);
    const [notice, ...rest] = stderr.lines();
    expect(notice).toMatchObject({ level: 40, msg: expect.stringMatching(/^log\.file too slow/) });
    const onStderr = rest.map((l) => l.i);
    expect(onStderr.length).toBeGreaterThan(50);
    expect(destination.status).toMatchObject({ failing: false, linesLost: onStderr.length });

    disk.release();
    await new Promise<void>((resolve) => destination.flush(() => resolve()));
    const inFile = jsonLines(disk.text()).map((l) => l.i);
    expect([...inFile, ...onStderr]).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  it("a full disk at start (ENOSPC on open) does not stop the start: stderr until the file opens", async () => {
    const { disk, clock, stderr, destination, log } = setUp({ openError: "ENOSPC" });
    expect(destination.status).toMatchObject({ failing: true, code: "ENOSPC" });
    log.info("starting");
    expect(stderr.lines().map((l) => l.msg)).toEqual([
      expect.stringMatching(/^log\.file failing/),
      "starting",
    ]);
    clock.advance(1_000);
    await until(() => !destination.status.failing, "the file opened by the retry");
    log.info("running");
    await until(() => disk.text().includes('"msg":"running"'), "a line in the file");
    expect(jsonLines(disk.text()).map((l) => l.msg)).toEqual(["log.file writable again", "running"]);
  });

  it("card data stays masked on stderr too", async () => {
    const { disk, stderr, log } = setUp();
    disk.mode = "eio";
    log.info({ pan: "4111111111111111", job: { track2: "4111111111111111=29121010000000000000" } }, "card");
    log.info("card 4111 1111 1111 1111 seen");
    await until(() => stderr.lines().length === 3, "the lines on stderr");
    expect(stderr.text()).not.toMatch(/4111111111111111|4111 1111 1111 1111|=2912101/);
  });

  it("a path that cannot work is a LogFileError with one line; the file is not retried", () => {
    for (const [code, says] of [
      ["ENOENT", /directory \/var\/log\/kiosk-agent does not exist/],
      ["EISDIR", /is a directory/],
      ["EROFS", /read-only file system/],
      ["EACCES", /permission denied for uid \d+/],
      ["ELOOP", /cannot be opened for appending \(ELOOP\)/],
    ] as const) {
      const disk = new MemoryDisk();
      disk.openError = code;
      let thrown: unknown;
      try {
        destinations.push(openLogFile("/var/log/kiosk-agent/agent.log", { fs: disk, fallback: capture() }));
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(LogFileError);
      const err = thrown as LogFileError;
      expect({ code: err.code, errno: err.errno }).toEqual({ code: "LOG_FILE_UNUSABLE", errno: code });
      expect(err.message).toMatch(/^log\.file \/var\/log\/kiosk-agent\/agent\.log/);
      expect(err.message).toMatch(says);
      expect(err.message).toMatch(/remove log\.file to log to the journal$/);
      expect(err.message).not.toContain("\n");
    }
  });

  it("on a real file: appends to what is there; made 0600", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kiosk-log-file-"));
    try {
      const file = join(dir, "agent.log");
      const first = openLogFile(file, { fallback: capture() });
      destinations.push(first);
      createLogger({ destination: first }).info("first run");
      await new Promise<void>((resolve) => first.flush(() => resolve()));
      first.close();
      const second = openLogFile(file, { fallback: capture() });
      destinations.push(second);
      createLogger({ destination: second }).info("second run");
      await new Promise<void>((resolve) => second.flush(() => resolve()));
      expect(jsonLines(readFileSync(file, "utf8")).map((l) => l.msg)).toEqual(["first run", "second run"]);
      expect(statSync(file).mode & 0o777).toBe(0o600);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("stderr itself: a full pipe (EAGAIN) is waited for with a timer, in order; a broken one (EPIPE) drops, never throws", async () => {
    const out: string[] = [];
    let answer: "ok" | "EAGAIN" | "EPIPE" = "EAGAIN";
    let calls = 0;
    const fs = {
      write(
        _fd: number,
        buf: Buffer,
        off: number,
        len: number,
        _p: null,
        cb: (e: NodeJS.ErrnoException | null, n: number) => void,
      ) {
        calls += 1;
        setImmediate(() => {
          if (answer !== "ok") return cb(errno(answer), 0);
          out.push(buf.subarray(off, off + len).toString());
          cb(null, len);
        });
      },
      writeSync: () => 0,
    };
    const writer = new StderrWriter(fs, 2);
    writer.write("a\n");
    writer.write("b\n");
    await until(() => calls === 1, "the first write");
    // Not a busy loop: one more try per 50 ms timer at most.
    await new Promise((r) => setTimeout(r, 120));
    expect(calls).toBeLessThanOrEqual(4);
    answer = "ok";
    await until(() => out.join("") === "a\nb\n", "both lines, in order");
    answer = "EPIPE";
    expect(() => writer.write("c\n")).not.toThrow();
    await until(() => writer.dropped === 1, "the line dropped");
    answer = "ok";
    writer.write("d\n");
    await until(() => out.join("") === "a\nb\nd\n", "the next line written");
  });
});
