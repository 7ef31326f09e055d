import { luhnValid } from "../../agent/log/mask.js";
import { CodedError } from "../../agent/util/errors.js";

/**
 * ISO/IEC 7813 magnetic stripe track formats (shared/devices.md §4), pure functions only.
 *
 * "Data" below is what jobs carry and what an ISO-mode encoder accepts: the track content without
 * start sentinel, end sentinel and LRC. "Formatted" is what sits on the stripe: sentinels + data + LRC.
 *
 * Nothing here puts track content into an error: results and errors carry a code only, because every
 * input to this module is card data.
 */

export type TrackNumber = 1 | 2 | 3;

export type TrackErrorCode =
  | "EMPTY"
  | "TOO_LONG"
  | "BAD_CHARACTER"
  | "NO_START_SENTINEL"
  | "NO_END_SENTINEL"
  | "BAD_LRC"
  | "BAD_FORMAT_CODE"
  | "NO_SEPARATOR"
  | "BAD_PAN"
  | "PAN_CHECK_DIGIT"
  | "BAD_NAME"
  | "BAD_EXPIRY"
  | "BAD_SERVICE_CODE";

export type TrackResult<T> = { ok: true; value: T } | { ok: false; error: TrackErrorCode };

export class TrackDataError extends CodedError<TrackErrorCode> {}

export interface TrackSpec {
  readonly start: string;
  readonly end: string;
  readonly separator: string;
  /** Subtracted from the ASCII code to get the code written on the stripe. */
  readonly offset: number;
  /** Data bits per character; the parity bit sits just above them. */
  readonly dataBits: 6 | 4;
  /** Longest data, sentinels and LRC excluded (the MSR206 ISO-mode limits). */
  readonly maxData: number;
}

export const TRACK_SPECS: Readonly<Record<TrackNumber, TrackSpec>> = {
  1: { start: "%", end: "?", separator: "^", offset: 0x20, dataBits: 6, maxData: 76 },
  2: { start: ";", end: "?", separator: "=", offset: 0x30, dataBits: 4, maxData: 37 },
  3: { start: ";", end: "?", separator: "=", offset: 0x30, dataBits: 4, maxData: 104 },
};

/** Whether `code` can be written at all on track `n` (sentinels and control characters included). */
export function isTrackCharCode(n: TrackNumber, code: number): boolean {
  const spec = TRACK_SPECS[n];
  return code >= spec.offset && code < spec.offset + (1 << spec.dataBits);
}

/**
 * Whether a character may appear in track data. Sentinels are excluded: a sentinel inside the data
 * would end the track early on a reader. Tracks 2/3 also exclude the 4-bit control characters
 * (`:` `<` `>`), which ISO 7813 reserves and no issuer sends.
 */
export function isTrackDataChar(n: TrackNumber, ch: string): boolean {
  if (ch.length !== 1) return false;
  const code = ch.charCodeAt(0);
  if (n === 1) return isTrackCharCode(1, code) && ch !== "%" && ch !== "?";
  return (code >= 0x30 && code <= 0x39) || ch === "=";
}

function checkData(n: TrackNumber, data: string): TrackErrorCode | undefined {
  if (data.length === 0) return "EMPTY";
  for (const ch of data) if (!isTrackDataChar(n, ch)) return "BAD_CHARACTER";
  if (data.length > TRACK_SPECS[n].maxData) return "TOO_LONG";
  return undefined;
}

/** `code` (data bits only) with the odd parity bit set above its `dataBits` bits when needed. */
export function withOddParity(code: number, dataBits: number): number {
  let ones = 0;
  for (let b = 0; b < dataBits; b++) ones += (code >> b) & 1;
  return ones % 2 === 0 ? code | (1 << dataBits) : code;
}

/**
 * LRC data bits over `chars` (start sentinel through end sentinel). Parity bits are excluded: the
 * LRC gets its own odd parity when written, it is not the XOR of the characters' parity bits.
 */
export function lrc(n: TrackNumber, chars: string): number {
  const spec = TRACK_SPECS[n];
  const mask = (1 << spec.dataBits) - 1;
  let acc = 0;
  for (let i = 0; i < chars.length; i++) acc ^= (chars.charCodeAt(i) - spec.offset) & mask;
  return acc;
}

/** Sentinels + data + LRC character. Throws TrackDataError (code only) on data the track cannot hold. */
export function formatTrack(n: TrackNumber, data: string): string {
  const problem = checkData(n, data);
  if (problem) throw new TrackDataError(problem, `track ${n} data rejected: ${problem}`);
  const spec = TRACK_SPECS[n];
  const body = spec.start + data + spec.end;
  return body + String.fromCharCode(lrc(n, body) + spec.offset);
}

/**
 * Inverse of formatTrack: checks sentinels, data characters and LRC, returns the data. The LRC
 * character is required and is always the last one; it may itself be `?` or `%`, so the end sentinel
 * is looked for at its fixed position rather than searched.
 */
export function parseFormattedTrack(n: TrackNumber, text: string): TrackResult<string> {
  const spec = TRACK_SPECS[n];
  if (text.length === 0 || text[0] !== spec.start) return { ok: false, error: "NO_START_SENTINEL" };
  if (text.length < 3 || text[text.length - 2] !== spec.end) return { ok: false, error: "NO_END_SENTINEL" };
  const data = text.slice(1, -2);
  const problem = checkData(n, data);
  if (problem) return { ok: false, error: problem };
  const lrcCode = text.charCodeAt(text.length - 1);
  if (!isTrackCharCode(n, lrcCode) || lrcCode - spec.offset !== lrc(n, text.slice(0, -1))) {
    return { ok: false, error: "BAD_LRC" };
  }
  return { ok: true, value: data };
}

/**
 * Per-character codes as the head writes them, start sentinel through LRC: data bits in the low bits
 * (bit 0 written first) and the odd parity bit above them (bit 6 on track 1, bit 4 on tracks 2/3).
 */
export function bitsForTrack(n: TrackNumber, formatted: string): number[] {
  const parsed = parseFormattedTrack(n, formatted);
  if (!parsed.ok) throw new TrackDataError(parsed.error, `track ${n} not formatted: ${parsed.error}`);
  const spec = TRACK_SPECS[n];
  const out: number[] = [];
  for (let i = 0; i < formatted.length; i++) {
    out.push(withOddParity(formatted.charCodeAt(i) - spec.offset, spec.dataBits));
  }
  return out;
}

export interface TrackFields {
  pan: string;
  /** Track 1 only, as written (`SURNAME/GIVEN`, trailing spaces kept). */
  name?: string;
  /** YYMM. */
  expiry: string;
  serviceCode: string;
  discretionary: string;
}

const DIGITS = /^[0-9]+$/;

/** YYMM with a month 01–12. Whether the date is past is the issuer's business, not the format's. */
export function isValidExpiry(yymm: string): boolean {
  if (yymm.length !== 4 || !DIGITS.test(yymm)) return false;
  const month = Number(yymm.slice(2));
  return month >= 1 && month <= 12;
}

function checkPan(pan: string): TrackErrorCode | undefined {
  if (pan.length < 13 || pan.length > 19 || !DIGITS.test(pan)) return "BAD_PAN";
  return luhnValid(pan) ? undefined : "PAN_CHECK_DIGIT";
}

/** Expiry, service code and discretionary data, which follow the same layout on tracks 1 and 2. */
function parseTail(rest: string): TrackResult<Pick<TrackFields, "expiry" | "serviceCode" | "discretionary">> {
  const expiry = rest.slice(0, 4);
  if (!isValidExpiry(expiry)) return { ok: false, error: "BAD_EXPIRY" };
  const serviceCode = rest.slice(4, 7);
  if (serviceCode.length !== 3 || !DIGITS.test(serviceCode)) return { ok: false, error: "BAD_SERVICE_CODE" };
  return { ok: true, value: { expiry, serviceCode, discretionary: rest.slice(7) } };
}

/**
 * Track 1 data (format code B): `B` PAN `^` NAME `^` YYMM service-code discretionary. ISO 7813
 * lets an issuer leave out expiry or service code; a card produced here must carry both.
 */
export function parseTrack1(data: string): TrackResult<TrackFields> {
  const problem = checkData(1, data);
  if (problem) return { ok: false, error: problem };
  if (data[0] !== "B") return { ok: false, error: "BAD_FORMAT_CODE" };
  const sep1 = data.indexOf("^", 1);
  if (sep1 < 0) return { ok: false, error: "NO_SEPARATOR" };
  const pan = data.slice(1, sep1);
  const panProblem = checkPan(pan);
  if (panProblem) return { ok: false, error: panProblem };
  const sep2 = data.indexOf("^", sep1 + 1);
  if (sep2 < 0) return { ok: false, error: "NO_SEPARATOR" };
  const name = data.slice(sep1 + 1, sep2);
  if (name.length < 2 || name.length > 26) return { ok: false, error: "BAD_NAME" };
  const tail = parseTail(data.slice(sep2 + 1));
  if (!tail.ok) return tail;
  return { ok: true, value: { pan, name, ...tail.value } };
}

/** Track 2 data: PAN `=` YYMM service-code discretionary. */
export function parseTrack2(data: string): TrackResult<TrackFields> {
  const problem = checkData(2, data);
  if (problem) return { ok: false, error: problem };
  const sep = data.indexOf("=");
  if (sep < 0) return { ok: false, error: "NO_SEPARATOR" };
  const pan = data.slice(0, sep);
  const panProblem = checkPan(pan);
  if (panProblem) return { ok: false, error: panProblem };
  const tail = parseTail(data.slice(sep + 1));
  if (!tail.ok) return tail;
  return { ok: true, value: { pan, ...tail.value } };
}

/** Track 3 has no fixed layout we rely on (ISO 4909 is issuer-specific in practice): charset and length. */
export function checkTrack3(data: string): TrackResult<string> {
  const problem = checkData(3, data);
  return problem ? { ok: false, error: problem } : { ok: true, value: data };
}

/**
 * Track data as an encoder takes it in ISO mode: no sentinels, no LRC (the encoder adds them),
 * ISO 7813 characters, within the per-track limits (76 / 37 / 104). Checked before anything goes on
 * the wire so bad data never reaches a device.
 */
export function isEncodableTrack(n: TrackNumber, data: string): boolean {
  if (data.length === 0 || data.length > TRACK_SPECS[n].maxData) return false;
  for (const ch of data) if (!isTrackDataChar(n, ch)) return false;
  return true;
}
