import { readFileSync } from "node:fs";
import { UsageError } from "./args.js";

/** A `--jobs-file`: a JSON array of production jobs (production-job.md), read for demo and d1-emulator. */
export function readJobsFile(file: string): unknown[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new UsageError(`--jobs-file ${file}: ${(err as Error).message}`);
  }
  if (!Array.isArray(parsed)) throw new UsageError(`--jobs-file ${file}: must hold a JSON array of jobs`);
  return parsed;
}

/** An operationId shortened for one-line progress output. */
export function shortId(id: string): string {
  return id.length > 13 ? `${id.slice(0, 13)}…` : id;
}
