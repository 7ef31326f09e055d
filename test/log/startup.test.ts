import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mountTmpfs, unmount } from "./support.js";

/**
 * `kiosk-agent run` with a log.file it cannot use: one line on stderr naming the key, the path and
 * what to do, exit 1 (as for any configuration error); never a Node stack trace. The real bin, the
 * real file systems: a read-only tmpfs for EROFS, and the agent run as `nobody` for EACCES (root
 * would write through any mode bits).
 */
const NOBODY = 65534;
let dir = "";
let roDir = "";

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "kiosk-log-start-"));
  // The agent run as nobody must reach its config and the paths below.
  chmodSync(dir, 0o755);
  const ro = join(dir, "ro");
  mkdirSync(ro);
  mountTmpfs(ro, { sizeKb: 64, readOnly: true });
  // Set only once mounted: a refused mount fails the tests with its own message, not an umount's.
  roDir = ro;
  mkdirSync(join(dir, "locked"), { mode: 0o555 });
  chmodSync(join(dir, "locked"), 0o555);
});

afterAll(() => {
  if (roDir) unmount(roDir);
  rmSync(dir, { recursive: true, force: true });
});

function runWithLogFile(logFile: string, asUser?: number): { status: number | null; stderr: string } {
  const configFile = join(dir, "config.json");
  writeFileSync(
    configFile,
    JSON.stringify({
      station: { id: "KIOSK-LOG-1" },
      // Nothing listens there: the agent must not get as far as dialling.
      d1: { url: "ws://127.0.0.1:9", token: "log-start-token", allowInsecure: true },
      dataDir: join(dir, "data"),
      printer: { path: join(dir, "no-printer") },
      log: { file: logFile },
    }),
    { mode: 0o644 },
  );
  chmodSync(configFile, 0o644);
  const r = spawnSync(process.execPath, ["bin/kiosk-agent.mjs", "run", "--config", configFile], {
    encoding: "utf8",
    // The old agent started anyway and crashed later, or kept running: bounded either way.
    timeout: 15_000,
    ...(asUser !== undefined ? { uid: asUser, gid: asUser } : {}),
  });
  return { status: r.status, stderr: r.stderr };
}

function expectOneClearLine(r: { status: number | null; stderr: string }, logFile: string, says: RegExp) {
  expect(r.stderr).not.toMatch(/\n\s+at |node:events|Unhandled|Error:/);
  const lines = r.stderr.split("\n").filter((l) => l.length > 0);
  expect(lines).toHaveLength(1);
  const [line] = lines;
  expect(line).toMatch(/^kiosk-agent: cannot start: log\.file /);
  expect(line).toContain(logFile);
  expect(line).toMatch(says);
  // What to do, in the same line.
  expect(line).toMatch(/remove log\.file to log to the journal/);
  expect(r.status).toBe(1);
}

describe(
  "kiosk-agent run: a log.file it cannot use stops the start with one clear line",
  { timeout: 30_000 },
  () => {
    it("a missing directory is reported (and not created)", () => {
      const logFile = join(dir, "no-such-dir", "agent.log");
      expectOneClearLine(runWithLogFile(logFile), logFile, /directory .*no-such-dir does not exist/);
      expect(existsSync(join(dir, "no-such-dir"))).toBe(false);
    });

    it("a path that is a directory", () => {
      const logFile = join(dir, "locked");
      expectOneClearLine(runWithLogFile(logFile), logFile, /is a directory/);
    });

    it("a read-only file system (EROFS)", () => {
      const logFile = join(roDir, "agent.log");
      expectOneClearLine(runWithLogFile(logFile), logFile, /read-only file system/);
    });

    it("a directory the service's user may not write (EACCES)", () => {
      const logFile = join(dir, "locked", "agent.log");
      expectOneClearLine(runWithLogFile(logFile, NOBODY), logFile, /permission denied for uid 65534/);
    });

    it("a path through a file (ENOTDIR)", () => {
      const logFile = join(dir, "config.json", "agent.log");
      expectOneClearLine(runWithLogFile(logFile), logFile, /is not a directory/);
    });
  },
);
