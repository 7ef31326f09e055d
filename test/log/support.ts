import { spawnSync } from "node:child_process";
import { closeSync, openSync, readFileSync, statfsSync, writeSync } from "node:fs";
import { pollUntil } from "../support/poll.js";

/**
 * Real file systems for the logging tests: a small tmpfs that fills up for real (ENOSPC from the
 * kernel, not a mock), or one mounted read-only (EROFS). Tests run as root in CI; a mount that is
 * refused is a broken test machine and fails the test loudly rather than skipping it.
 */
export function mountTmpfs(dir: string, options: { sizeKb?: number; readOnly?: boolean } = {}): void {
  const opts = [`size=${options.sizeKb ?? 1024}k`, "mode=0755", ...(options.readOnly ? ["ro"] : [])];
  const r = spawnSync("mount", ["-t", "tmpfs", "-o", opts.join(","), "tmpfs", dir], { encoding: "utf8" });
  if (r.status !== 0) {
    throw new Error(
      `cannot mount a tmpfs on ${dir} (${r.stderr.trim() || r.error?.message}): these tests need root and mount(8)`,
    );
  }
}

export function unmount(dir: string): void {
  const r = spawnSync("umount", [dir], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`umount ${dir}: ${r.stderr.trim()}`);
}

/**
 * Fills the file system holding `file` until the kernel says ENOSPC; returns the bytes written so
 * `free()` can give room back. Writes page-sized blocks, then single bytes, so not even the tail of
 * a partly used page is left.
 */
export function fill(file: string): { bytes: number; free: () => void } {
  const fd = openSync(file, "w");
  let bytes = 0;
  for (const size of [65536, 4096, 1]) {
    const block = Buffer.alloc(size, 0x2e);
    for (;;) {
      try {
        bytes += writeSync(fd, block);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
        break;
      }
    }
  }
  let freed = false;
  return {
    bytes,
    // Idempotent: a test's cleanup frees it again, so a failed test leaves no descriptor that keeps
    // the tmpfs busy at unmount.
    free: () => {
      if (freed) return;
      freed = true;
      closeSync(fd);
      closeSync(openSync(file, "w"));
    },
  };
}

export function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

/** The JSON lines of a text, each parsed; a line that is not JSON fails the test with its text. */
export function jsonLines(text: string): Array<Record<string, unknown>> {
  return text
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        throw new Error(`not a JSON line: ${l.slice(0, 200)}`);
      }
    });
}

export function readLines(file: string): Array<Record<string, unknown>> {
  return jsonLines(readFileSync(file, "utf8"));
}

/** Polls `condition` every few milliseconds; fails after `timeoutMs` with `what`. */
export function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  return pollUntil(condition, { timeoutMs, what, everyMs: 10 });
}
