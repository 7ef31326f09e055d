/**
 * Masking of card data for anything that leaves the process as text (logs, errors, records).
 * The rule of the house: a PAN appears only as first 6 / last 4.
 */

/** `5266092201416174` → `526609******6174`. Short or non-digit input is masked whole. */
export function maskPan(pan: string): string {
  const digits = pan.replace(/[^0-9]/g, "");
  if (digits.length < 13) return "*".repeat(digits.length || 4);
  return `${digits.slice(0, 6)}${"*".repeat(digits.length - 10)}${digits.slice(-4)}`;
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

// A digit run of 13–19 digits, optionally grouped by single spaces or dashes ("5266 0922 0141 6174").
const DIGIT_RUN = /\d(?:[ -]?\d){12,22}/g;
// UUIDs (every operationId) are left whole: their dash-separated digit groups can form a Luhn-valid
// run, and masking one at random would cost operations the id that correlates a card's log lines.
const UUID = /[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/g;
// Track 2 body (PAN=YYMM…) and track 1 body (B PAN ^ NAME ^ YYMM…), with or without sentinels.
const TRACK2_LIKE = /;?\d{12,19}=\d{4,}\??/g;
const TRACK1_LIKE = /%?B\d{12,19}\^[^^\n]{0,26}\^\d{4,}[^\s"',}]*/g;

/**
 * Last line of defence: masks anything in free text that looks like card data, whatever field it
 * sits in. Track-like strings go first (they contain the PAN), then any Luhn-valid 13–19 digit run.
 */
export function redactText(text: string): string {
  if (!/\d{4}/.test(text)) return text;
  let out = "";
  let last = 0;
  for (const m of text.matchAll(UUID)) {
    out += redactCardData(text.slice(last, m.index)) + m[0];
    last = m.index + m[0].length;
  }
  return out + redactCardData(text.slice(last));
}

function redactCardData(text: string): string {
  return text
    .replace(TRACK1_LIKE, "[TRACK1]")
    .replace(TRACK2_LIKE, "[TRACK2]")
    .replace(DIGIT_RUN, (run) => {
      const digits = run.replace(/[ -]/g, "");
      if (digits.length < 13 || digits.length > 19) {
        // Longer runs may embed a PAN; check every 13–19 window.
        return containsLuhnPan(digits) ? maskPan(digits) : run;
      }
      return luhnValid(digits) ? maskPan(digits) : run;
    });
}

function containsLuhnPan(digits: string): boolean {
  for (let len = 13; len <= 19; len++) {
    for (let i = 0; i + len <= digits.length; i++) {
      if (luhnValid(digits.slice(i, i + len))) return true;
    }
  }
  return false;
}

/** Deep copy of a value with every string passed through redactText. Cycles are cut. */
export function redactDeep(value: unknown, seen = new WeakSet<object>()): unknown {
  if (typeof value === "string") return redactText(value);
  if (value === null || typeof value !== "object") return value;
  if (seen.has(value)) return "[Circular]";
  seen.add(value);
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, seen));
  if (value instanceof Error) {
    return { type: value.name, message: redactText(value.message), code: (value as { code?: unknown }).code };
  }
  if (Buffer.isBuffer(value)) return `[Buffer ${value.length} bytes]`;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = redactDeep(v, seen);
  return out;
}
