import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";

/**
 * Files that must survive a power cut. A plain writeFileSync leaves the data in the page cache and
 * the new name in an unsynced directory: a cut right after it leaves an empty file, or none (found
 * on a power-loss file system: an empty data.key beside a store that already held a job sealed with
 * it). So: write a temporary file, fsync it, give it its name, fsync the directory.
 */
export function writeFileDurably(
  path: string,
  data: string | Buffer,
  options: { mode?: number; exclusive?: boolean } = {},
): void {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  const fd = openSync(temp, "wx", options.mode ?? 0o600);
  try {
    const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
    let written = 0;
    while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    if (options.exclusive) {
      // link() refuses an existing name atomically, where rename() would replace it.
      linkSync(temp, path);
      unlinkSync(temp);
    } else {
      renameSync(temp, path);
    }
  } catch (err) {
    if (existsSync(temp)) unlinkSync(temp);
    throw err;
  }
  fsyncDirectory(dir);
}

/** mkdir -p, then fsync each directory whose entry was created, so the path itself survives a cut. */
export function mkdirDurably(path: string, mode = 0o700): void {
  const created = mkdirSync(path, { recursive: true, mode });
  if (created === undefined) return;
  // `created` is the first directory made; it and every one below it got a new entry in its parent.
  for (let dir = path; ; dir = dirname(dir)) {
    fsyncDirectory(dirname(dir));
    if (dir === created || dirname(dir) === dir) break;
  }
}

export function fsyncDirectory(dir: string): void {
  fsyncPath(dir);
}

/** fsync of a file or directory by name: its data and metadata (size, entries) reach the disk. */
export function fsyncPath(path: string): void {
  // Read-only is enough: on Linux fsync needs a descriptor, not write access.
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
