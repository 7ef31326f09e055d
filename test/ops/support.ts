import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Card data of a set of production jobs, as the byte strings that must never reach a log line or a
 * file: PANs (plain, grouped by 4 with spaces or dashes), track bodies and their parts after the
 * PAN, sensitive print lines, chip APDU commands (upper and lower case hex).
 * `short` holds the ones too short to search byte-wise (a 3-digit CSC); see `scanText`.
 */
export interface CardSecrets {
  long: string[];
  short: string[];
}

export function cardSecrets(jobs: unknown[]): CardSecrets {
  const long = new Set<string>();
  const short = new Set<string>();
  const add = (s: string | undefined): void => {
    if (!s) return;
    if (s.length >= 8) long.add(s);
    else if (s.length >= 3) short.add(s);
  };
  const addPan = (pan: string | undefined): void => {
    if (!pan || !/^\d{12,19}$/.test(pan)) return;
    add(pan);
    add(pan.replace(/(\d{4})(?=\d)/g, "$1 "));
    add(pan.replace(/(\d{4})(?=\d)/g, "$1-"));
  };
  for (const job of jobs) {
    const pd = (job as { productionData?: unknown }).productionData;
    if (!pd || typeof pd !== "object") continue;
    const data = pd as {
      magstripe?: { track1?: string; track2?: string; track3?: string };
      print?: { front?: PrintItem[]; back?: PrintItem[] };
      chip?: { apdus?: Array<{ command?: string }> };
    };
    const { track1, track2, track3 } = data.magstripe ?? {};
    for (const t of [track1, track2, track3]) add(t);
    if (track2) {
      const [pan, rest] = track2.split(/[=X]/, 2);
      addPan(pan);
      add(rest && `=${rest}`);
    }
    if (track1) {
      const [pan, name, rest] = track1.replace(/^B/, "").split("^");
      addPan(pan);
      add(rest && `^${rest}`);
      add(name && rest && `${name}^${rest}`);
    }
    for (const item of [...(data.print?.front ?? []), ...(data.print?.back ?? [])]) {
      if (item.sensitive === true && typeof item.text === "string") {
        add(item.text);
        addPan(item.text.replace(/[ -]/g, ""));
      }
    }
    for (const apdu of data.chip?.apdus ?? []) {
      if (typeof apdu.command !== "string") continue;
      add(apdu.command.toUpperCase());
      add(apdu.command.toLowerCase());
    }
  }
  return { long: [...long], short: [...short] };
}

interface PrintItem {
  text?: string;
  sensitive?: boolean;
}

export interface Hit {
  file: string;
  secret: string;
  offset: number;
}

/** Byte-wise search of each file for every long secret, and a token search for the short ones. */
export function scanFiles(files: string[], secrets: CardSecrets): Hit[] {
  const hits: Hit[] = [];
  for (const file of files) {
    if (!existsSync(file)) continue;
    const bytes = readFileSync(file);
    for (const secret of secrets.long) {
      const offset = bytes.indexOf(Buffer.from(secret, "utf8"));
      if (offset >= 0) hits.push({ file, secret, offset });
    }
    for (const { secret, offset } of scanText(bytes.toString("latin1"), secrets.short)) {
      hits.push({ file, secret, offset });
    }
  }
  return hits;
}

/**
 * A short secret (a CSC) counts as found only as a whole token that is not a JSON number, a time
 * or part of an id: digits are everywhere in a log (times, ports, delays) and three of them in a row
 * mean nothing by themselves. A CSC leaked as a string ("823", "csc 823") is found.
 */
export function scanText(text: string, short: string[]): Array<{ secret: string; offset: number }> {
  const found: Array<{ secret: string; offset: number }> = [];
  for (const secret of short) {
    const escaped = secret.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const m = new RegExp(`(?<![\\w:.\\-])${escaped}(?![\\w.:\\-])`).exec(text);
    if (m) found.push({ secret, offset: m.index });
  }
  return found;
}

/** The bytes around a hit, for a readable failure message. */
export function context(hit: Hit, span = 60): string {
  const bytes = readFileSync(hit.file);
  return bytes
    .subarray(Math.max(0, hit.offset - span), hit.offset + hit.secret.length + span)
    .toString("latin1")
    .replace(/[^\x20-\x7e]/g, ".");
}

/** Regular files under `dir` (not recursive) whose name passes `keep`. */
export function filesIn(dir: string, keep: (name: string) => boolean = () => true): string[] {
  return readdirSync(dir)
    .filter(keep)
    .map((name) => join(dir, name))
    .filter((file) => statSync(file).isFile());
}

export function tempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
