import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { runDemo } from "../../agent/cli/demo.js";
import type { Operation } from "../../agent/d1/operation.js";
import { makeSampleJob } from "../../agent/jobs/sample-jobs.js";
import { SealedBox } from "../../agent/store/sealed-box.js";
import { cardSecrets, context, filesIn, type Hit, scanFiles, tempDir } from "./support.js";

/**
 * The must-show test of issue 7: the whole demo (D1 emulator, agent, simulated printer and chip
 * card, real SQLite file) runs valid, invalid, refused and faulted jobs with the log at debug level
 * in a file; then the log and every SQLite file (the -wal and -shm included, read while the agent is
 * still running and again after it stopped) are searched byte-wise for every PAN, track, sensitive
 * print line and APDU of those jobs. Also: no sealed payload of a finished job is left anywhere on
 * disk (the data key is in the same directory, so a left-over ciphertext would be card data).
 */

const STATION = "KIOSK-PS-101";

function demoJobs(runId: string): Record<string, unknown>[] {
  const make = (i: number) =>
    makeSampleJob(i, { station: STATION, runId, collectTimeoutSec: 5, withChip: true }) as unknown as Record<
      string,
      // biome-ignore lint/suspicious/noExplicitAny: test data is edited freely
      any
    >;
  const valid = [0, 1, 2, 3, 4].map(make);
  // DATA_EXCEPTION: a letter in track 2 (the PAN stays intact, so the job is full of card data).
  const badTrack2 = make(5);
  badTrack2.productionData.magstripe.track2 = `${badTrack2.productionData.magstripe.track2}Z`;
  // DATA_EXCEPTION: no persoStation.
  const noStation = make(6);
  delete noStation.persoStation;
  // Refused outright (never stored): an operation this agent does not do.
  const refused = make(7);
  refused.operation = "REISSUE";
  return [valid[0]!, badTrack2, valid[1]!, noStation, valid[2]!, refused, valid[3]!, valid[4]!];
}

describe("no card data at rest", () => {
  const dirs: Array<() => void> = [];
  afterEach(() => {
    vi.restoreAllMocks();
    for (const remove of dirs.splice(0)) remove();
  });

  it.each([
    ["plain", false],
    ["encrypted (JWE)", true],
  ])(
    "debug log, jobs.sqlite, -wal and -shm hold no PAN, track, CSC or APDU of valid, invalid and faulted jobs: %s production data",
    async (_name, encrypt) => {
      const { dir, remove } = tempDir("kiosk-secrets-");
      dirs.push(remove);
      const dataDir = join(dir, "data");
      const jobs = demoJobs(`secrets-${process.pid}-${Date.now()}`);
      const secrets = cardSecrets(jobs);
      expect(secrets.long.length).toBeGreaterThan(50);
      expect(secrets.short.length).toBeGreaterThan(0); // the CSCs
      const jobsFile = join(dir, "jobs.json");
      writeFileSync(jobsFile, JSON.stringify(jobs));
      const recordFile = join(dir, "d1-record.jsonl");

      // Every sealed production job the store writes: none may survive its job on disk. (The store's
      // key check, a constant sealed under the store's id, stays by design and holds no card data.)
      const sealed: Buffer[] = [];
      const seal = SealedBox.prototype.seal;
      vi.spyOn(SealedBox.prototype, "seal").mockImplementation(function (this: SealedBox, text, aad) {
        const out = seal.call(this, text, aad);
        if (text !== "kiosk-agent data key check") sealed.push(out);
        return out;
      });
      vi.spyOn(console, "log").mockImplementation(() => undefined);

      const sqliteFiles = () =>
        ["jobs.sqlite", "jobs.sqlite-wal", "jobs.sqlite-shm"].map((f) => join(dataDir, f));
      const logFile = join(dataDir, "agent.log");
      let liveHits: Hit[] = [];
      let liveRemnants: string[] = [];
      let liveWalSize = -1;

      const code = await runDemo({
        jobs: 0,
        jobsFile,
        record: recordFile,
        dataDir,
        station: STATION,
        takeAfterMs: 0,
        timeoutSec: 60,
        logLevel: "debug",
        // Card 1 fails in the chip step, the next card at magstripe read-back; the rest are produced.
        chip: "inproc",
        chipFault: "chip-sw",
        fault: "mag-verify",
        faultCount: 1,
        consolePort: 0,
        encrypt,
        onJobsEnded: () => {
          // The agent is still running: the WAL and shared-memory files exist and are read as they are.
          const files = [logFile, ...sqliteFiles()];
          liveWalSize = readFileSync(join(dataDir, "jobs.sqlite-wal")).length;
          liveHits = scanFiles(files, secrets);
          liveRemnants = remnants(files, sealed);
        },
      });
      expect(code).toBe(0);

      // The mix really played out: D1 heard every kind of ending.
      const finals = finalStatuses(recordFile);
      const ids = jobs.map((j) => j.operationId as string);
      expect(finals.get(ids[1]!)).toBe("DATA_EXCEPTION/FIELD_INVALID_FORMAT");
      expect(finals.get(ids[3]!)).toBe("DATA_EXCEPTION/MISSING_SATELLITEUID");
      expect(finals.has(ids[5]!)).toBe(false); // refused: never an operation
      const endings = [...finals.values()];
      expect(endings).toContain("CARD_PROD_EXCEPTION/CHIP_ERROR");
      expect(endings).toContain("CARD_PROD_EXCEPTION/MAG_VERIFY");
      expect(endings).toContain("CARD_PROD_DONE");
      expect(sealed.length).toBe(5);

      // The log is a real debug log that talks about these jobs (masked), so the scan means something.
      const log = readFileSync(logFile, "utf8");
      expect(log).toContain('"level":20');
      for (const id of ids) expect(log).toContain(id);
      expect(log).toMatch(/526609\*{6}\d{4}/);
      // The emulator logs whether each push went out encrypted.
      expect(log.includes('"encrypted":true')).toBe(encrypt);

      expect(liveWalSize).toBeGreaterThanOrEqual(0);
      const describe = (hits: Hit[]) => hits.map((h) => `${h.file}: ${h.secret} … ${context(h)}`);
      expect(describe(liveHits)).toEqual([]);
      expect(liveRemnants).toEqual([]);

      // After the agent stopped (WAL checkpointed into the main file): every file the agent wrote.
      const agentFiles = filesIn(dataDir, (name) => name !== "data.key" && !name.startsWith("simulator-"));
      expect(agentFiles).toContain(join(dataDir, "jobs.sqlite"));
      expect(describe(scanFiles(agentFiles, secrets))).toEqual([]);
      expect(remnants(agentFiles, sealed)).toEqual([]);
    },
  );
});

/** Files holding the start (IV ‖ tag: random, unique) of any sealed payload. */
function remnants(files: string[], sealed: Buffer[]): string[] {
  const out: string[] = [];
  for (const file of files) {
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch {
      continue;
    }
    const n = sealed.filter((s) => bytes.includes(s.subarray(0, 28))).length;
    if (n > 0) out.push(`${file}: ${n} sealed payload(s)`);
  }
  return out;
}

/** operationId → "STATUS/REASON" of the last operation D1 received. */
function finalStatuses(recordFile: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync(recordFile, "utf8").split("\n")) {
    if (!line) continue;
    const op = JSON.parse(line) as Operation;
    if (op.details.status === "CARD_PROD_READY") continue;
    out.set(op.operationId, `${op.details.status}${op.details.reason ? `/${op.details.reason}` : ""}`);
  }
  return out;
}
