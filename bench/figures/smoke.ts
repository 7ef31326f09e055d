import { rmSync } from "node:fs";
import { join } from "node:path";
import { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import { assembleAgent, benchDataDir, benchJob, newRunId, newToken, STATION } from "../lib/assemble.js";
import { progress } from "../lib/util.js";

/**
 * Before any figure: a few cards through the bench's agent assembly against the project's real D1
 * emulator (the contract checker), so the figures are known to come from an agent that honours the
 * protocol. Throws on any protocol violation or a card that does not end CARD_PROD_DONE.
 */
export async function smokeCheck(cards: number): Promise<void> {
  const token = newToken();
  const emulator = new D1Emulator({ token });
  const { url } = await emulator.start();
  const dataDir = benchDataDir("smoke");
  const { agent } = assembleAgent({
    d1Url: url,
    token,
    dataDir,
    logFile: join(dataDir, "agent.log"),
    takeAfterMs: 0,
  });
  try {
    agent.start();
    await emulator.waitForConnection(STATION, 15_000);
    const runId = newRunId();
    const ids: string[] = [];
    for (let i = 0; i < cards; i++) {
      const job = benchJob(i, runId) as { operationId: string };
      const answer = await emulator.push(job);
      if (answer.result !== "accepted") throw new Error(`smoke: push refused (${answer.errorCode})`);
      ids.push(job.operationId);
    }
    await emulator.waitFor(() => ids.every((id) => emulator.terminalCount(id) === 1), 30_000, "smoke cards");
    for (const id of ids) {
      const statuses = emulator.operations(id).map((o) => o.details.status);
      if (statuses.join(",") !== "CARD_PROD_READY,CARD_PROD_DONE") {
        throw new Error(`smoke: ${id} reached D1 as ${statuses.join(",")}`);
      }
    }
    if (emulator.violations.length > 0) {
      throw new Error(`smoke: protocol violations: ${JSON.stringify(emulator.violations.slice(0, 3))}`);
    }
    progress(`smoke: ${cards} cards through the D1 emulator, statuses as expected, no protocol violation`);
  } finally {
    await agent.stop();
    await emulator.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
