// Whether dist/kiosk-agent.mjs (the bundle `npm run build` makes, scripts/build.ts) may stand in for
// the TypeScript sources: it must exist and be at least as new as everything it was built from.
// bin/kiosk-agent.mjs asks this on every start, so it stays cheap: one stat per file and directory
// under agent/, drivers/ and simulator/ (~120 entries, about a millisecond) plus a few files; no
// hashing, no reading.
//
// Directories count too: deleting or renaming a source changes its directory's mtime, not a file's.
// The walk stops at the first entry newer than the bundle. Plain JavaScript (no tsx at this point).
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

/** The bundle, relative to the repository root. */
export const BUNDLE = "dist/kiosk-agent.mjs";
/** Every file below these is a source of the bundle (or read next to one at run time). */
export const SOURCE_DIRS = ["agent", "drivers", "simulator"];
/**
 * Files that change what the bundle holds: the dependency versions inlined into it, and the build's
 * own configuration (tsconfig.json is read by esbuild). Missing ones are skipped.
 */
export const SOURCE_FILES = ["package.json", "package-lock.json", "tsconfig.json", "scripts/build.ts"];

/**
 * `{ state: "fresh", bundle }`, `{ state: "missing", bundle, reason }` or
 * `{ state: "stale", bundle, newer, reason }` (`newer`: the first source found newer, relative path).
 * `root`: the repository's directory (a path).
 */
export function bundleFreshness(root) {
  const bundle = join(root, BUNDLE);
  const built = statSync(bundle, { throwIfNoEntry: false });
  if (!built?.isFile()) return { state: "missing", bundle, reason: `${BUNDLE} is missing` };
  const newer = firstNewer(root, built.mtimeMs);
  if (newer !== undefined) {
    return { state: "stale", bundle, newer, reason: `${BUNDLE} is older than ${newer}` };
  }
  return { state: "fresh", bundle };
}

function firstNewer(root, builtMs) {
  for (const file of SOURCE_FILES) {
    const s = statSync(join(root, file), { throwIfNoEntry: false });
    if (s && s.mtimeMs > builtMs) return file;
  }
  for (const dir of SOURCE_DIRS) {
    const found = walk(root, dir, builtMs);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** Depth first; `rel` is relative to root. An entry that vanishes mid-walk is skipped (its directory's mtime moved). */
function walk(root, rel, builtMs) {
  const s = statSync(join(root, rel), { throwIfNoEntry: false });
  if (!s) return undefined;
  if (s.mtimeMs > builtMs) return rel;
  if (!s.isDirectory()) return undefined;
  let entries;
  try {
    entries = readdirSync(join(root, rel));
  } catch {
    return undefined;
  }
  for (const name of entries) {
    const found = walk(root, `${rel}/${name}`, builtMs);
    if (found !== undefined) return found;
  }
  return undefined;
}
