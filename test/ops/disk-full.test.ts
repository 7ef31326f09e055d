import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { makeSampleJob } from "../../agent/jobs/sample-jobs.js";
import { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import { VirtualEvolisPrinter } from "../../simulator/printer/virtual-evolis-printer.js";
import { TcpDeviceServer } from "../../simulator/tcp/tcp-device-server.js";
import { fill, mountTmpfs, unmount, until } from "../log/support.js";
import { tempDir } from "./support.js";

/**
 * Issue 16's "disk full with the log on the same disk": the real `kiosk-agent run` with its data
 * directory AND its log file on one small tmpfs, a simulated Evolis on TCP behind it. Jobs are
 * accepted, the disk is filled to ENOSPC while a card waits in the mouth and others are queued:
 * the agent stays up, refuses pushes (STORE_FULL), and once space is freed finishes every accepted
 * job, each with exactly one terminal status, with no restart.
 */
const STATION = "KIOSK-PS-101";
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("a full disk under the store and the log (real process, real tmpfs)", () => {
  it("stays up, refuses pushes while full, and finishes every accepted job after space is freed", async () => {
    const { dir, remove } = tempDir("kiosk-disk-full-");
    cleanups.push(remove);
    const disk = join(dir, "disk");
    mkdirSync(disk);
    mountTmpfs(disk, { sizeKb: 8192 });
    cleanups.push(() => unmount(disk));

    // Cards stay in the mouth until the test takes them.
    const printer = new VirtualEvolisPrinter({ takeAfterMs: null });
    const server = await TcpDeviceServer.start(printer);
    cleanups.push(() => server.close());
    const token = randomBytes(12).toString("hex");
    const emulator = new D1Emulator({ token });
    const { url } = await emulator.start();
    cleanups.push(() => emulator.stop());

    const configFile = join(dir, "config.json");
    const logFile = join(disk, "agent.log");
    writeFileSync(
      configFile,
      JSON.stringify({
        station: { id: STATION },
        d1: { url, token, allowInsecure: true, backoff: { initialMs: 50, maxMs: 200 }, resendAfterMs: 1000 },
        dataDir: join(disk, "data"),
        printer: { family: "evolis", link: "tcp", host: server.host, port: server.port, statusPollMs: 50 },
        production: { defaultCollectTimeoutSec: 300 },
        store: { minFreeMb: 1 },
        log: { level: "info", file: logFile },
      }),
    );
    const child: ChildProcess = spawn(
      process.execPath,
      ["bin/kiosk-agent.mjs", "run", "--config", configFile],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    });
    const alive = (check: () => boolean) => () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(
          `the agent exited (${child.exitCode ?? child.signalCode}); stderr: ${stderr.slice(-2000)}`,
        );
      }
      return check();
    };
    await until(
      alive(() => emulator.station(STATION) !== undefined),
      "the agent's hello",
      30_000,
    );

    const runId = randomBytes(3).toString("hex");
    const jobs = [1, 2, 3].map((i) => makeSampleJob(i, { station: STATION, runId }));
    for (const job of jobs) expect((await emulator.push(job)).result).toBe("accepted");
    const status = (id: string) => emulator.latest(id)?.details.status;
    await until(
      alive(() => presentedCount(printer) === 1),
      "the first card in the mouth",
      30_000,
    );

    // The disk fills up: the log and the store both hit ENOSPC. The cardholder takes the card.
    const filler = fill(join(disk, "filler"));
    cleanups.push(() => filler.free());
    printer.takeCardNow();

    // Still up: D1 gets a clear refusal, not silence and not INTERNAL.
    const refused = await emulator.push(makeSampleJob(9, { station: STATION, runId }));
    expect(refused).toMatchObject({ result: "refused", errorCode: "STORE_FULL" });
    // The taken card's DONE cannot be written: the store says so.
    await until(
      // The line lands on stderr, or in the log file while its last page still has room.
      alive(() => `${stderr}${readFileSync(logFile, "utf8")}`.includes("job store unavailable")),
      "the store fault reported",
      5_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; stderr: ${stderr.slice(-4000)}`);
    });
    expect(emulator.terminalCount(jobs[0]!.operationId)).toBe(0);

    filler.free();
    // Every accepted job ends, each exactly once; the next cards are taken as they come.
    await until(
      alive(() => {
        if (presentedCount(printer) > takenCount(printer)) printer.takeCardNow();
        return jobs.every((j) => status(j.operationId) === "CARD_PROD_DONE");
      }),
      "every accepted job DONE after space was freed",
      30_000,
    );
    for (const job of jobs) expect(emulator.terminalCount(job.operationId)).toBe(1);
    expect(emulator.violations).toEqual([]);
    // The refused job was never stored: D1 may push it again.
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  }, 90_000);
});

function presentedCount(printer: VirtualEvolisPrinter): number {
  return printer.cardsForRecord().filter((c) => c.outcome === "in-printer" || c.outcome === "taken").length;
}

function takenCount(printer: VirtualEvolisPrinter): number {
  return printer.cardsForRecord().filter((c) => c.outcome === "taken").length;
}
