/**
 * Measures what one APDU costs through the real PC/SC stack with the simulator's virtual card:
 * PcscApduTransport → pcsc-lite → pcscd → vpcd → TCP → VpcdCard, for several socket settings.
 * Usage: npm run pcsc:latency [-- --apdus N]. Needs root (starts pcscd; the quickack row adds and
 * removes a host route for 127.0.0.35 only). docs/chip.md quotes its output.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { PcscApduTransport } from "../../drivers/chip/pcsc-transport.js";
import { startPcscStack } from "../../simulator/chip/pcsc-stack.js";
import { VirtualCard } from "../../simulator/chip/virtual-card.js";
import { VpcdCard } from "../../simulator/chip/vpcd-card.js";

const { values } = parseArgs({ options: { apdus: { type: "string", default: "50" } } });
const N = Number(values.apdus);
const QUICKACK_HOST = "127.0.0.35";
const SELECT = Buffer.from("00A4040007A000000004101000", "hex");
const STORE = Buffer.from("80E2800003010100", "hex");

interface Row {
  label: string;
  host: string;
  noDelay: boolean;
  splitWrites: boolean;
}

const rows: Row[] = [
  {
    label: "card TCP_NODELAY on (the simulator's default)",
    host: "127.0.0.1",
    noDelay: true,
    splitWrites: false,
  },
  { label: "card TCP_NODELAY off", host: "127.0.0.1", noDelay: false, splitWrites: false },
  { label: "card NODELAY off, answer in 2 writes", host: "127.0.0.1", noDelay: false, splitWrites: true },
  {
    label: `quickack route to ${QUICKACK_HOST}, NODELAY on`,
    host: QUICKACK_HOST,
    noDelay: true,
    splitWrites: false,
  },
];

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}

async function measure(stack: { readerName: string; vpcdPort: number }, row: Row): Promise<string> {
  const card = new VirtualCard();
  const vcard = new VpcdCard({
    card,
    host: row.host,
    port: stack.vpcdPort,
    noDelay: row.noDelay,
    splitWrites: row.splitWrites,
  });
  const transport = new PcscApduTransport({ reader: stack.readerName, cardTimeoutMs: 5000 });
  try {
    await vcard.insert();
    let t = performance.now();
    await transport.connect();
    const connectMs = performance.now() - t;
    const times: number[] = [];
    for (let i = 0; i < N; i++) {
      t = performance.now();
      await transport.transmit(i === 0 ? SELECT : STORE);
      times.push(performance.now() - t);
    }
    t = performance.now();
    await transport.disconnect();
    const disconnectMs = performance.now() - t;
    times.sort((a, b) => a - b);
    const f = (n: number) => n.toFixed(2).padStart(7);
    return `${row.label.padEnd(48)} median ${f(quantile(times, 0.5))} ms  p90 ${f(quantile(times, 0.9))} ms  disconnect(reset) ${f(disconnectMs)} ms  card seen after ${connectMs.toFixed(0)} ms`;
  } finally {
    await transport.close();
    await vcard.remove();
  }
}

const stack = await startPcscStack({
  logDir: mkdtempSync(join(tmpdir(), "pcsc-latency-")),
  onProgress: console.log,
});
let routeAdded = false;
try {
  console.log(`${N} APDUs per row through ${stack.readerName}\n`);
  for (const row of rows) {
    if (row.host === QUICKACK_HOST) {
      const r = spawnSync("ip", [
        "route",
        "add",
        "local",
        `${QUICKACK_HOST}/32`,
        "dev",
        "lo",
        "table",
        "local",
        "quickack",
        "1",
      ]);
      if (r.status !== 0) {
        console.log(
          `${row.label.padEnd(48)} skipped (ip route add failed: ${String(r.stderr).trim() || r.error?.message})`,
        );
        continue;
      }
      routeAdded = true;
    }
    console.log(await measure(stack, row));
  }
} finally {
  if (routeAdded)
    spawnSync("ip", ["route", "del", "local", `${QUICKACK_HOST}/32`, "dev", "lo", "table", "local"]);
  await stack.stop();
}
