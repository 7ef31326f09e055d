import { vi } from "vitest";
import type { KioskAgent } from "../../agent/agent.js";

/** One sample of a Prometheus text exposition. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (comments and blank lines skipped). */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** GET /metrics from the agent's health endpoint, parsed. */
export async function scrape(agent: KioskAgent): Promise<Sample[]> {
  const { port } = await agent.health!.start();
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return parseExposition(await res.text());
}

/** The samples of one metric, as `{labels} → value` with the labels in name order. */
export function valuesOf(samples: Sample[], name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of samples.filter((x) => x.name === name)) {
    const key = Object.keys(s.labels)
      .sort()
      .map((k) => `${k}="${s.labels[k]}"`)
      .join(",");
    out.set(`{${key}}`, s.value);
  }
  return out;
}

/**
 * Resolves once the agent has read its printer's status and counters (the supervisor reads them as
 * soon as the printer is idle): the supply gauges then have every value they can have.
 */
export async function suppliesRead(agent: KioskAgent): Promise<void> {
  await agent.ready();
  await vi.waitFor(
    () => {
      const s = agent.supplies();
      if (s.readAt === null || s.counter.cardsInserted === null) throw new Error("supplies not read yet");
    },
    { timeout: 10_000, interval: 5 },
  );
}
