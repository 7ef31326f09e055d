import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { makeSampleJob } from "../../agent/jobs/sample-jobs.js";
import { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import { VirtualEvolisPrinter } from "../../simulator/printer/virtual-evolis-printer.js";
import { PtyDevice } from "../../simulator/pty/pty-device.js";
import { TcpDeviceServer } from "../../simulator/tcp/tcp-device-server.js";
import { tempDir } from "../ops/support.js";

/**
 * `kiosk-agent run` — the real service in its own process, on the OS — produces a card through
 * each link a real Evolis has: the USB printer-class device file (a pseudo-terminal standing in for
 * /dev/usb/lp0, opened with one read-write descriptor) and TCP on loopback. The simulated Evolis
 * sits behind the link, in this process; nothing of the agent is swapped.
 */
const ENTRY = fileURLToPath(new URL("../../bin/kiosk-agent.mjs", import.meta.url));
const STATION = "KIOSK-PS-101";

let cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

async function runAgentThrough(printerConfig: Record<string, unknown>) {
  const { dir, remove } = tempDir("kiosk-link-");
  cleanups.push(remove);
  const token = randomBytes(12).toString("hex");
  const emulator = new D1Emulator({ token });
  const { url } = await emulator.start();
  cleanups.push(() => emulator.stop());
  const configFile = join(dir, "config.json");
  writeFileSync(
    configFile,
    JSON.stringify({
      station: { id: STATION },
      d1: { url, token, allowInsecure: true, backoff: { initialMs: 50, maxMs: 200 } },
      dataDir: join(dir, "data"),
      printer: {
        family: "evolis",
        ...printerConfig,
        statusPollMs: 50,
        reopen: { initialMs: 50, maxMs: 200 },
      },
      log: { level: "info", file: join(dir, "agent.log") },
    }),
  );
  const child: ChildProcess = spawn(process.execPath, [ENTRY, "run", "--config", configFile], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  cleanups.push(async () => {
    if (child.exitCode === null) child.kill("SIGKILL");
    await exited;
  });
  await emulator.waitForConnection(STATION, 30_000).catch((err: Error) => {
    throw new Error(`${err.message}; agent stderr: ${stderr}`);
  });
  const job = makeSampleJob(1, { station: STATION, runId: randomBytes(3).toString("hex") });
  await emulator.push(job, { station: STATION });
  await emulator.waitFor(() => emulator.latest(job.operationId)?.details.status === "CARD_PROD_DONE", 30_000);
  child.kill("SIGTERM");
  expect(await exited).toBe(0);
  return { statuses: emulator.operations(job.operationId).map((o) => o.details.status), job };
}

describe("kiosk-agent run through each printer link, the simulated Evolis behind it", () => {
  it("printer.link usb: a device file standing in for /dev/usb/lp0", async () => {
    const printer = new VirtualEvolisPrinter({ takeAfterMs: 50 });
    const { dir, remove } = tempDir("kiosk-lp-");
    cleanups.push(remove);
    const pty = await PtyDevice.start(printer, { linkPath: join(dir, "lp0") });
    cleanups.push(() => pty.close());
    const { statuses } = await runAgentThrough({ link: "usb", path: pty.path });
    expect(statuses).toEqual(["CARD_PROD_READY", "CARD_PROD_DONE"]);
    expect(printer.cardsForRecord().map((c) => c.outcome)).toEqual(["taken"]);
    expect(printer.record[0]!.frontInkDots).toBeGreaterThan(1000);
    // The kiosk start-up settings went first, as the record says.
    expect(printer.commandLog.slice(0, 7)).toEqual([
      "Pem;2",
      "Pcim;F",
      "Pcem;I",
      "Psmgr;2",
      "Pneab;E",
      "Pcrm;D",
      "Pbc;A;D",
    ]);
  }, 60_000);

  it("printer.link tcp: a network printer on loopback", async () => {
    const printer = new VirtualEvolisPrinter({ takeAfterMs: 50 });
    const server = await TcpDeviceServer.start(printer);
    cleanups.push(() => server.close());
    const { statuses } = await runAgentThrough({ link: "tcp", host: server.host, port: server.port });
    expect(statuses).toEqual(["CARD_PROD_READY", "CARD_PROD_DONE"]);
    expect(printer.cardsForRecord().map((c) => c.outcome)).toEqual(["taken"]);
    expect(server.stats.connections).toBeGreaterThanOrEqual(1);
  }, 60_000);
});
