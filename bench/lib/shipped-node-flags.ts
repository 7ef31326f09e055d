import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const UNIT = fileURLToPath(new URL("../../deploy/kiosk-agent.service", import.meta.url));

/**
 * The node flags the service runs the agent with: what stands between `node` and
 * `bin/kiosk-agent.mjs` on the unit's ExecStart line. The bench gives every agent process the same
 * flags, so a figure is the agent as shipped, and the unit stays the one place they are decided.
 */
export function shippedNodeFlags(unitFile = UNIT): string[] {
  const line = readFileSync(unitFile, "utf8")
    .split("\n")
    .find((l) => l.startsWith("ExecStart="));
  if (!line) throw new Error(`${unitFile}: no ExecStart line`);
  const words = line.slice("ExecStart=".length).trim().split(/\s+/);
  const bin = words.findIndex((w) => w.endsWith("bin/kiosk-agent.mjs"));
  if (bin < 1) throw new Error(`${unitFile}: ExecStart does not run bin/kiosk-agent.mjs with node`);
  return words.slice(1, bin);
}
