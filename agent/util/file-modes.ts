import { chmodSync, statSync } from "node:fs";

/**
 * Takes away every permission bit of `path` beyond `mode` (0700 for the data directory, 0600 for its
 * files), whatever the umask was when it was made: an agent started outside systemd (by hand, from a
 * shell with umask 022) or a directory an older version made. A path that does not exist, or that
 * belongs to another user (chmod refused), is left as it is; returns whether it is now within `mode`.
 */
export function restrictMode(path: string, mode: number): boolean {
  let current: number;
  try {
    current = statSync(path).mode & 0o777;
  } catch {
    return false;
  }
  if ((current & ~mode) === 0) return true;
  try {
    chmodSync(path, current & mode);
    return true;
  } catch {
    return false;
  }
}
