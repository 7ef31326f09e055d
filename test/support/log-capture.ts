import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../agent/log/logger.js";

/** A logger whose JSON lines are kept in memory, so tests can read and scan them. */
export function captureLogs(level = "debug"): { logger: Logger; lines: string[]; text: () => string } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split("\n")) if (line) lines.push(line);
      done();
    },
  });
  const logger = createLogger({ level, destination });
  return { logger, lines, text: () => lines.join("\n") };
}

/**
 * Every secret-looking string of a job: PANs (plain and grouped), tracks, sensitive print lines,
 * APDUs. Tests assert none of them appears in captured logs.
 */
export function secretsOf(job: unknown): string[] {
  const out = new Set<string>();
  const walk = (v: unknown, key = ""): void => {
    if (typeof v === "string") {
      if (/^track[123]$/.test(key) || key === "command") out.add(v);
      for (const m of v.match(/\d{13,19}/g) ?? []) out.add(m);
      return;
    }
    if (Array.isArray(v)) {
      for (const x of v) walk(x, key);
      return;
    }
    if (v && typeof v === "object") {
      const o = v as Record<string, unknown>;
      if (o.sensitive === true && typeof o.text === "string") out.add(o.text);
      for (const [k, x] of Object.entries(o)) walk(x, k);
    }
  };
  walk(job);
  return [...out].filter((s) => s.length >= 3);
}

/**
 * The secrets that occur in `haystack`. Short ones (a 3-digit CSC) count only as a whole token, or
 * every timestamp and UUID would "contain" one.
 */
export function findSecrets(haystack: string, secrets: string[]): string[] {
  return secrets.filter((s) => {
    if (s.length >= 8) return haystack.includes(s);
    const escaped = s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    return new RegExp(`(?<![0-9A-Za-z])${escaped}(?![0-9A-Za-z])`).test(haystack);
  });
}
