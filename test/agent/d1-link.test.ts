import { createServer } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { D1Link } from "../../agent/d1/link.js";
import { ManualClock } from "../../agent/util/clock.js";
import { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import { until } from "../support/e2e.js";
import { captureLogs } from "../support/log-capture.js";

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("D1 link", () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0)) await c();
  });

  it("D1 unreachable at start: retries forever with capped backoff, one log line per step, then connects", async () => {
    const port = await freePort();
    const clock = new ManualClock();
    const logs = captureLogs();
    const link = new D1Link({
      url: `ws://127.0.0.1:${port}/`,
      token: "test-token-123",
      station: "KIOSK-PS-101",
      agentVersion: "test",
      clock,
      logger: logs.logger,
      backoff: { initialMs: 100, maxMs: 800, random: () => 1 },
      pingIntervalMs: 60_000,
    });
    cleanup.push(() => link.stop());
    const retryLines = () => logs.lines.filter((l) => l.includes("D1 unreachable")).map((l) => JSON.parse(l));
    link.start();
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 6; attempt++) {
      await until(() => retryLines().length === attempt, 5000, `retry ${attempt}`);
      const line = retryLines()[attempt - 1];
      delays.push(line.delayMs);
      expect(line.url).toBe(`ws://127.0.0.1:${port}/`);
      clock.advance(line.delayMs);
    }
    expect(delays).toEqual([100, 200, 400, 800, 800, 800]);
    expect(link.isUp).toBe(false);

    const d1 = new D1Emulator({ token: "test-token-123", port });
    cleanup.push(() => d1.stop());
    await d1.start();
    await until(() => retryLines().length === 7, 5000, "retry 7");
    clock.advance(800);
    await d1.waitForConnection("KIOSK-PS-101", 5000);
    await until(() => link.isUp);
    // No more retry lines once connected; the token never appears in a log line.
    const after = retryLines().length;
    expect(after).toBeLessThanOrEqual(8);
    expect(logs.text()).not.toContain("test-token-123");
  });

  it("a link that stops answering pings is declared dead and re-established", async () => {
    const clock = new ManualClock();
    const logs = captureLogs();
    const d1 = new D1Emulator({ token: "tok-ping-12345" });
    cleanup.push(() => d1.stop());
    const { url } = await d1.start();
    const link = new D1Link({
      url,
      token: "tok-ping-12345",
      station: "KIOSK-PS-101",
      agentVersion: "test",
      clock,
      logger: logs.logger,
      backoff: { initialMs: 10, maxMs: 10, random: () => 0 },
      pingIntervalMs: 1000,
      missedPongs: 2,
    });
    cleanup.push(() => link.stop());
    let downs = 0;
    link.on("down", () => downs++);
    link.start();
    await until(() => link.isUp);
    d1.blackhole();
    for (let i = 0; i < 3; i++) clock.advance(1000);
    await until(() => downs === 1);
    clock.advance(10);
    await until(() => link.isUp);
    expect(logs.lines.some((l) => l.includes("no pong"))).toBe(true);
  });
});
