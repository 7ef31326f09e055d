import { execFile } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { statusCommand } from "../../agent/cli/status.js";
import { job, STATION } from "../support/e2e.js";
import { findSecrets, secretsOf } from "../support/log-capture.js";
import { CONSOLE_TOKEN, type ConsoleRig, startConsoleRig } from "./support.js";

const BIN = fileURLToPath(new URL("../../bin/kiosk-agent.mjs", import.meta.url));

async function status(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await statusCommand(argv, { out: (l) => out.push(l), err: (l) => err.push(l), env });
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

const printed: string[] = [];
const pushedSecrets = new Set<string>();

describe("kiosk-agent status against a running agent", () => {
  let c: ConsoleRig;
  beforeEach(async () => {
    c = await startConsoleRig();
    await c.rig.agent.ready();
  });
  afterEach(async () => {
    await c.close();
  });
  afterAll(() => {
    expect(findSecrets(printed.join("\n"), [...pushedSecrets])).toEqual([]);
  });

  const push = async (j: Record<string, unknown>) => {
    for (const s of secretsOf(j)) pushedSecrets.add(s);
    await c.rig.emulator.push(j, { station: STATION });
    const id = j.operationId as string;
    await c.rig.emulator.waitFor(() => c.rig.emulator.terminalCount(id) > 0);
    return id;
  };

  it("prints the D1 link, the printer with its state, the queue and recent jobs; exit 0", async () => {
    const id = await push(job());
    const r = await status(["--url", c.url, "--token", CONSOLE_TOKEN]);
    printed.push(r.out);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain(`station ${STATION}`);
    expect(r.out).toMatch(/^D1 link +UP/m);
    expect(r.out).toMatch(/^DEVICE +STATE +REASON +DETAIL$/m);
    expect(r.out).toMatch(/^printer +idle +- +serial:\/dev\/ttyVIRT0/m);
    expect(r.out).toMatch(/^QUEUE +waiting 0 · in production 0/m);
    expect(r.out).toContain("DONE 1");
    expect(r.out).toContain(id.slice(0, 13));
    expect(r.out).toMatch(/\d{6}\*{6}\d{4} +DONE +CARD_PROD_DONE/);
    expect(r.out).toMatch(/^LAST ERRORS\n {2}\(none\)/m);
  });

  it("shows a failed job's reason among the recent jobs and the last errors", async () => {
    c.rig.printer.injectFault("card-jam");
    const id = await push(job());
    const r = await status(["--url", c.url, "--token", CONSOLE_TOKEN]);
    printed.push(r.out);
    expect(r.out).toMatch(/FAILED +CARD_PROD_EXCEPTION +CARD_JAM: card jam at step insert/);
    expect(r.out).toMatch(new RegExp(`job +CARD_JAM +card jam at step insert +${id.slice(0, 13)}`));
    expect(r.out).toMatch(/last fault CARD_JAM/);
  });

  it("--json prints the agent's answer; the token may come from the environment", async () => {
    const r = await status(["--url", c.url, "--json"], { KIOSK_CONSOLE_TOKEN: CONSOLE_TOKEN });
    expect(r.code).toBe(0);
    const s = JSON.parse(r.out);
    expect(s).toMatchObject({ version: 1, station: STATION, d1: { state: "up" } });
    expect(s.devices[0]).toMatchObject({ name: "printer", state: "idle" });
  });

  it("exits 3 with the reason when the D1 link is down", async () => {
    const down = once(c.rig.agent.link, "down");
    await c.rig.emulator.stop();
    await down;
    const r = await status(["--url", c.url, "--token", CONSOLE_TOKEN]);
    expect(r.code).toBe(3);
    expect(r.out).toMatch(/^D1 link +DOWN .*closed/m);
  });

  it("exits 1 on a wrong token or an unreachable agent, 2 on usage errors", async () => {
    const wrong = await status(["--url", c.url, "--token", "not-the-token"]);
    expect(wrong).toMatchObject({ code: 1, out: "" });
    expect(wrong.err).toMatch(/refused the token \(401\)/);
    const port = await closedPort();
    const away = await status(["--url", `http://127.0.0.1:${port}`, "--token", CONSOLE_TOKEN]);
    expect(away.code).toBe(1);
    expect(away.err).toMatch(
      /cannot reach the agent's console at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/,
    );
    expect((await status(["--bogus"])).code).toBe(2);
    expect((await status(["--url", c.url])).code).toBe(2);
    const help = await status(["--help"]);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/^Usage: kiosk-agent status/);
    expect(help.out).toMatch(/Exit codes:/);
  });

  it("works as a real command: bin/kiosk-agent.mjs status", async () => {
    const result = await new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile(
        process.execPath,
        [BIN, "status", "--url", c.url, "--token", CONSOLE_TOKEN],
        { timeout: 15_000 },
        (err, stdout) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout }),
      );
    });
    printed.push(result.stdout);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^printer +idle/m);
  });
});
