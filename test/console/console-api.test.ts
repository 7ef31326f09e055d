import { once } from "node:events";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ConsoleSnapshot } from "../../agent/console/types.js";
import { job, STATION } from "../support/e2e.js";
import { findSecrets, secretsOf } from "../support/log-capture.js";
import {
  CONSOLE_TOKEN,
  type ConsoleRig,
  http,
  jsonStrings,
  StatusStream,
  startConsoleRig,
} from "./support.js";

const BEARER = { Authorization: `Bearer ${CONSOLE_TOKEN}` };
const JSON_POST = { ...BEARER, "Content-Type": "application/json" };

/** Everything the console served in this file, scanned for the pushed jobs' card data at the end. */
const served: string[] = [];
const pushedSecrets = new Set<string>();

describe("local console API", () => {
  let c: ConsoleRig;
  beforeEach(async () => {
    c = await startConsoleRig({ makeJob: () => job() });
  });
  afterEach(async () => {
    for (const j of c.sampleJobs) for (const s of secretsOf(j)) pushedSecrets.add(s);
    await c.close();
  });
  afterAll(() => {
    expect(served.length).toBeGreaterThan(0);
    const leaks = findSecrets(served.join("\n"), [...pushedSecrets]);
    expect(leaks).toEqual([]);
  });

  const push = async (j: Record<string, unknown>) => {
    for (const s of secretsOf(j)) pushedSecrets.add(s);
    return c.rig.emulator.push(j, { station: STATION });
  };
  const get = async (path: string, headers: Record<string, string> = BEARER) => {
    const answer = await http(`${c.url}${path}`, { headers });
    if (answer.status === 200 && String(answer.headers["content-type"]).startsWith("application/json")) {
      served.push(jsonStrings(answer.body));
    } else if (answer.status === 200 && String(answer.headers["content-type"]).startsWith("text/html")) {
      served.push(answer.body);
    }
    return answer;
  };

  it("answers 401 to every route without the token, or with a wrong one", async () => {
    for (const path of ["/", "/api/status", "/api/events", "/api/preview/1/front.png", "/nowhere"]) {
      expect((await http(`${c.url}${path}`)).status, path).toBe(401);
      expect((await http(`${c.url}${path}?token=wrong`)).status).toBe(401);
    }
    // Fewer than 5 wrong tokens: past that the address is locked out (test/console/console-auth.test.ts).
    for (const path of ["/", "/api/status", "/api/events"]) {
      expect(
        (await http(`${c.url}${path}`, { headers: { Authorization: "Bearer wrong-token" } })).status,
      ).toBe(401);
    }
    const api = await http(`${c.url}/api/status`);
    expect(api.headers["www-authenticate"]).toMatch(/^Bearer/);
    expect(JSON.parse(api.body)).toEqual({ error: expect.stringMatching(/unauthorized/) });
    const post = await http(`${c.url}/api/sim/fault`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: "card-jam" }),
    });
    expect(post.status).toBe(401);
    expect(c.controls.injected()).toEqual([]);
  });

  it("takes the token in a header, or once in ?token= which becomes an HttpOnly session cookie", async () => {
    expect((await get("/api/status")).status).toBe(200);

    const login = await http(`${c.url}/?token=${CONSOLE_TOKEN}`);
    expect(login.status).toBe(303);
    expect(login.headers.location).toBe("/");
    const setCookie = String(login.headers["set-cookie"]);
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    expect(setCookie).not.toContain(CONSOLE_TOKEN);
    const cookie = setCookie.split(";")[0]!;

    const page = await get("/", { Cookie: cookie });
    expect(page.status).toBe(200);
    expect(page.body).toContain("kiosk-agent console");
    expect(page.headers["content-security-policy"]).toMatch(/script-src 'sha256-/);
    expect((await get("/api/status", { Cookie: cookie })).status).toBe(200);
    expect((await http(`${c.url}/api/status`, { headers: { Cookie: "kiosk_console=forged" } })).status).toBe(
      401,
    );
  });

  it("reports station, D1 link, the printer, the queue and recent jobs with masked PANs", async () => {
    await c.rig.agent.ready();
    const j = job();
    const id = j.operationId as string;
    await push(j);
    await c.rig.emulator.waitFor(() => c.rig.emulator.terminalCount(id) > 0);
    const s = JSON.parse((await get("/api/status")).body) as ConsoleSnapshot;
    expect(s).toMatchObject({ version: 1, station: STATION, mode: "simulator", d1: { state: "up" } });
    expect(s.devices).toEqual([
      expect.objectContaining({
        name: "printer",
        kind: "printer",
        path: "serial:/dev/ttyVIRT0",
        state: "idle",
        identity: { model: "Evolis KC200B (simulated)", serial: "SIM0000001", firmware: "SIM-1.0" },
      }),
    ]);
    expect(s.queue.counts.DONE).toBe(1);
    expect(s.recentJobs[0]).toMatchObject({
      operationId: id,
      state: "DONE",
      d1Status: "CARD_PROD_DONE",
      maskedPan: expect.stringMatching(/^\d{6}\*+\d{4}$/),
    });
    expect(s.simulator?.faults).toContain("card-jam");
  });

  it("pushes a status event over SSE when a job's status changes, without a reload", async () => {
    await c.rig.agent.ready();
    const stream = await StatusStream.open(c.url, BEARER);
    try {
      const first = await stream.next(() => true);
      expect(first.recentJobs).toEqual([]);
      const j = job();
      const id = j.operationId as string;
      await push(j);
      const ready = await stream.next((s) => s.recentJobs.some((r) => r.operationId === id));
      expect(ready.queue.counts.DONE).toBe(0);
      const done = await stream.next((s) =>
        s.recentJobs.some((r) => r.operationId === id && r.d1Status === "CARD_PROD_DONE"),
      );
      expect(done.queue.counts.DONE).toBe(1);
      // The preview of that card shows up on its own once it is drawn.
      const withPreview = await stream.next((s) => s.preview?.operationId === id);
      expect(withPreview.preview).toMatchObject({ serial: 1, outcome: "taken", sides: ["front", "back"] });
    } finally {
      stream.close();
      served.push(...stream.snapshots.map((s) => jsonStrings(JSON.stringify(s))));
    }
  });

  it("simulator buttons: inject card-jam, push a sample job, see CARD_PROD_EXCEPTION / CARD_JAM", async () => {
    await c.rig.agent.ready();
    const stream = await StatusStream.open(c.url, BEARER);
    try {
      const fault = await http(`${c.url}/api/sim/fault`, {
        method: "POST",
        headers: JSON_POST,
        body: JSON.stringify({ name: "card-jam" }),
      });
      expect(fault.status).toBe(200);
      await stream.next((s) => s.simulator?.injected.some((f) => f.name === "card-jam") === true);

      const pushed = await http(`${c.url}/api/sim/push-sample`, { method: "POST", headers: JSON_POST });
      expect(pushed.status).toBe(200);
      const { operationId } = JSON.parse(pushed.body) as { operationId: string };
      const failed = await stream.next((s) =>
        s.recentJobs.some((r) => r.operationId === operationId && r.d1Status === "CARD_PROD_EXCEPTION"),
      );
      expect(failed.recentJobs.find((r) => r.operationId === operationId)).toMatchObject({
        state: "FAILED",
        reason: "CARD_JAM",
      });
      expect(failed.lastErrors[0]).toMatchObject({ source: "job", reason: "CARD_JAM", operationId });
      const withFault = await stream.next((s) => s.devices[0]?.lastFault?.reason === "CARD_JAM");
      expect(withFault.devices[0]?.lastFault?.reason).toBe("CARD_JAM");
    } finally {
      stream.close();
      served.push(...stream.snapshots.map((s) => jsonStrings(JSON.stringify(s))));
    }
  });

  it("refuses simulator actions that are not JSON from the console's own origin, and unknown faults", async () => {
    const form = await http(`${c.url}/api/sim/fault`, {
      method: "POST",
      headers: { ...BEARER, "Content-Type": "application/x-www-form-urlencoded" },
      body: "name=card-jam",
    });
    expect(form.status).toBe(403);
    const foreign = await http(`${c.url}/api/sim/fault`, {
      method: "POST",
      headers: { ...JSON_POST, Origin: "http://evil.example" },
      body: JSON.stringify({ name: "card-jam" }),
    });
    expect(foreign.status).toBe(403);
    const unknown = await http(`${c.url}/api/sim/fault`, {
      method: "POST",
      headers: JSON_POST,
      body: JSON.stringify({ name: "meteor-strike" }),
    });
    expect(unknown.status).toBe(400);
    expect((await http(`${c.url}/api/sim/fault`, { headers: BEARER })).status).toBe(405);
    expect(c.controls.injected()).toEqual([]);
  });

  it("serves the last card's masked preview PNGs", async () => {
    await c.rig.agent.ready();
    const j = job();
    const previewed = once(c.recorder, "preview");
    await push(j);
    await previewed;
    const s = JSON.parse((await get("/api/status")).body) as ConsoleSnapshot;
    expect(s.preview).toMatchObject({ serial: 1, operationId: j.operationId, sides: ["front", "back"] });
    const png = await http(`${c.url}/api/preview/1/front.png`, { headers: BEARER });
    expect(png.status).toBe(200);
    expect(png.headers["content-type"]).toBe("image/png");
    expect(Buffer.from(png.body, "latin1").subarray(1, 4).toString()).toBe("PNG");
    expect((await http(`${c.url}/api/preview/9/front.png`, { headers: BEARER })).status).toBe(404);
  });

  it("shows the D1 link down with its reason when D1 goes away", async () => {
    await c.rig.agent.ready();
    const down = once(c.rig.agent.link, "down");
    await c.rig.emulator.stop();
    await down;
    const s = JSON.parse((await get("/api/status")).body) as ConsoleSnapshot;
    expect(s.d1.state).toBe("down");
    expect(s.d1.reason).toMatch(/closed/);
    expect(s.lastErrors[0]).toMatchObject({ source: "d1", reason: "D1_LINK_DOWN" });
  });
});
