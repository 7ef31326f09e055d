import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "./support.js";

/**
 * Issue 14, finding 9: the agent sets its own file modes, also outside systemd (whose unit has
 * UMask=0077 and StateDirectoryMode=0700): started by hand from a shell with umask 022, in a data
 * directory an older version left 0755, its data directory is 0700 and every file it makes there
 * (jobs.sqlite and its -wal and -shm, data.key, store.id, agent.pid) and its log.file are 0600.
 */
const BIN = fileURLToPath(new URL("../../bin/kiosk-agent.mjs", import.meta.url));

describe("file modes outside systemd", () => {
  let root: { dir: string; remove: () => void };
  beforeEach(() => {
    root = tempDir("kiosk-modes-");
  });
  afterEach(() => root.remove());

  it("umask 022, a 0755 data directory: 0700 directory, 0600 files, the log file included", async () => {
    const dataDir = join(root.dir, "data");
    mkdirSync(dataDir);
    chmodSync(dataDir, 0o755);
    const logFile = join(root.dir, "agent.log");
    const config = join(root.dir, "config.json");
    writeFileSync(
      config,
      JSON.stringify({
        station: { id: "KIOSK-PS-101" },
        d1: { url: "ws://127.0.0.1:9/", token: "test-token-0123", allowInsecure: true },
        dataDir,
        printer: { link: "usb", path: join(root.dir, "no-printer") },
        log: { file: logFile },
      }),
    );
    const child = spawn(
      "/bin/sh",
      ["-c", 'umask 022; exec "$0" "$@"', process.execPath, BIN, "run", "--config", config],
      {
        env: { ...process.env, KIOSK_AGENT_FROM_SOURCE: "1", CREDENTIALS_DIRECTORY: "" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let output = "";
    child.stdout.on("data", (b) => {
      output += String(b);
    });
    child.stderr.on("data", (b) => {
      output += String(b);
    });
    const files = ["jobs.sqlite", "jobs.sqlite-wal", "jobs.sqlite-shm", "data.key", "store.id", "agent.pid"];
    const modes: Record<string, string> = {};
    try {
      const deadline = Date.now() + 15_000;
      while (!files.every((f) => existsSync(join(dataDir, f))) || !existsSync(logFile)) {
        if (child.exitCode !== null) throw new Error(`agent exited ${child.exitCode}: ${output}`);
        if (Date.now() > deadline) throw new Error(`agent did not make its files: ${output}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const mode = (p: string) => (statSync(p).mode & 0o777).toString(8).padStart(4, "0");
      modes[dataDir] = mode(dataDir);
      for (const f of files) modes[f] = mode(join(dataDir, f));
      modes[logFile] = mode(logFile);
    } finally {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
    expect(modes).toEqual({
      [dataDir]: "0700",
      "jobs.sqlite": "0600",
      "jobs.sqlite-wal": "0600",
      "jobs.sqlite-shm": "0600",
      "data.key": "0600",
      "store.id": "0600",
      "agent.pid": "0600",
      [logFile]: "0600",
    });
  });

  it("files an older version left readable are made 0600 at the next start", async () => {
    const { JobStore } = await import("../../agent/store/job-store.js");
    const { loadOrCreateKey, SealedBox } = await import("../../agent/store/sealed-box.js");
    const { ManualClock } = await import("../../agent/util/clock.js");
    const file = join(root.dir, "jobs.sqlite");
    const box = new SealedBox(loadOrCreateKey(join(root.dir, "data.key")));
    const first = new JobStore(file, box, new ManualClock());
    first.close();
    chmodSync(file, 0o644);
    writeFileSync(`${file}-wal`, "");
    chmodSync(`${file}-wal`, 0o644);
    const again = new JobStore(file, box, new ManualClock());
    try {
      expect((statSync(file).mode & 0o777).toString(8)).toBe("600");
      expect((statSync(`${file}-wal`).mode & 0o777).toString(8)).toBe("600");
      expect((statSync(`${file}-shm`).mode & 0o777).toString(8)).toBe("600");
    } finally {
      again.close();
    }
  });
});
