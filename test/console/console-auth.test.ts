import { request } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { parseConfig } from "../../agent/config/load.js";
import { ConsoleServer } from "../../agent/console/server.js";
import { createMetrics } from "../../agent/health/metrics.js";
import { HealthServer } from "../../agent/health/server.js";
import { ManualClock, systemClock } from "../../agent/util/clock.js";
import { type Rig, STATION, startRig } from "../support/e2e.js";
import { CONSOLE_TOKEN, type ConsoleRig, http, startConsoleRig } from "./support.js";

/**
 * Issue 14, finding 8 (docs/console.md, "Sign-in and sessions"): the token is taken in the URL only
 * on `GET /`, which opens a server-side session and redirects to a clean URL; sessions expire; wrong
 * tokens are rate-limited per address and logged; a foreign `Host` is refused on the console and the
 * health server (DNS rebinding); a non-loopback `console.host` is refused by config validation.
 */

const BEARER = { Authorization: `Bearer ${CONSOLE_TOKEN}` };
const MIN = 60_000;

function cookieOf(answer: { headers: Record<string, string | string[] | undefined> }): string {
  const raw = answer.headers["set-cookie"];
  return String(Array.isArray(raw) ? raw[0] : raw).split(";")[0]!;
}

describe("console sign-in, sessions and rate limit", () => {
  let c: ConsoleRig | undefined;
  let rig: Rig | undefined;
  const servers: Array<{ stop(): Promise<void> }> = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.stop();
    await c?.close();
    await rig?.close();
    c = undefined;
    rig = undefined;
  });

  /** A console on the e2e rig's agent with a clock the test moves. */
  async function consoleWithClock(): Promise<{ url: string; clock: ManualClock; rig: Rig }> {
    rig = await startRig();
    const clock = new ManualClock();
    const server = new ConsoleServer({
      agent: rig.agent,
      logger: rig.logs.logger,
      clock,
      port: 0,
      token: CONSOLE_TOKEN,
    });
    servers.push(server);
    const { url } = await server.start();
    return { url, clock, rig };
  }

  it("takes the token in the URL only on GET /: not on the API, the stream or a POST", async () => {
    c = await startConsoleRig();
    const q = `?token=${CONSOLE_TOKEN}`;
    expect((await http(`${c.url}/api/status${q}`)).status).toBe(401);
    expect((await http(`${c.url}/api/events${q}`)).status).toBe(401);
    expect((await http(`${c.url}/api/printer/info${q}`)).status).toBe(401);
    const post = await http(`${c.url}/api/sim/fault${q}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: "card-jam" }),
    });
    expect(post.status).toBe(401);
    expect(c.controls.injected()).toEqual([]);
    // The same requests with the header work: the CLIs (status, printer) send it.
    expect((await http(`${c.url}/api/status`, { headers: BEARER })).status).toBe(200);
    // A header other than Authorization is no longer a credential.
    expect(
      (await http(`${c.url}/api/status`, { headers: { "X-Console-Token": CONSOLE_TOKEN } })).status,
    ).toBe(401);
  });

  it("GET /?token= opens a server-side session: 303 to a clean URL, a random HttpOnly cookie, not the token", async () => {
    c = await startConsoleRig();
    const login = await http(`${c.url}/?token=${CONSOLE_TOKEN}`);
    expect(login.status).toBe(303);
    expect(login.headers.location).toBe("/");
    const setCookie = String(login.headers["set-cookie"]);
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    expect(setCookie).toMatch(/Path=\//);
    expect(setCookie).toMatch(/Max-Age=28800/);
    expect(setCookie).not.toContain(CONSOLE_TOKEN);
    // A session, not a digest of the token: every sign-in gets another cookie.
    const again = await http(`${c.url}/?token=${CONSOLE_TOKEN}`);
    expect(cookieOf(again)).not.toBe(cookieOf(login));
    for (const cookie of [cookieOf(login), cookieOf(again)]) {
      expect((await http(`${c.url}/`, { headers: { Cookie: cookie } })).status).toBe(200);
      expect((await http(`${c.url}/api/status`, { headers: { Cookie: cookie } })).status).toBe(200);
    }
    expect((await http(`${c.url}/api/status`, { headers: { Cookie: "kiosk_console=forged" } })).status).toBe(
      401,
    );
  });

  it("a session ends after 15 min idle, or 8 h after sign-in however busy; its live stream ends with it", async () => {
    const { url, clock } = await consoleWithClock();
    const login = await http(`${url}/?token=${CONSOLE_TOKEN}`);
    const cookie = { Cookie: cookieOf(login) };
    const status = async () => (await http(`${url}/api/status`, { headers: cookie })).status;
    // Idle: each request starts the 15 minutes again.
    clock.advance(14 * MIN);
    expect(await status()).toBe(200);
    clock.advance(14 * MIN);
    expect(await status()).toBe(200);
    clock.advance(15 * MIN + 1_000);
    expect(await status()).toBe(401);

    // Absolute: a session used every 10 minutes still ends 8 h after its sign-in.
    const busy = { Cookie: cookieOf(await http(`${url}/?token=${CONSOLE_TOKEN}`)) };
    for (let t = 0; t < 8 * 60 - 10; t += 10) {
      clock.advance(10 * MIN);
      expect((await http(`${url}/api/status`, { headers: busy })).status, `at ${t + 10} min`).toBe(200);
    }
    clock.advance(10 * MIN + 1_000);
    expect((await http(`${url}/api/status`, { headers: busy })).status).toBe(401);

    // A stream opened with a session ends once the session expires (at the next keep-alive).
    const live = { Cookie: cookieOf(await http(`${url}/?token=${CONSOLE_TOKEN}`)) };
    const ended = new Promise<string>((resolve, reject) => {
      const req = request(`${url}/api/events`, { headers: live }, (res) => {
        expect(res.statusCode).toBe(200);
        res.resume();
        res.on("end", () => resolve("ended"));
      });
      req.on("error", reject);
      req.end();
    });
    await new Promise((r) => setTimeout(r, 50));
    clock.advance(16 * MIN);
    expect(await ended).toBe("ended");
  });

  it("wrong tokens: each is logged without its value; after 5 the address is locked out, doubling", async () => {
    const { url, clock, rig: r } = await consoleWithClock();
    const wrong = { Authorization: "Bearer not-the-token-0000000000" };
    for (let i = 1; i <= 5; i++)
      expect((await http(`${url}/api/status`, { headers: wrong })).status).toBe(401);
    // Locked for 1 s: even the right token is not checked, from this address.
    const locked = await http(`${url}/api/status`, { headers: BEARER });
    expect(locked.status).toBe(429);
    expect(locked.headers["retry-after"]).toBe("1");
    expect((await http(`${url}/?token=${CONSOLE_TOKEN}`)).status).toBe(429);
    clock.advance(1_000);
    // The 6th wrong one locks for 2 s.
    expect((await http(`${url}/api/status`, { headers: wrong })).status).toBe(401);
    expect((await http(`${url}/api/status`, { headers: BEARER })).headers["retry-after"]).toBe("2");
    clock.advance(2_000);
    // A wrong token in the sign-in link counts too.
    expect((await http(`${url}/?token=wrong-token-in-the-link`)).status).toBe(401);
    expect((await http(`${url}/api/status`, { headers: BEARER })).headers["retry-after"]).toBe("4");
    clock.advance(4_000);
    // The right token gets in and clears the count.
    expect((await http(`${url}/api/status`, { headers: BEARER })).status).toBe(200);
    expect((await http(`${url}/api/status`, { headers: wrong })).status).toBe(401);
    expect((await http(`${url}/api/status`, { headers: BEARER })).status).toBe(200);

    const lines = r.logs.lines.map((l) => JSON.parse(l));
    const failures = lines.filter((l) => l.msg === "console: wrong token");
    expect(failures).toHaveLength(8);
    expect(failures[0]).toMatchObject({ level: 40, via: "bearer", failures: 1, remote: expect.any(String) });
    expect(failures[4]).toMatchObject({ failures: 5, lockedForMs: 1_000 });
    expect(failures[6]).toMatchObject({ via: "query", failures: 7, lockedForMs: 4_000 });
    expect(lines.some((l) => /locked out/.test(l.msg))).toBe(true);
    const text = r.logs.text();
    for (const secret of [CONSOLE_TOKEN, "not-the-token-0000000000", "wrong-token-in-the-link"]) {
      expect(text).not.toContain(secret);
    }
  });

  it("a session cookie still works while the address is locked out (no token is being guessed)", async () => {
    const { url } = await consoleWithClock();
    const cookie = { Cookie: cookieOf(await http(`${url}/?token=${CONSOLE_TOKEN}`)) };
    const wrong = { Authorization: "Bearer not-the-token-0000000000" };
    for (let i = 0; i < 6; i++) await http(`${url}/api/status`, { headers: wrong });
    expect((await http(`${url}/api/status`, { headers: BEARER })).status).toBe(429);
    expect((await http(`${url}/api/status`, { headers: cookie })).status).toBe(200);
  });
});

describe("Host allow-list (DNS rebinding)", () => {
  let c: ConsoleRig | undefined;
  const servers: Array<{ stop(): Promise<void> }> = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.stop();
    await c?.close();
    c = undefined;
  });

  it("the console serves 127.0.0.1, localhost, [::1] and configured names, and refuses any other Host", async () => {
    c = await startConsoleRig();
    const port = new URL(c.url).port;
    const withHost = (host: string) => http(`${c!.url}/api/status`, { headers: { ...BEARER, Host: host } });
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, `LOCALHOST:${port}`]) {
      expect((await withHost(host)).status, host).toBe(200);
    }
    for (const host of [
      `evil.example:${port}`,
      "evil.example",
      `127.0.0.1.evil.example:${port}`,
      `[::1]x:${port}`,
    ]) {
      const answer = await withHost(host);
      expect(answer.status, host).toBe(421);
      expect(answer.body).not.toContain("station");
    }
    // The sign-in link through a rebound name opens no session.
    const login = await http(`${c.url}/?token=${CONSOLE_TOKEN}`, {
      headers: { Host: `evil.example:${port}` },
    });
    expect(login.status).toBe(421);
    expect(login.headers["set-cookie"]).toBeUndefined();
    expect(c.rig.logs.lines.some((l) => l.includes("DNS rebinding"))).toBe(true);

    const named = new ConsoleServer({
      agent: c.rig.agent,
      logger: c.rig.logs.logger,
      port: 0,
      token: CONSOLE_TOKEN,
      allowedHosts: ["kiosk-console.local"],
    });
    servers.push(named);
    const { url } = await named.start();
    const namedPort = new URL(url).port;
    const ask = (host: string) => http(`${url}/api/status`, { headers: { ...BEARER, Host: host } });
    expect((await ask(`kiosk-console.local:${namedPort}`)).status).toBe(200);
    expect((await ask(`other.local:${namedPort}`)).status).toBe(421);
  });

  it("the health server answers only to loopback Host names (and configured ones)", async () => {
    const rig = await startRig();
    try {
      const metrics = createMetrics(rig.agent, { clock: systemClock, station: STATION, version: "test" });
      const health = new HealthServer({
        port: 0,
        registry: metrics.registry,
        readiness: () => ({ ready: true, reasons: [], d1: "up", printer: { state: "idle" } }),
        logger: rig.logs.logger,
        version: "test",
        allowedHosts: ["prometheus-tunnel.local"],
      });
      servers.push({
        stop: async () => {
          await health.stop();
          metrics.dispose();
        },
      });
      const { port } = await health.start();
      const get = (path: string, host: string) =>
        http(`http://127.0.0.1:${port}${path}`, { headers: { Host: host } });
      for (const host of [
        `127.0.0.1:${port}`,
        `localhost:${port}`,
        `[::1]:${port}`,
        "prometheus-tunnel.local:19464",
      ]) {
        expect((await get("/healthz", host)).status, host).toBe(200);
      }
      for (const path of ["/healthz", "/readyz", "/metrics"]) {
        const answer = await get(path, `evil.example:${port}`);
        expect(answer.status, path).toBe(421);
        expect(answer.body).not.toMatch(/kiosk_|version/);
      }
    } finally {
      await rig.close();
    }
  });
});

describe("console.host", () => {
  const base = {
    station: { id: STATION },
    d1: { url: "wss://d1.example/agent", token: "token-123456" },
    dataDir: "/var/lib/kiosk-agent",
    printer: { path: "/dev/usb/lp0" },
  };
  const withHost = (host: string) => parseConfig({ ...base, console: { enabled: true, host } });

  it("is loopback only: a network address is refused in one clear line, since the console has no TLS", () => {
    for (const host of ["127.0.0.1", "127.0.0.2", "::1", "localhost"]) {
      expect(withHost(host).console.host, host).toBe(host);
    }
    for (const host of ["0.0.0.0", "::", "192.168.1.20", "kiosk-42.branch.example"]) {
      let message = "";
      try {
        withHost(host);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message, host).toMatch(
        new RegExp(
          `console\\.host: ${host.replaceAll(".", "\\.")} is not a loopback address: the console has no TLS`,
        ),
      );
    }
  });
});
