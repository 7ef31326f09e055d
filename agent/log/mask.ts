/**
 * Recognising and masking card data in anything that leaves the process as text (logs, errors,
 * records), and screening the ids and labels D1 sends (agent/jobs/production-job.ts): one detector
 * for both, so an id that passed the door is never mangled in a log.
 *
 * The rule of the house: a PAN is shown only as first 6 / last 4. docs/security.md#logs says what is
 * recognised and what is not.
 */

/** `5266092201416174` → `526609******6174`. Short or non-digit input is masked whole. */
export function maskPan(pan: string): string {
  const digits = pan.replace(/[^0-9]/g, "");
  if (digits.length < 13) return "*".repeat(digits.length || 4);
  return `${digits.slice(0, 6)}${"*".repeat(digits.length - 10)}${digits.slice(-4)}`;
}

/**
 * A card id as the console shows it: its last 4 characters after an ellipsis (`…7f3f`). The
 * first 6 / last 4 rule is for PANs; a card id needs no more than its tail to be told apart.
 */
export function maskCardId(cardId: string): string {
  const chars = [...cardId];
  return `…${chars.slice(-4).join("")}`;
}

export function luhnValid(digits: string): boolean {
  if (!/^[0-9]+$/.test(digits)) return false;
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

// ---- the detector -------------------------------------------------------------------------------

/** Where card data was found, in UTF-16 offsets of the text, and what to put in its place. */
interface Finding {
  start: number;
  end: number;
  replacement: string;
}

/**
 * The text as the detector reads it: one character per code point. Digits of any script (and
 * anything NFKC folds to an ASCII digit, e.g. full-width `４`) become ASCII digits; every separator a
 * card number could be grouped with becomes a space (`-` stays `-`, for the UUID rule); other
 * characters NFKC folds to one ASCII character become it (full-width `＝`, `＾`, `；`); anything else
 * becomes U+FFFD. Escape sequences (`\t`, `\x00`, `\u3000`, runs of backslashes), as util.inspect
 * and JSON write them into a message, are separators too. `at[i]` is the UTF-16 offset of code point
 * i in the original (`at[n]` its length).
 */
interface View {
  chars: string;
  at: number[];
}

const SEPARATOR_ASCII = /[\s._/\u0000-\u001f\u007f]/;
// Unicode spaces, format characters (zero-width space, soft hyphen, BOM), combining marks, dashes,
// C1 controls, the minus sign and middle dots: grouping characters a PAN can be spread with.
const SEPARATOR_OTHER = /[\s\p{Cf}\p{Mn}\p{Me}\p{Pd}\u0080-\u009f\u2212\u00b7\u2027\u30fb]/u;
const DECIMAL_DIGIT = /\p{Nd}/u;
const ESCAPE = /\\+(?:[tnrvfb0]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|u\{[0-9a-fA-F]{1,6}\})?/g;

function digitOf(cp: number): string | undefined {
  const ch = String.fromCodePoint(cp);
  const folded = ch.normalize("NFKC");
  if (folded.length === 1 && folded >= "0" && folded <= "9") return folded;
  if (!DECIMAL_DIGIT.test(ch)) return undefined;
  // Unicode encodes every decimal digit set as ten consecutive code points, zero first.
  let zero = cp;
  while (zero > 0 && DECIMAL_DIGIT.test(String.fromCodePoint(zero - 1))) zero--;
  return String((cp - zero) % 10);
}

function viewOf(text: string): View {
  let chars = "";
  const at: number[] = [];
  let i = 0;
  for (const ch of text) {
    at.push(i);
    i += ch.length;
    const cp = ch.codePointAt(0) as number;
    if (cp < 0x80) {
      chars += ch === "-" ? "-" : SEPARATOR_ASCII.test(ch) ? " " : ch;
      continue;
    }
    const digit = digitOf(cp);
    if (digit !== undefined) {
      chars += digit;
      continue;
    }
    const folded = ch.normalize("NFKC");
    if (folded === "-") chars += "-";
    else if (SEPARATOR_OTHER.test(ch) || (folded.length === 1 && SEPARATOR_ASCII.test(folded))) chars += " ";
    else if (folded.length === 1 && folded.charCodeAt(0) < 0x80) chars += folded;
    else chars += "\ufffd";
  }
  at.push(i);
  if (chars.includes("\\")) chars = chars.replace(ESCAPE, (m) => " ".repeat(m.length));
  return { chars, at };
}

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= "0" && c <= "9";
const isSep = (c: string | undefined): boolean => c === " " || c === "-";

/**
 * RFC 9562 UUIDs (version 1–8, variant 10xx) are read group by group: the dashes between their groups
 * do not join digits. Without this, about 0.7% of random UUIDs hold a Luhn-valid run of 13+ digits
 * across their dashes and would be refused as ids and mangled in logs. A UUID standing alone (no
 * digit next to it across separators, other than another UUID's) is left out of the reading
 * altogether; one with digits next to it keeps its edge digits, so a PAN split between a UUID and the
 * digits beside it is still one run. A letter right next to it makes it no UUID at all.
 */
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/gi;
const UUID_DASHES = [8, 13, 18, 23];
const ALNUM = /[0-9A-Za-z]/;

function withUuidBarriers(chars: string): string {
  const uuids: Array<[number, number]> = [];
  for (const m of chars.matchAll(UUID)) {
    const end = m.index + m[0].length;
    if (!ALNUM.test(chars[m.index - 1] ?? "") && !ALNUM.test(chars[end] ?? "")) uuids.push([m.index, end]);
  }
  if (uuids.length === 0) return chars;
  const inUuid = (i: number): boolean => uuids.some(([s, e]) => i >= s && i < e);
  const out = chars.split("");
  for (const [start, end] of uuids) {
    let before = start - 1;
    while (isSep(chars[before])) before--;
    let after = end;
    while (isSep(chars[after])) after++;
    const touches =
      (isDigit(chars[start]) && isDigit(chars[before]) && !inUuid(before)) ||
      (isDigit(chars[end - 1]) && isDigit(chars[after]) && !inUuid(after));
    if (touches) for (const d of UUID_DASHES) out[start + d] = "#";
    else for (let i = start; i < end; i++) out[i] = "#";
  }
  return out.join("");
}

/** A maximal run of digits with separators between them: `[start, end)` in the view, and its digits. */
interface Run {
  start: number;
  end: number;
  digits: string;
}

function digitRuns(chars: string): Run[] {
  const runs: Run[] = [];
  let i = 0;
  while (i < chars.length) {
    if (!isDigit(chars[i])) {
      i++;
      continue;
    }
    const start = i;
    let digits = "";
    let end = i;
    while (i < chars.length) {
      if (isDigit(chars[i])) {
        digits += chars[i];
        i++;
        end = i;
      } else if (isSep(chars[i])) {
        i++;
      } else break;
    }
    runs.push({ start, end, digits });
    i = end;
  }
  return runs;
}

/** True when some 13–19 digit window of `digits` passes Luhn. Linear: prefix sums per parity. */
export function hasLuhnWindow(digits: string): boolean {
  const n = digits.length;
  if (n < 13) return false;
  // plain[p][k], doubled[p][k]: the sums over j < k with j % 2 === p of d_j, and of d_j Luhn-doubled.
  const plain: [number[], number[]] = [[0], [0]];
  const doubled: [number[], number[]] = [[0], [0]];
  for (let j = 0; j < n; j++) {
    const d = digits.charCodeAt(j) - 48;
    for (const p of [0, 1] as const) {
      const mine = j % 2 === p;
      plain[p].push((plain[p][j] as number) + (mine ? d : 0));
      doubled[p].push((doubled[p][j] as number) + (mine ? (d * 2 > 9 ? d * 2 - 9 : d * 2) : 0));
    }
  }
  const sum = (a: number[], from: number, to: number): number => (a[to] as number) - (a[from] as number);
  for (let len = 13; len <= 19; len++) {
    for (let i = 0; i + len <= n; i++) {
      // The rightmost digit is taken as it is, the one before it doubled, and so on.
      const last = (i + len - 1) % 2;
      if (
        (sum(plain[last as 0 | 1], i, i + len) + sum(doubled[(1 - last) as 0 | 1], i, i + len)) % 10 ===
        0
      ) {
        return true;
      }
    }
  }
  return false;
}

/**
 * How a digit run with card data is shown in a log. A run that is exactly one Luhn-valid number of
 * 13–19 digits, with no shorter card number at its start, is masked to first 6 / last 4 (the house
 * rule). Anything else — a card number followed by more digits (a CSC, an expiry), or inside a longer
 * run — is replaced whole: its last four digits need not be the card's.
 */
function maskRun(digits: string): string {
  const n = digits.length;
  if (n < 13 || n > 19 || !luhnValid(digits)) return "[PAN]";
  for (let len = 13; len < n; len++) if (luhnValid(digits.slice(0, len))) return "[PAN]";
  return maskPan(digits);
}

/** Skips separators from `i` in direction `step`; returns the first index that is not one. */
function skipSep(chars: string, i: number, step: 1 | -1): number {
  let j = i;
  while (isSep(chars[j])) j += step;
  return j;
}

/** The run that starts at view index `i`, if any. */
function runAt(runs: Run[], byStart: Map<number, number>, i: number): Run | undefined {
  const k = byStart.get(i);
  return k === undefined ? undefined : runs[k];
}

const TRACK1_TAIL_END = /[\s"',}\ufffd]/;

/**
 * Every piece of card data in a view, in order, without overlaps:
 * - track 2 like: PAN (12+ digits) `=` or `D` expiry (4+ digits), with an optional `;` before and
 *   `?` after; the separator may be `d` too (EMV track 2 equivalent data in lower-case hex);
 * - track 1 like: optional `%`, optional `B`, PAN (12+ digits) `^` name (0–26 characters) `^` expiry
 *   (4+ digits) and whatever follows up to a space or quote;
 * - any digit run (separators allowed between digits) with a Luhn-valid 13–19 digit window.
 */
function findings(text: string): Finding[] {
  const view = viewOf(text);
  const chars = withUuidBarriers(view.chars);
  const runs = digitRuns(chars);
  const byStart = new Map(runs.map((r, k) => [r.start, k]));
  const found: Array<{ start: number; end: number; replacement: string }> = [];
  let consumedTo = 0;
  for (let k = 0; k < runs.length; k++) {
    const run = runs[k] as Run;
    if (run.start < consumedTo) {
      // A run that starts inside a track's tail and goes on past it belongs to the track.
      const track = found.at(-1);
      if (track && run.end > consumedTo) track.end = consumedTo = run.end;
      continue;
    }
    if (run.digits.length >= 12) {
      const sepAt = skipSep(chars, run.end, 1);
      const sep = chars[sepAt];
      // Track 2: PAN [=Dd] expiry…
      if (sep === "=" || sep === "D" || sep === "d") {
        const next = runAt(runs, byStart, skipSep(chars, sepAt + 1, 1));
        if (next && next.digits.length >= 4) {
          const start = chars[run.start - 1] === ";" ? run.start - 1 : run.start;
          const end = chars[next.end] === "?" ? next.end + 1 : next.end;
          found.push({ start, end, replacement: "[TRACK2]" });
          consumedTo = end;
          continue;
        }
      }
      // Track 1: [%][B] PAN ^ NAME ^ expiry…
      if (sep === "^") {
        const close = chars.indexOf("^", sepAt + 1);
        if (close !== -1 && close - sepAt - 1 <= 26) {
          const next = runAt(runs, byStart, skipSep(chars, close + 1, 1));
          if (next && next.digits.length >= 4) {
            let start = run.start;
            if (chars[start - 1] === "B" || chars[start - 1] === "b") start--;
            if (chars[start - 1] === "%") start--;
            let end = next.end;
            while (end < chars.length && !TRACK1_TAIL_END.test(chars[end] as string)) end++;
            found.push({ start, end, replacement: "[TRACK1]" });
            consumedTo = end;
            continue;
          }
        }
      }
    }
    if (hasLuhnWindow(run.digits))
      found.push({ start: run.start, end: run.end, replacement: maskRun(run.digits) });
  }
  return found.map((f) => ({
    start: view.at[f.start] as number,
    end: view.at[f.end] as number,
    replacement: f.replacement,
  }));
}

/** Whether the text could hold card data at all: 12 digits of any kind. Pure-ASCII fast path. */
function mayHoldCardData(text: string): boolean {
  let digits = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (++digits >= 12) return true;
    } else if (c >= 0x80) return true;
  }
  return false;
}

/**
 * Whether a string holds card data by the detector's rules: a Luhn-valid run of 13–19 digits
 * (separators allowed between them, any digit script), or a track-like string. Ids and labels that
 * do are refused at the door (docs/validation.md); nothing that passed is changed by redactText.
 */
export function containsCardData(text: string): boolean {
  return mayHoldCardData(text) && findings(text).length > 0;
}

/**
 * Last line of defence: masks anything in free text that looks like card data, whatever field it
 * sits in. Track-like strings become `[TRACK1]` / `[TRACK2]`; a digit run that is one card number
 * is masked to first 6 / last 4; a run that holds one among other digits becomes `[PAN]`.
 */
export function redactText(text: string): string {
  if (!mayHoldCardData(text)) return text;
  const found = findings(text);
  if (found.length === 0) return text;
  let out = "";
  let last = 0;
  for (const f of found) {
    out += text.slice(last, f.start) + f.replacement;
    last = f.end;
  }
  return out + text.slice(last);
}

/** A number with 13+ digits is judged as its decimal text; one that holds a PAN is logged masked. */
function redactNumber(value: number | bigint): number | bigint | string {
  if (typeof value === "number" && !Number.isInteger(value)) return value;
  const text = String(value);
  if (text.replace("-", "").length < 13) return value;
  const masked = redactText(text);
  return masked === text ? value : masked;
}

/** Deep copy of a value with every string (and object key) passed through redactText. Cycles are cut. */
export function redactDeep(value: unknown, seen = new WeakSet<object>()): unknown {
  if (typeof value === "string") return redactText(value);
  if (typeof value === "number" || typeof value === "bigint") return redactNumber(value);
  if (value === null || typeof value !== "object") return value;
  if (seen.has(value)) return "[Circular]";
  seen.add(value);
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, seen));
  if (value instanceof Error) {
    return { type: value.name, message: redactText(value.message), code: (value as { code?: unknown }).code };
  }
  if (Buffer.isBuffer(value)) return `[Buffer ${value.length} bytes]`;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[redactText(k)] = redactDeep(v, seen);
  return out;
}
