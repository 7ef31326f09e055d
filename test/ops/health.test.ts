import { afterEach, describe, expect, it } from "vitest";
import type { KioskAgent } from "../../agent/agent.js";
import { type OpsRig, sampleJob, startOpsRig } from "./rig.js";

async function get(agent: KioskAgent, path: string): Promise<{ status: number; type: string; body: string }> {
  const { port } = await agent.health!.start();
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, type: res.headers.get("content-type") ?? "", body: await res.text() };
}

/** `name{labels} value` lines of a Prometheus text exposition, as a map. */
function series(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** Resolves once D1 has acknowledged every status the agent wrote (checked on each ack it receives). */
function allAcked(agent: KioskAgent): Promise<void> {
  return new Promise((resolve) => {
    const check = (): void => {
      if (agent.store.outboxDepth() !== 0) return;
      agent.link.off("message", onMessage);
      resolve();
    };
    const onMessage = (): void => queueMicrotask(check);
    agent.link.on("message", onMessage);
    check();
  });
}

describe("health and metrics endpoint", () => {
  let rig: OpsRig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  it("listens on 127.0.0.1 only when enabled", async () => {
    rig = await startOpsRig();
    expect(rig.agent.health).toBeUndefined();
    await rig.close();
    rig = await startOpsRig({ config: { health: { enabled: true, port: 0 } } });
    const address = await rig.agent.health!.start();
    expect(address.address).toBe("127.0.0.1");
  });

  it("/healthz is 200 while the process runs; /readyz follows the D1 link and the printer", async () => {
    rig = await startOpsRig({ config: { health: { enabled: true, port: 0 } } });
    await rig.agent.ready();
    const health = await get(rig.agent, "/healthz");
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ status: "ok" });

    const ready = await get(rig.agent, "/readyz");
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toEqual({
      ready: true,
      reasons: [],
      d1: "up",
      printer: { state: "idle" },
    });

    // D1 goes away: not ready, and the answer says why.
    const r = rig;
    const down = new Promise<void>((resolve) => r.agent.link.once("down", () => resolve()));
    await rig.emulator.stop();
    await down;
    const notReady = await get(rig.agent, "/readyz");
    expect(notReady.status).toBe(503);
    expect(notReady.type).toMatch(/^application\/json/);
    expect(JSON.parse(notReady.body)).toMatchObject({ ready: false, reasons: ["D1_LINK_DOWN"], d1: "down" });

    expect((await get(rig.agent, "/nope")).status).toBe(404);
  });

  it("/readyz is 503 with the printer's reason while the printer is stopped, 200 once it resumes", async () => {
    rig = await startOpsRig({ config: { health: { enabled: true, port: 0 } }, printer: { feederCards: 0 } });
    await rig.agent.ready();
    const r = rig;
    const res = await get(rig.agent, "/readyz");
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toMatchObject({
      ready: false,
      reasons: ["PRINTER_STOPPED"],
      d1: "up",
      printer: { state: "stopped", reason: "FEEDER_EMPTY" },
    });
    const metrics = series((await get(rig.agent, "/metrics")).body);
    expect(metrics.get('kiosk_agent_printer_state{state="stopped"}')).toBe(1);
    expect(metrics.get('kiosk_agent_printer_stopped_reason{reason="FEEDER_EMPTY"}')).toBe(1);

    const idle = new Promise<void>((resolve) => {
      const onChange = (s: { state: string }): void => {
        if (s.state !== "idle") return;
        r.agent.supervisor.off("change", onChange);
        resolve();
      };
      r.agent.supervisor.on("change", onChange);
    });
    rig.printer.loadFeeder(10);
    await idle;
    expect((await get(rig.agent, "/readyz")).status).toBe(200);
  });

  it("/metrics, scraped during a run: jobs by state, events, outbox, reconnects, printer, step latencies", async () => {
    rig = await startOpsRig({
      config: { health: { enabled: true, port: 0 } },
      printer: { takeAfterMs: 0, latency: { commandMs: 1, printMs: 150, magMs: 5 } },
    });
    await rig.agent.ready();
    const r = rig;

    // Mid-card: scraped while the printer prints.
    const printing = new Promise<void>((resolve) =>
      r.agent.pipeline.on("step", (_id, step) => {
        if (step === "print") resolve();
      }),
    );
    const good = sampleJob();
    const bad = sampleJob();
    bad.productionData.magstripe.track2 = "not a track";
    await rig.emulator.push(bad);
    await rig.emulator.push(good);
    await printing;
    const during = await get(rig.agent, "/metrics");
    expect(during.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const mid = series(during.body);
    expect(mid.get('kiosk_agent_jobs{state="PRODUCING"}')).toBe(1);
    expect(mid.get('kiosk_agent_jobs{state="DATA_EXCEPTION"}')).toBe(1);
    expect(mid.get('kiosk_agent_printer_state{state="busy"}')).toBe(1);
    expect(mid.get("kiosk_agent_d1_link_up")).toBe(1);

    await rig.emulator.waitFor(() => r.emulator.terminalCount(good.operationId) > 0, 10_000);
    await allAcked(rig.agent);
    // A dropped link and the reconnect that follows.
    const up = new Promise<void>((resolve) => r.agent.link.once("up", () => resolve()));
    await rig.emulator.dropLink();
    await up;

    const after = series((await get(rig.agent, "/metrics")).body);
    expect(after.get('kiosk_agent_jobs{state="DONE"}')).toBe(1);
    expect(after.get('kiosk_agent_jobs{state="PRODUCING"}')).toBe(0);
    expect(after.get('kiosk_agent_jobs{state="DATA_EXCEPTION"}')).toBe(1);
    expect(after.get("kiosk_agent_events_sent_total")).toBeGreaterThanOrEqual(3);
    expect(after.get("kiosk_agent_events_acked_total")).toBe(3);
    expect(after.get("kiosk_agent_outbox_depth")).toBe(0);
    expect(after.get("kiosk_agent_d1_sessions_total")).toBe(2);
    expect(after.get("kiosk_agent_d1_reconnects_total")).toBe(1);
    expect(after.get('kiosk_agent_printer_state{state="idle"}')).toBe(1);
    expect(after.get('kiosk_agent_jobs_finished_total{state="DONE"}')).toBe(1);
    for (const step of ["render", "insert", "print", "encode", "present", "collect"]) {
      expect(after.get(`kiosk_agent_step_duration_seconds_count{step="${step}"}`), step).toBe(1);
    }
    // The print step took the simulated print time.
    expect(after.get('kiosk_agent_step_duration_seconds_bucket{le="0.1",step="print"}')).toBe(0);
    expect(after.get('kiosk_agent_step_duration_seconds_bucket{le="+Inf",step="print"}')).toBe(1);
    expect(after.get('kiosk_agent_card_duration_seconds_count{state="DONE"}')).toBe(1);
    expect(after.get("kiosk_agent_process_resident_memory_bytes")).toBeGreaterThan(0);
    // Nothing about a card's data in the metrics.
    const text = (await get(rig.agent, "/metrics")).body;
    expect(text).not.toContain(good.productionData.magstripe.track2.split("=")[0]);
  });
});
