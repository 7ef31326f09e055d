import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { autoDetect } from "@serialport/bindings-cpp";
import type { BindingInterface } from "@serialport/bindings-interface";
import { afterEach, describe, expect, it } from "vitest";
import { KioskAgent } from "../../agent/agent.js";
import { d1EmulatorCommand } from "../../agent/cli/d1-emulator.js";
import { parseFaultSpec } from "../../agent/cli/simulator.js";
import { parseConfig } from "../../agent/config/load.js";
import { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import { attachVirtualPrinter } from "../../simulator/printer/index.js";
import { VirtualSerialBinding } from "../../simulator/serial/virtual-binding.js";
import { job, STATION } from "../support/e2e.js";
import { captureLogs } from "../support/log-capture.js";

const BIN = fileURLToPath(new URL("../../bin/kiosk-agent.mjs", import.meta.url));

function agentFor(options: { url: string; token: string; printerPath: string; binding: BindingInterface }) {
  const config = parseConfig({
    station: { id: STATION },
    d1: {
      url: options.url,
      token: options.token,
      allowInsecure: true,
      backoff: { initialMs: 20, maxMs: 200 },
    },
    dataDir: mkdtempSync(join(tmpdir(), "kiosk-cli-")),
    printer: {
      path: options.printerPath,
      statusPollMs: 20,
      reopen: { initialMs: 20, maxMs: 200 },
      timeouts: { defaultMs: 3000, printMs: 5000, magMs: 3000 },
    },
    production: { defaultCollectTimeoutSec: 30, holdWhileStoppedSec: 5 },
  });
  return new KioskAgent(config, { logger: captureLogs("warn").logger, serialBinding: options.binding });
}

/** Collects a child's stdout lines and resolves waits on them as they arrive. */
class Lines {
  readonly all: string[] = [];
  private partial = "";
  private waiters: Array<{ re: RegExp; resolve: (line: string) => void }> = [];

  constructor(stream: NodeJS.ReadableStream) {
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      const parts = (this.partial + chunk).split("\n");
      this.partial = parts.pop() ?? "";
      for (const line of parts) this.push(line);
    });
  }

  push(line: string): void {
    this.all.push(line);
    for (const w of [...this.waiters]) {
      if (!w.re.test(line)) continue;
      this.waiters.splice(this.waiters.indexOf(w), 1);
      w.resolve(line);
    }
  }

  next(re: RegExp): Promise<string> {
    const seen = this.all.find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.push({ re, resolve }));
  }
}

describe("kiosk-agent simulator: the virtual printer on a pseudo-terminal", () => {
  let child: ChildProcessWithoutNullStreams | undefined;
  let agent: KioskAgent | undefined;
  let emulator: D1Emulator | undefined;
  afterEach(async () => {
    await agent?.stop();
    await emulator?.stop();
    if (child && child.exitCode === null) child.kill("SIGTERM");
  });

  it("a separately started agent prints on it through the OS serial port; faults come from stdin", async () => {
    const link = join(mkdtempSync(join(tmpdir(), "kiosk-sim-")), "ttyPRINTER");
    child = spawn(
      process.execPath,
      [BIN, "simulator", "--link", link, "--take-after-ms", "0", "--print-ms", "0", "--mag-ms", "0"],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    const out = new Lines(child.stdout);
    const exited = new Promise<number>((resolve) => child!.once("exit", (code) => resolve(code ?? -1)));
    expect(await out.next(/^virtual Evolis printer ready on /)).toBe(
      `virtual Evolis printer ready on ${link}`,
    );
    expect(await out.next(/agent configuration/)).toContain(`"link": "usb", "path": "${link}"`);

    const token = randomBytes(12).toString("hex");
    emulator = new D1Emulator({ token });
    const { url } = await emulator.start();
    agent = agentFor({ url, token, printerPath: link, binding: autoDetect() });
    agent.start();
    await emulator.waitForConnection(STATION, 10_000);
    await agent.ready();

    const good = job();
    await emulator.push(good, { station: STATION });
    await emulator.waitFor(() => emulator!.terminalCount(good.operationId as string) > 0, 15_000);
    expect(emulator.latest(good.operationId as string)?.details.status).toBe("CARD_PROD_DONE");
    await out.next(/card #1 \d{6}\*+\d{4} taken by the cardholder/);

    child.stdin.write("fault card-jam\n");
    await out.next(/^fault card-jam armed/);
    const jammed = job();
    await emulator.push(jammed, { station: STATION });
    await emulator.waitFor(() => emulator!.terminalCount(jammed.operationId as string) > 0, 15_000);
    expect(emulator.latest(jammed.operationId as string)?.details).toEqual({
      status: "CARD_PROD_EXCEPTION",
      reason: "CARD_JAM",
    });

    child.stdin.write("quit\n");
    expect(await exited).toBe(0);
    expect(out.all).toContain("virtual printer stopped");
  });

  it("fault specs: NAME, NAME:COUNT, NAME:persistent", () => {
    expect(parseFaultSpec("card-jam")).toEqual({ name: "card-jam", options: {} });
    expect(parseFaultSpec("ribbon-out:3")).toEqual({ name: "ribbon-out", options: { count: 3 } });
    expect(parseFaultSpec("feeder-empty:persistent")).toEqual({
      name: "feeder-empty",
      options: { persistent: true },
    });
    expect(() => parseFaultSpec("meteor")).toThrow(/unknown fault/);
    expect(() => parseFaultSpec("card-jam:0")).toThrow(/count/);
  });
});

describe("kiosk-agent d1-emulator: push a job file to a separately running agent", () => {
  let agent: KioskAgent | undefined;
  afterEach(async () => {
    await agent?.stop();
  });

  it("pushes the file's jobs and samples once the station connects, lists what it reported, exits 0", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kiosk-d1cli-"));
    const jobsFile = join(dir, "jobs.json");
    const fileJob = job();
    writeFileSync(jobsFile, JSON.stringify([fileJob]));
    const record = join(dir, "record.jsonl");
    const token = randomBytes(12).toString("hex");
    const lines: string[] = [];
    let onListening!: (url: string) => void;
    const listening = new Promise<string>((resolve) => {
      onListening = resolve;
    });
    const io = {
      out: (line: string) => {
        lines.push(line);
        const m = /^D1 emulator listening on (ws:\S+)$/.exec(line);
        if (m) onListening(m[1]!);
      },
      err: (line: string) => lines.push(`ERR ${line}`),
      stopSignal: new Promise<void>(() => undefined),
    };
    const run = d1EmulatorCommand(
      [
        "--port",
        "0",
        "--token",
        token,
        "--jobs-file",
        jobsFile,
        "--sample",
        "1",
        "--record",
        record,
        "--exit-when-done",
        "--timeout-sec",
        "30",
      ],
      io,
    );
    const url = await listening;
    const binding = new VirtualSerialBinding();
    attachVirtualPrinter(binding, "/dev/ttyVIRT9", { takeAfterMs: 0 });
    agent = agentFor({ url, token, printerPath: "/dev/ttyVIRT9", binding });
    agent.start();

    expect(await run).toBe(0);
    const text = lines.join("\n");
    expect(text).toContain(`"token": "${token}"`);
    expect(text).toMatch(new RegExp(`station ${STATION} connected`));
    expect(text).toMatch(/reported: 2 operation\(s\)/);
    expect(text).toContain(`  ${fileJob.operationId}  CARD_PROD_DONE`);
    expect(lines.filter((l) => /^ {2}\S+ {2}CARD_PROD_DONE +SUCCESSFUL$/.test(l))).toHaveLength(2);
    expect(lines.some((l) => l.startsWith("ERR"))).toBe(false);
  });

  it("usage errors exit 2", async () => {
    const err: string[] = [];
    const io = { out: () => undefined, err: (l: string) => err.push(l), stopSignal: Promise.resolve() };
    expect(await d1EmulatorCommand(["--exit-when-done"], io)).toBe(2);
    expect(await d1EmulatorCommand(["--jobs-file", "/nonexistent/jobs.json"], io)).toBe(2);
    expect(await d1EmulatorCommand(["--port", "x"], io)).toBe(2);
    expect(err.join("\n")).toMatch(/Usage: kiosk-agent d1-emulator/);
  });
});
