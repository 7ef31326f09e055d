import { execFile, spawnSync } from "node:child_process";
import { once } from "node:events";
import { existsSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { readAudit } from "../../agent/audit/audit-log.js";
import { printerCommand } from "../../agent/cli/printer.js";
import type { PrinterState } from "../../agent/devices/printer-supervisor.js";
import { SAMPLE_STOCK } from "../../agent/jobs/sample-jobs.js";
import { createLogger } from "../../agent/log/logger.js";
import { pidFilePath, readPidFile } from "../../agent/util/pid-file.js";
import { VirtualEvolisPrinter } from "../../simulator/printer/virtual-evolis-printer.js";
import { PtyDevice } from "../../simulator/pty/pty-device.js";
import { type OpsRig, type OpsRigOptions, sampleJob, startOpsRig } from "./rig.js";
import { tempDir } from "./support.js";

const BIN = fileURLToPath(new URL("../../bin/kiosk-agent.mjs", import.meta.url));
const TOKEN = "printer-cli-test-token-0123456789";
/** The stock feeder 1 holds: the sample jobs' (agent/jobs/sample-jobs.ts). */
const STOCK = SAMPLE_STOCK;
const CLEAN_FIRST = /^clean: the ribbon must be out and the cleaning card in the feeder/;
const quiet = createLogger({ level: "silent" });

/** `kiosk-agent printer …` in this process, its lines kept. */
async function printer(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await printerCommand(argv, {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    env,
    logger: quiet,
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, "close");
  return port;
}

/** The TECHNICIAN rows of a data directory's audit trail, detail parsed. */
function technicianRows(dataDir: string): Array<Record<string, unknown>> {
  return readAudit(dataDir)
    .filter((r) => r.event === "TECHNICIAN")
    .map((r) => ({ errorCode: r.errorCode, ...(JSON.parse(r.detail ?? "{}") as Record<string, unknown>) }));
}

/** An agent with the virtual printer and its console on loopback, token known. */
async function agentRig(options: OpsRigOptions = {}): Promise<{ rig: OpsRig; url: string }> {
  const rig = await startOpsRig({
    ...options,
    config: {
      ...options.config,
      console: { enabled: true, port: 0, token: TOKEN },
      printer: { feeders: [{ id: "1", stock: STOCK }], ...options.config?.printer },
    },
  });
  const { url } = await rig.agent.console!.start();
  return { rig, url };
}

function untilState(rig: OpsRig, state: PrinterState): Promise<void> {
  const sup = rig.agent.supervisor;
  if (sup.status.state === state) return Promise.resolve();
  return new Promise((resolve) => {
    const check = (): void => {
      if (sup.status.state !== state) return;
      sup.off("change", check);
      resolve();
    };
    sup.on("change", check);
  });
}

async function api(url: string, path: string, init: RequestInit = {}) {
  const res = await fetch(`${url}${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${TOKEN}`, ...(init.headers as Record<string, string>) },
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const post = (body: unknown = {}): RequestInit => ({
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify(body),
});

describe("kiosk-agent printer through the running agent", () => {
  let rig: OpsRig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  it("info and counters: model, serial, firmware and the printer's counters; each run audited", async () => {
    const started = await agentRig();
    rig = started.rig;
    await rig.agent.ready();
    const auth = ["--url", started.url, "--token", TOKEN];

    const info = await printer(["info", ...auth, "--operator", "alice"]);
    expect(info.err).toBe("");
    expect(info.code).toBe(0);
    expect(info.out).toMatch(
      /^printer +Evolis KC200B \(simulated\) · serial SIM0000001 · firmware SIM-1\.0$/m,
    );
    expect(info.out).toMatch(/^ +serial:\/dev\/ttyVIRT0 · family evolis · feeders 1 · sides front, back/m);
    expect(info.out).toMatch(/^status +ready · card NONE/m);
    expect(info.out).toMatch(/^counters +cards inserted 0 · panels printed 0 · cleanings 0$/m);

    const counters = await printer(["counters", ...auth, "--json"], {});
    expect(counters.code).toBe(0);
    expect(JSON.parse(counters.out)).toEqual({
      ok: true,
      command: "counters",
      message: "counters read",
      counters: { cardsInserted: 0, panelsPrinted: 0, cleanings: 0 },
    });
    // The token may come from the environment, as for `status`.
    const fromEnv = await printer(["counters", "--url", started.url], { KIOSK_CONSOLE_TOKEN: TOKEN });
    expect(fromEnv.code).toBe(0);
    // With the agent's configuration file: its console's address and token, and the agent answers.
    const configFile = join(rig.dataDir, "agent-config.json");
    writeFileSync(
      configFile,
      JSON.stringify({
        station: { id: "KIOSK-PS-101" },
        d1: { url: "ws://127.0.0.1:9/", token: "unused-token", allowInsecure: true },
        dataDir: rig.dataDir,
        printer: { path: "/dev/ttyVIRT0" },
        console: { enabled: true, port: Number(new URL(started.url).port), token: TOKEN },
      }),
    );
    const viaConfig = await printer(["counters", "--config", configFile]);
    expect(viaConfig).toMatchObject({ code: 0, err: "" });

    expect(technicianRows(rig.dataDir)).toEqual([
      { errorCode: null, command: "info", result: "ok", via: "console", operator: "alice" },
      { errorCode: null, command: "counters", result: "ok", via: "console" },
      { errorCode: null, command: "counters", result: "ok", via: "console" },
      { errorCode: null, command: "counters", result: "ok", via: "console" },
    ]);
    // The supervisor held production for each and is idle again.
    expect(rig.agent.supervisor.status.state).toBe("idle");
  });

  it("test-card: the printer's test card, one TEST_CARD ledger movement, no counter mismatch", async () => {
    const started = await agentRig();
    rig = started.rig;
    const r = rig;
    await r.agent.ready();
    const run = await printer(["test-card", "--url", started.url, "--token", TOKEN, "--operator", "bob"]);
    expect(run.err).toBe("");
    expect(run.code).toBe(0);
    expect(run.out).toBe(`test card printed from feeder 1: one ${STOCK} blank used (ledger: TEST_CARD)`);

    const cards = r.printer.record;
    expect(cards).toHaveLength(1);
    expect(cards[0]).toMatchObject({ testCard: true, feeder: "1" });
    expect(r.printer.commandLog).toContain("St");

    const movements = r.agent.store.db
      .prepare("SELECT feeder, stock, kind, reason, quantity, operator FROM stock_ledger")
      .all();
    expect(movements).toEqual([
      { feeder: "1", stock: STOCK, kind: "spoiled", reason: "TEST_CARD", quantity: 1, operator: "bob" },
    ]);
    // The counter read after the command sees the card the ledger already counted.
    await vi.waitFor(() => expect(r.agent.store.stock.lastCounter()?.cardsInserted).toBe(1), {
      timeout: 5000,
    });
    expect(r.agent.store.stock.counterCheck()?.mismatch).toBe(0);

    // A feeder that is not configured: 400 BAD_FEEDER, nothing printed, audited.
    const bad = await printer(["test-card", "--url", started.url, "--token", TOKEN, "--feeder", "9"]);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/no feeder '9' in printer\.feeders \(1\) \(BAD_FEEDER\)/);
    const badApi = await api(started.url, "/api/printer/test-card", post({ feeder: "9" }));
    expect(badApi).toMatchObject({ status: 400, body: { ok: false, code: "BAD_FEEDER" } });
    expect(r.printer.record).toHaveLength(1);

    const rows = technicianRows(r.dataDir);
    expect(rows).toEqual([
      {
        errorCode: null,
        command: "test-card",
        result: "ok",
        via: "console",
        operator: "bob",
        feeder: "1",
        stock: STOCK,
      },
      { errorCode: "BAD_FEEDER", command: "test-card", result: "BAD_FEEDER", via: "console", feeder: "9" },
      { errorCode: "BAD_FEEDER", command: "test-card", result: "BAD_FEEDER", via: "console", feeder: "9" },
    ]);
  });

  it("clean: a NEED CLEANING stop holds until the cleaning cycle, then the printer is idle", async () => {
    // Every card fed needs a cleaning first: the first job's print is refused NEED CLEANING.
    const started = await agentRig({ printer: { cleaningRequiredAfterCards: 1 } });
    rig = started.rig;
    const r = rig;
    await r.agent.ready();
    // The refused card goes to the reject box before the technician starts (a card in the path
    // would make the printer refuse the cleaning: ERR CARD).
    const rejected = once(r.printer, "card-rejected");
    const job = sampleJob();
    await r.emulator.push(job);
    await r.emulator.waitFor(() => r.emulator.terminalCount(job.operationId) > 0, 10_000);
    await rejected;
    expect(r.emulator.latest(job.operationId)?.details).toEqual({
      status: "CARD_PROD_EXCEPTION",
      reason: "CLEANING_REQUIRED",
    });
    await untilState(r, "stopped");
    expect(r.agent.supervisor.status.reason).toBe("CLEANING_REQUIRED");
    const states: string[] = [];
    r.agent.supervisor.on("change", (s) => states.push(`${s.state}${s.reason ? `:${s.reason}` : ""}`));

    const idle = untilState(r, "idle");
    const clean = await printer(["clean", "--url", started.url, "--token", TOKEN, "--operator", "carol"]);
    expect(clean.err).toBe("");
    expect(clean.code).toBe(0);
    const lines = clean.out.split("\n");
    expect(lines[0]).toMatch(CLEAN_FIRST);
    expect(lines[1]).toBe(
      "cleaning cycle done: take the cleaning card out, put the ribbon back, close the cover",
    );
    expect(lines[2]).toMatch(/^counters +cards inserted 1 · panels printed 0 · cleanings 1$/);
    await idle;
    // The stop held until the cleaning: no idle before the technician's operation.
    expect(states[0]).toBe("busy:MAINTENANCE");
    expect(states.at(-1)).toBe("idle");
    expect(r.printer.state.cardsSinceCleaning).toBe(0);
    expect(technicianRows(r.dataDir)).toEqual([
      { errorCode: null, command: "clean", result: "ok", via: "console", operator: "carol" },
    ]);
  });

  it("a command during a card is refused PRINTER_BUSY (409); the card goes on undisturbed", async () => {
    // The cardholder takes the card only when the test says so: the card sits in the mouth.
    const started = await agentRig({ printer: { takeAfterMs: null } });
    rig = started.rig;
    const r = rig;
    await r.agent.ready();
    const presented = once(r.printer, "card-presented");
    const job = sampleJob();
    await r.emulator.push(job);
    await presented;
    expect(r.agent.supervisor.status.state).toBe("busy");
    const commandsBefore = r.printer.commandLog.length;

    const cli = await printer(["clean", "--url", started.url, "--token", TOKEN]);
    expect(cli.code).toBe(1);
    expect(cli.err).toMatch(
      /^kiosk-agent printer clean: a card is in production; try again between cards \(PRINTER_BUSY\)$/m,
    );
    const http = await api(started.url, "/api/printer/test-card", post({ operator: "dave" }));
    expect(http).toMatchObject({ status: 409, body: { ok: false, code: "PRINTER_BUSY" } });
    const info = await api(started.url, "/api/printer/info");
    expect(info).toMatchObject({ status: 409, body: { ok: false, code: "PRINTER_BUSY" } });
    // Not a command reached the printer for them, and the card is still in the mouth.
    expect(r.printer.commandLog.slice(commandsBefore).filter((c) => !/^R/.test(c))).toEqual([]);
    expect(r.printer.state.position).toBe("MOUTH");

    expect(r.printer.takeCardNow()).toBe(true);
    await r.emulator.waitFor(() => r.emulator.terminalCount(job.operationId) > 0, 10_000);
    expect(r.emulator.latest(job.operationId)?.details.status).toBe("CARD_PROD_DONE");
    expect(r.printer.record).toHaveLength(1);
    expect(r.agent.store.db.prepare("SELECT reason FROM stock_ledger").all()).toEqual([{ reason: null }]);
    expect(technicianRows(r.dataDir).map((x) => [x.command, x.result, x.operator])).toEqual([
      ["clean", "PRINTER_BUSY", undefined],
      ["test-card", "PRINTER_BUSY", "dave"],
      ["info", "PRINTER_BUSY", undefined],
    ]);
  });

  it("reset and eject; a printer fault is 502 with its code; an offline printer is 503", async () => {
    const started = await agentRig();
    rig = started.rig;
    const r = rig;
    await r.agent.ready();
    const auth = ["--url", started.url, "--token", TOKEN];
    const reset = await printer(["reset", ...auth]);
    expect(reset).toMatchObject({ code: 0, out: "printer reset; its settings were applied again" });
    expect(r.printer.commandLog).toContain("Srs");

    // Nothing in the printer to eject: the printer says NO CARD.
    const eject = await printer(["eject", ...auth]);
    expect(eject.code).toBe(1);
    expect(eject.err).toMatch(/\(NO_CARD\)$/);
    const ejectApi = await api(started.url, "/api/printer/eject", post());
    expect(ejectApi).toMatchObject({ status: 502, body: { ok: false, command: "eject", code: "NO_CARD" } });
    expect(technicianRows(r.dataDir).map((x) => [x.command, x.result, x.errorCode])).toEqual([
      ["reset", "ok", null],
      ["eject", "NO_CARD", "NO_CARD"],
      ["eject", "NO_CARD", "NO_CARD"],
    ]);
    await r.close();

    // A printer that is not there: offline (or still connecting), 503.
    const away = await agentRig({ config: { printer: { path: "/dev/ttyNOWHERE" } } });
    rig = away.rig;
    const offline = await api(away.url, "/api/printer/reset", post());
    expect(offline).toMatchObject({ status: 503, body: { ok: false, code: "PRINTER_OFFLINE" } });
    const cli = await printer(["counters", "--url", away.url, "--token", TOKEN]);
    expect(cli.code).toBe(1);
    expect(cli.err).toMatch(/\(PRINTER_OFFLINE\)$/);
  });

  it("the API: token, methods, JSON only, known commands, a sane operator", async () => {
    const started = await agentRig();
    rig = started.rig;
    await rig.agent.ready();
    const { url } = started;
    const noToken = await fetch(`${url}/api/printer/info`);
    expect(noToken.status).toBe(401);
    expect((await api(url, "/api/printer/clean")).status).toBe(405);
    expect((await api(url, "/api/printer/info", post())).status).toBe(405);
    expect(
      (
        await api(url, "/api/printer/clean", {
          method: "POST",
          body: "{}",
          headers: { "Content-Type": "text/plain" },
        })
      ).status,
    ).toBe(403);
    const foreign = await api(url, "/api/printer/clean", {
      ...post(),
      headers: { "Content-Type": "application/json", Origin: "http://evil.example" },
    });
    expect(foreign.status).toBe(403);
    expect((await api(url, "/api/printer/format-disk", post())).status).toBe(404);
    const badOperator = await api(url, "/api/printer/reset", post({ operator: "x".repeat(65) }));
    expect(badOperator).toMatchObject({ status: 400, body: { code: "BAD_REQUEST" } });
    const cardNumber = await api(url, "/api/printer/reset", post({ operator: "4111 1111 1111 1111" }));
    expect(cardNumber).toMatchObject({ status: 400, body: { code: "BAD_REQUEST" } });
    const feederElsewhere = await api(url, "/api/printer/reset", post({ feeder: "1" }));
    expect(feederElsewhere).toMatchObject({ status: 400, body: { code: "BAD_REQUEST" } });
    expect(rig.printer.commandLog).not.toContain("Srs");
    const wrongToken = await printer(["info", "--url", url, "--token", "not-the-token"]);
    expect(wrongToken.code).toBe(1);
    expect(wrongToken.err).toMatch(/refused the token \(401\)/);
  });

  it("the agent writes its pid file at start and removes it at stop", async () => {
    const started = await agentRig();
    rig = started.rig;
    expect(readPidFile(rig.dataDir)).toBe(process.pid);
    await rig.agent.stop();
    expect(existsSync(pidFilePath(rig.dataDir))).toBe(false);
  });

  it("works as a real command: bin/kiosk-agent.mjs printer info", async () => {
    const started = await agentRig();
    rig = started.rig;
    await rig.agent.ready();
    const result = await new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile(
        process.execPath,
        [BIN, "printer", "info", "--url", started.url, "--token", TOKEN],
        { timeout: 15_000 },
        (err, stdout) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout }),
      );
    });
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^printer +Evolis KC200B \(simulated\) · serial SIM0000001/m);
  });
});

describe("kiosk-agent printer standalone, on a pseudo-terminal, when no agent runs", () => {
  let device: VirtualEvolisPrinter;
  let pty: PtyDevice;
  let dir: { dir: string; remove: () => void };
  let link: string;
  let dataDir: string;
  let configFile: string;

  beforeAll(async () => {
    dir = tempDir("kiosk-printer-cli-");
    link = join(dir.dir, "ttyPRINTER");
    dataDir = join(dir.dir, "data");
    device = new VirtualEvolisPrinter({ takeAfterMs: 0 });
    pty = await PtyDevice.start(device, { linkPath: link });
    configFile = join(dir.dir, "config.json");
    writeFileSync(
      configFile,
      JSON.stringify({
        station: { id: "KIOSK-PS-101" },
        d1: { url: "ws://127.0.0.1:9/", token: "unused-token", allowInsecure: true },
        dataDir,
        printer: { link: "serial", path: link, feeders: [{ id: "1", stock: STOCK }] },
        // The console of an agent that is not running: nothing listens there.
        console: { enabled: true, port: await closedPort(), token: TOKEN },
      }),
    );
  });
  afterAll(async () => {
    await pty.close();
    dir.remove();
  });

  it("no agent answers: opens the printer itself (OS serial binding), runs, audits, records the test card", async () => {
    const info = await printer(["info", "--config", configFile]);
    expect(info.code).toBe(0);
    expect(info.err).toMatch(
      new RegExp(
        `^kiosk-agent printer: nothing answers at http://127\\.0\\.0\\.1:\\d+; running standalone on serial:${link}$`,
      ),
    );
    expect(info.out).toMatch(
      /^printer +Evolis KC200B \(simulated\) · serial SIM0000001 · firmware SIM-1\.0$/m,
    );

    const testCard = await printer(["test-card", "--config", configFile, "--operator", "erin", "--json"]);
    expect(testCard.code).toBe(0);
    expect(JSON.parse(testCard.out)).toMatchObject({
      ok: true,
      command: "test-card",
      feeder: "1",
      stock: STOCK,
    });
    expect(device.record.at(-1)).toMatchObject({ testCard: true });

    const clean = await printer(["clean", "--config", configFile]);
    expect(clean.code).toBe(0);
    expect(clean.out.split("\n")[0]).toMatch(CLEAN_FIRST);

    expect(technicianRows(dataDir)).toEqual([
      { errorCode: null, command: "info", result: "ok", via: "standalone" },
      {
        errorCode: null,
        command: "test-card",
        result: "ok",
        via: "standalone",
        operator: "erin",
        feeder: "1",
        stock: STOCK,
      },
      { errorCode: null, command: "clean", result: "ok", via: "standalone" },
    ]);
    const ledger = readAudit(dataDir).filter((x) => x.event === "STOCK");
    expect(ledger.map((x) => [x.reason, JSON.parse(x.detail!).operator])).toEqual([["TEST_CARD", "erin"]]);
  });

  it("refuses while a live agent's pid file is there; proceeds past a stale one", async () => {
    const commands = device.commandLog.length;
    writeFileSync(pidFilePath(dataDir), `${process.pid}\n`);
    const refused = await printer(["reset", "--config", configFile]);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(
      new RegExp(
        `an agent is running \\(pid ${process.pid}, .*agent\\.pid\\) and holds the printer, but nothing answers at`,
      ),
    );
    expect(device.commandLog.length).toBe(commands);

    // A process that has ended: its pid file is stale.
    const gone = spawnSync(process.execPath, ["-e", ""]).pid;
    writeFileSync(pidFilePath(dataDir), `${gone}\n`);
    const ran = await printer(["reset", "--config", configFile]);
    expect(ran.code).toBe(0);
    expect(ran.err).toMatch(new RegExp(`\\(stale pid file: process ${gone} is gone\\)$`));
    expect(device.commandLog).toContain("Srs");
  });

  it("--link usb --path: a printer without a configuration (the pty as a USB device file)", async () => {
    const other = join(dir.dir, "other-data");
    const counters = await printer(["counters", "--link", "usb", "--path", link, "--data-dir", other]);
    expect(counters.err).toBe(`kiosk-agent printer: running standalone on usb:${link}`);
    expect(counters.code).toBe(0);
    expect(counters.out).toMatch(/^counters +cards inserted 1 · panels printed 1 · cleanings 1$/);
    expect(technicianRows(other)).toEqual([
      { errorCode: null, command: "counters", result: "ok", via: "standalone" },
    ]);
  });

  it("usage errors exit 2", async () => {
    expect((await printer([])).code).toBe(2);
    expect((await printer(["format-disk"])).code).toBe(2);
    expect((await printer(["info", "extra"])).code).toBe(2);
    expect((await printer(["reset", "--feeder", "1", "--config", configFile])).code).toBe(2);
    expect((await printer(["info", "--link", "usb", "--path", link])).code).toBe(2);
    expect((await printer(["info", "--link", "usb", "--data-dir", dataDir])).code).toBe(2);
    expect((await printer(["info", "--config", configFile, "--link", "usb"])).code).toBe(2);
    expect((await printer(["info", "--operator", "", "--config", configFile])).code).toBe(2);
    expect((await printer(["info", "--url", "http://127.0.0.1:1"])).code).toBe(2);
    const help = await printer(["--help"]);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/^Usage: kiosk-agent printer <command>/);
    expect(help.out).toMatch(/Exit codes:/);
  });
});
