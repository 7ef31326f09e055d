import type { DeviceFault } from "../device-fault.js";
import type { Coercivity, MagstripeTracks } from "./encoder.js";
import { isEncodableTrack, TRACK_SPECS, type TrackNumber } from "./iso7813.js";

/**
 * MSR206 / MSR605 command set (shared/devices.md §2, docs/devices.md "Magnetic stripe encoder"), pure
 * functions over Buffer. The same bytes travel over a serial line (MSR206) and, cut into 64-byte
 * reports, over USB HID (MSR605X, `hid-framing.ts`).
 *
 * Host → device: `ESC <command>` and, for ISO write, a data block
 * `1B 73 1B 01 <t1> 1B 02 <t2> 1B 03 <t3> 3F 1C`. Device → host: `ESC <status>`, `ESC y` (test),
 * `ESC h` / `ESC l` (coercivity), `ESC <model> S`, `ESC REV?X.XX` (firmware) and the read answer
 * `1B 73 1B 01 … 1B 02 … 1B 03 … 3F 1C 1B <status>`, where a track's text may be replaced by a
 * marker: `ESC +` for a track with no data, `ESC *` for a track the head could not decode.
 *
 * Every input here may be card data: errors name tracks and codes, never their content.
 */

export const ESC = 0x1b;
export const FS = 0x1c;
/** `?`: closes the data block, before FS. */
export const BLOCK_END = 0x3f;
/** `s`: opens a data block. */
export const BLOCK_START = 0x73;
/** Longest track text accepted in a data block: ISO limits with sentinels (79/40/107) plus headroom. */
export const MAX_BLOCK_TRACK_CHARS = 128;
/**
 * `+` after `ESC <n>` in a read answer: the track is there but has no data (libmsr `MSR_RW_EMPTY`,
 * "the empty delimiter occurs when reading a track with no data").
 */
export const EMPTY_TRACK_MARK = 0x2b;
/** `*` after `ESC <n>` in a read answer: the head saw the track but could not decode it (libmsr `MSR_RW_BAD`). */
export const BAD_TRACK_MARK = 0x2a;

/** Host → device command bytes (after ESC). */
export const MSR206_COMMAND = {
  reset: 0x61, // a: no answer
  test: 0x65, // e: answers ESC y
  readIso: 0x72, // r: answers a data block + ESC status
  writeIso: 0x77, // w: + data block, answers ESC status
  erase: 0x63, // c: + selector byte, answers ESC status
  hico: 0x78, // x: answers ESC status
  loco: 0x79, // y: answers ESC status
  coercivity: 0x64, // d: answers ESC h / ESC l
  model: 0x74, // t: answers ESC <model> S
  firmware: 0x76, // v: answers ESC REV?X.XX
} as const;

export type Msr206CommandName = keyof typeof MSR206_COMMAND;

/** Status byte of `ESC <status>` answers, by meaning. `FAILURE` (`A`) answers erase and coercivity. */
export type Msr206Status =
  | "OK"
  | "READ_WRITE_ERROR"
  | "COMMAND_FORMAT_ERROR"
  | "INVALID_COMMAND"
  | "INVALID_SWIPE"
  | "FAILURE";

export const STATUS_BYTES: Readonly<Record<Msr206Status, number>> = {
  OK: 0x30, // '0'
  READ_WRITE_ERROR: 0x31, // '1'
  COMMAND_FORMAT_ERROR: 0x32, // '2'
  INVALID_COMMAND: 0x34, // '4'
  INVALID_SWIPE: 0x39, // '9': invalid card swipe in write mode
  FAILURE: 0x41, // 'A'
};

const STATUS_BY_BYTE = new Map<number, Msr206Status>(
  Object.entries(STATUS_BYTES).map(([status, byte]) => [byte, status as Msr206Status]),
);

export function statusOfByte(byte: number): Msr206Status | undefined {
  return STATUS_BY_BYTE.get(byte);
}

/** Track text of a write block, as the host sends it; `""` = leave that track as it is. */
export interface BlockTracks {
  track1: string;
  track2: string;
  track3: string;
}

/**
 * One track of a read answer. Three different things, kept apart because they mean different things
 * to the verification: `data` is text the device decoded (never empty; sentinels as the unit sends
 * them), `empty` a track with nothing on it (`ESC +`, or no text at all as the programmer's manuals
 * show it), `bad` a track the head saw but could not decode (`ESC *`, parity or LRC wrong).
 */
export type TrackRead = { status: "data"; text: string } | { status: "empty" } | { status: "bad" };

export const EMPTY_TRACK: TrackRead = Object.freeze({ status: "empty" });
export const BAD_TRACK: TrackRead = Object.freeze({ status: "bad" });

export function dataTrack(text: string): TrackRead {
  return { status: "data", text };
}

/** The three tracks of a read answer. */
export interface ReadTracks {
  track1: TrackRead;
  track2: TrackRead;
  track3: TrackRead;
}

/** One device → host frame, decoded. */
export type Msr206Reply =
  | { kind: "status"; status: Msr206Status }
  | { kind: "test-ok" }
  | { kind: "coercivity"; coercivity: Coercivity }
  | { kind: "read"; tracks: ReadTracks; status: Msr206Status }
  | { kind: "model"; model: string }
  | { kind: "firmware"; version: string };

/** What the host did when a status came back: the status means different things per operation. */
export type Msr206Operation = "write" | "read" | "erase" | "command";

/**
 * A status as a `DeviceFault`, or undefined for `OK`. `1` on a write, `9` (a bad swipe in write
 * mode) and `A` on a write or erase mean the stripe was not written (`MAG_WRITE`); `1` on a read is
 * `MAG_READ`; a format error or an unknown command is `COMMAND_REJECTED`.
 */
export function faultOfStatus(status: Msr206Status, operation: Msr206Operation): DeviceFault | undefined {
  switch (status) {
    case "OK":
      return undefined;
    case "COMMAND_FORMAT_ERROR":
    case "INVALID_COMMAND":
      return "COMMAND_REJECTED";
    case "READ_WRITE_ERROR":
    case "INVALID_SWIPE":
    case "FAILURE":
      if (operation === "write" || operation === "erase") return "MAG_WRITE";
      if (operation === "read") return "MAG_READ";
      return "COMMAND_REJECTED";
  }
}

// ---------------------------------------------------------------------------------------------
// Host → device

/** `ESC <command>` for the commands without parameters. */
export function encodeCommand(name: Exclude<Msr206CommandName, "writeIso" | "erase">): Buffer {
  return Buffer.of(ESC, MSR206_COMMAND[name]);
}

export function encodeSetCoercivity(coercivity: Coercivity): Buffer {
  return encodeCommand(coercivity === "HICO" ? "hico" : "loco");
}

function isPrintable(byte: number): boolean {
  return byte >= 0x20 && byte <= 0x7e;
}

/**
 * Track text as block bytes. It must be printable ASCII, or the block could not be told apart from
 * its markers: RangeError (naming the track, not its text) otherwise.
 */
function blockText(n: TrackNumber, text: string): Buffer {
  const bytes = Buffer.from(text, "latin1");
  if (bytes.length > MAX_BLOCK_TRACK_CHARS || !bytes.every(isPrintable) || bytes.length !== text.length) {
    throw new RangeError(`track ${n} text cannot go into a data block`);
  }
  return bytes;
}

/** `1B 73 1B 01 <t1> 1B 02 <t2> 1B 03 <t3> 3F 1C`, the write block. Absent tracks are empty. */
export function encodeDataBlock(tracks: Partial<BlockTracks>): Buffer {
  const parts: Buffer[] = [Buffer.of(ESC, BLOCK_START)];
  for (const n of [1, 2, 3] as const) parts.push(Buffer.of(ESC, n), blockText(n, tracks[`track${n}`] ?? ""));
  parts.push(Buffer.of(BLOCK_END, FS));
  return Buffer.concat(parts);
}

/**
 * `ESC w` + data block. Throws RangeError (naming the track, not its data) unless every given
 * track is ISO-mode encodable and at least one is given. An absent track is sent empty: the device
 * leaves it as it is (docs/devices.md).
 */
export function encodeWriteIso(tracks: MagstripeTracks): Buffer {
  let any = false;
  for (const n of [1, 2, 3] as const) {
    const data = tracks[`track${n}`];
    if (data === undefined) continue;
    if (!isEncodableTrack(n, data)) throw new RangeError(`track ${n} data is not ISO 7813 encodable`);
    any = true;
  }
  if (!any) throw new RangeError("an ISO write needs at least one track");
  return Buffer.concat([Buffer.of(ESC, MSR206_COMMAND.writeIso), encodeDataBlock(tracks)]);
}

/**
 * The erase selector byte: track 1 alone is `00`, otherwise bit 0/1/2 = track 1/2/3
 * (`02` track 2, `04` track 3, `03` 1+2, `05` 1+3, `06` 2+3, `07` all).
 */
export function eraseSelector(tracks: readonly TrackNumber[]): number {
  if (tracks.length === 0) throw new RangeError("erase needs at least one track");
  let bits = 0;
  for (const n of tracks) bits |= 1 << (n - 1);
  return bits === 0b001 ? 0x00 : bits;
}

/** The tracks an erase selector names, or undefined for a selector the device does not know. */
export function tracksOfEraseSelector(selector: number): TrackNumber[] | undefined {
  if (selector === 0x00) return [1];
  if (selector < 0x02 || selector > 0x07) return undefined;
  return ([1, 2, 3] as const).filter((n) => (selector & (1 << (n - 1))) !== 0);
}

export function encodeErase(tracks: readonly TrackNumber[]): Buffer {
  return Buffer.of(ESC, MSR206_COMMAND.erase, eraseSelector(tracks));
}

// ---------------------------------------------------------------------------------------------
// Device → host (the simulator's side, and test fixtures)

export function encodeStatusReply(status: Msr206Status): Buffer {
  return Buffer.of(ESC, STATUS_BYTES[status]);
}

/** `ESC y`: the answer to the communication test. */
export function encodeTestReply(): Buffer {
  return Buffer.of(ESC, 0x79);
}

export function encodeCoercivityReply(coercivity: Coercivity): Buffer {
  return Buffer.of(ESC, coercivity === "HICO" ? 0x68 : 0x6c);
}

/** `ESC <model> S`, model one printable character (`3` = three tracks). */
export function encodeModelReply(model: string): Buffer {
  if (model.length !== 1 || !isPrintable(model.charCodeAt(0))) throw new RangeError("model is one character");
  return Buffer.concat([Buffer.of(ESC), Buffer.from(`${model}S`, "latin1")]);
}

/** Firmware answers are `REV` + 5 printable characters (`REV?X.XX`), an assumption (docs/devices.md). */
export const FIRMWARE_REPLY_CHARS = 8;

export function encodeFirmwareReply(version: string): Buffer {
  if (!/^REV[\x20-\x7e]{5}$/.test(version)) throw new RangeError("firmware version is REV + 5 characters");
  return Buffer.concat([Buffer.of(ESC), Buffer.from(version, "latin1")]);
}

/**
 * The data block of a read answer: each track as its text, `ESC +` (empty; also for an absent track)
 * or `ESC *` (bad). Data text must be non-empty and not `*`, which would read back as a marker.
 */
export function encodeReadBlock(tracks: Partial<ReadTracks>): Buffer {
  const parts: Buffer[] = [Buffer.of(ESC, BLOCK_START)];
  for (const n of [1, 2, 3] as const) {
    const track = tracks[`track${n}`] ?? EMPTY_TRACK;
    parts.push(Buffer.of(ESC, n));
    if (track.status === "empty") parts.push(Buffer.of(ESC, EMPTY_TRACK_MARK));
    else if (track.status === "bad") parts.push(Buffer.of(ESC, BAD_TRACK_MARK));
    else if (track.text === "" || track.text === "*") {
      throw new RangeError(`track ${n} data text would read back as a marker`);
    } else parts.push(blockText(n, track.text));
  }
  parts.push(Buffer.of(BLOCK_END, FS));
  return Buffer.concat(parts);
}

/** Read block + `ESC <status>`. */
export function encodeReadAnswer(tracks: Partial<ReadTracks>, status: Msr206Status): Buffer {
  return Buffer.concat([encodeReadBlock(tracks), encodeStatusReply(status)]);
}

/**
 * Track data out of read-back text: the device may or may not send the sentinels (never the LRC);
 * track data cannot contain them, so they are removed where they stand.
 */
export function trackDataOf(n: TrackNumber, text: string): string {
  const spec = TRACK_SPECS[n];
  let start = 0;
  let end = text.length;
  if (text.startsWith(spec.start)) start = 1;
  if (end > start && text.endsWith(spec.end)) end--;
  return text.slice(start, end);
}

// ---------------------------------------------------------------------------------------------
// Incremental parsing, shared by the host-side reply parser and the device-side command parser

/** What one parsing step found at the head of a buffer. */
export type ScanStep<T> =
  /** A whole frame of `length` bytes. */
  | { kind: "frame"; value: T; length: number }
  /** The head may be the start of a frame: wait for more bytes. */
  | { kind: "need-more" }
  /** `length` bytes before the next ESC: line noise. */
  | { kind: "noise"; length: number }
  /** A frame that went wrong after `length` bytes: drop them and look again from there. */
  | { kind: "broken"; length: number };

const NEED_MORE = { kind: "need-more" } as const;

/** Which way a data block travels: only read answers carry the `ESC +` / `ESC *` markers. */
export type DataBlockDirection = "write" | "read";

const TRACK_MARKS = new Map<number, TrackRead>([
  [EMPTY_TRACK_MARK, EMPTY_TRACK],
  [BAD_TRACK_MARK, BAD_TRACK],
]);

/**
 * A track's text as a `TrackRead`. No text at all is an empty track (the programmer's manuals show an
 * empty track as `1B 01` followed by the next marker). In a read answer a text of just `*` is a bad
 * track too, for units that send the mark without its ESC: no real track is that one character.
 */
function trackOfText(text: string, direction: DataBlockDirection): TrackRead {
  if (text.length === 0) return EMPTY_TRACK;
  if (direction === "read" && text === "*") return BAD_TRACK;
  return dataTrack(text);
}

/**
 * Scans a data block starting at `at` (which holds `ESC s`). Returns the tracks and the index just
 * past `3F 1C`; `need-more` while the block is incomplete; `broken` with the index where it stopped
 * making sense. An ESC in the wrong place is not consumed (`broken.length` stops before it), so it
 * can start the next frame: that is how a cut-off block followed by a fresh answer resynchronises.
 *
 * In a read answer (`direction: "read"`) a track's text may be replaced by `ESC +` (empty) or
 * `ESC *` (bad), right after its `ESC <n>`: `1B 01 1B 2B 1B 02 …`, and for track 3
 * `1B 03 1B 2B 3F 1C`. Every decision that needs a byte not yet there answers `need-more`, so the
 * result does not depend on where the stream was cut.
 */
export function scanDataBlock(
  buf: Buffer,
  at: number,
  direction: DataBlockDirection,
):
  | { kind: "block"; tracks: ReadTracks; end: number }
  | { kind: "need-more" }
  | { kind: "broken"; length: number } {
  let i = at + 2; // past ESC s
  const tracks: TrackRead[] = [];
  for (const n of [1, 2, 3] as const) {
    // ESC <n>
    if (i >= buf.length) return NEED_MORE;
    if (buf[i] !== ESC) return { kind: "broken", length: Math.max(1, i - at) };
    if (i + 1 >= buf.length) return NEED_MORE;
    if (buf[i + 1] !== n) return { kind: "broken", length: i - at };
    i += 2;
    if (direction === "read") {
      // ESC + / ESC * in place of the text. Any other ESC after tracks 1/2 is the next track's
      // (no text: empty); after track 3 it is out of place and breaks the block below.
      if (i >= buf.length) return NEED_MORE;
      if (buf[i] === ESC) {
        if (i + 1 >= buf.length) return NEED_MORE;
        const mark = TRACK_MARKS.get(buf[i + 1]!);
        if (mark) {
          tracks.push(mark);
          i += 2;
          if (n === 3) {
            // The block's `? FS` follows track 3's marker.
            if (i >= buf.length) return NEED_MORE;
            if (buf[i] !== BLOCK_END) return { kind: "broken", length: i - at };
            if (i + 1 >= buf.length) return NEED_MORE;
            if (buf[i + 1] !== FS) return { kind: "broken", length: i - at };
            i += 2;
          }
          continue;
        }
      }
    }
    const start = i;
    if (n < 3) {
      // Printable text up to the next ESC.
      for (;;) {
        if (i - start > MAX_BLOCK_TRACK_CHARS) return { kind: "broken", length: i - at };
        if (i >= buf.length) return NEED_MORE;
        const byte = buf[i]!;
        if (byte === ESC) break;
        if (!isPrintable(byte)) return { kind: "broken", length: i - at };
        i++;
      }
      tracks.push(trackOfText(buf.toString("latin1", start, i), direction));
    } else {
      // Printable text up to `? FS`: the `?` before FS closes the block, it is not track 3's.
      for (;;) {
        if (i - start > MAX_BLOCK_TRACK_CHARS + 1) return { kind: "broken", length: i - at };
        if (i >= buf.length) return NEED_MORE;
        const byte = buf[i]!;
        if (byte === FS) {
          if (i === start || buf[i - 1] !== BLOCK_END) return { kind: "broken", length: i - at };
          break;
        }
        if (!isPrintable(byte)) return { kind: "broken", length: i - at };
        i++;
      }
      tracks.push(trackOfText(buf.toString("latin1", start, i - 1), direction));
      i++; // past FS
    }
  }
  return { kind: "block", tracks: { track1: tracks[0]!, track2: tracks[1]!, track3: tracks[2]! }, end: i };
}

/** The bytes before the next ESC, as a noise step. */
function noiseStep(buf: Buffer): ScanStep<never> {
  const next = buf.indexOf(ESC);
  return { kind: "noise", length: next === -1 ? buf.length : next };
}

/**
 * One device → host frame at the head of `buf`. `expectModel` is set while an `ESC t` waits for its
 * answer: `ESC 2 S` is then the model, not status `2` followed by an `S`.
 */
export function scanReply(buf: Buffer, expectModel = false): ScanStep<Msr206Reply> {
  if (buf.length === 0) return NEED_MORE;
  if (buf[0] !== ESC) return noiseStep(buf);
  if (buf.length < 2) return NEED_MORE;
  const code = buf[1]!;
  if (expectModel && isPrintable(code)) {
    if (buf.length < 3) return NEED_MORE;
    if (buf[2] === 0x53)
      return { kind: "frame", value: { kind: "model", model: String.fromCharCode(code) }, length: 3 };
  }
  const status = statusOfByte(code);
  if (status) return { kind: "frame", value: { kind: "status", status }, length: 2 };
  switch (code) {
    case 0x79: // y
      return { kind: "frame", value: { kind: "test-ok" }, length: 2 };
    case 0x68: // h
      return { kind: "frame", value: { kind: "coercivity", coercivity: "HICO" }, length: 2 };
    case 0x6c: // l
      return { kind: "frame", value: { kind: "coercivity", coercivity: "LOCO" }, length: 2 };
    case BLOCK_START: {
      const block = scanDataBlock(buf, 0, "read");
      if (block.kind !== "block") return block;
      const i = block.end;
      if (i >= buf.length) return NEED_MORE;
      if (buf[i] !== ESC) return { kind: "broken", length: i };
      if (i + 1 >= buf.length) return NEED_MORE;
      const readStatus = statusOfByte(buf[i + 1]!);
      if (!readStatus) return { kind: "broken", length: i };
      return {
        kind: "frame",
        value: { kind: "read", tracks: block.tracks, status: readStatus },
        length: i + 2,
      };
    }
    case 0x52: {
      // R E V + 5 printable
      const prefix = [0x52, 0x45, 0x56];
      for (let k = 0; k < FIRMWARE_REPLY_CHARS; k++) {
        const at = 1 + k;
        if (at >= buf.length) return NEED_MORE;
        const byte = buf[at]!;
        const fits = k < prefix.length ? byte === prefix[k] : isPrintable(byte);
        if (!fits) return { kind: "broken", length: at };
      }
      const version = buf.toString("latin1", 1, 1 + FIRMWARE_REPLY_CHARS);
      return { kind: "frame", value: { kind: "firmware", version }, length: 1 + FIRMWARE_REPLY_CHARS };
    }
    default:
      // ESC + a byte no answer starts with: drop the ESC, look again from the next byte.
      return { kind: "broken", length: 1 };
  }
}

export interface FrameParserStats {
  /** Bytes thrown away: noise between frames and the bytes of broken or truncated frames. */
  droppedBytes: number;
  /** Frames that started (an ESC) but went wrong or were cut off. */
  droppedFrames: number;
}

/**
 * The loop both directions share. Noise before an ESC is dropped and counted; a frame that goes
 * wrong is dropped up to the point where it went wrong and scanning resumes there; a frame that is
 * not complete yet waits for more bytes. Whether it waits too long is the caller's business: on its
 * timeout it calls `discardPartial()`. Held bytes are bounded by the longest frame.
 */
export abstract class FrameScanner<T> {
  private readonly counters: FrameParserStats = { droppedBytes: 0, droppedFrames: 0 };
  private pending: Buffer = Buffer.alloc(0);

  protected abstract scan(buf: Buffer): ScanStep<T>;

  get stats(): FrameParserStats {
    return { ...this.counters };
  }

  /** Bytes held for an incomplete frame. */
  get buffered(): number {
    return this.pending.length;
  }

  /** The complete frames in held bytes + `chunk`, in order; keeps an incomplete tail. */
  push(chunk: Buffer): T[] {
    const buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: T[] = [];
    let offset = 0;
    while (offset < buf.length) {
      const step = this.scan(buf.subarray(offset));
      if (step.kind === "need-more") break;
      if (step.kind === "frame") {
        out.push(step.value);
        offset += step.length;
        continue;
      }
      const n = Math.max(1, step.length);
      this.counters.droppedBytes += n;
      if (step.kind === "broken") this.counters.droppedFrames++;
      offset += n;
    }
    // A copy: a held slice must not pin the caller's (possibly large) buffer.
    this.pending = offset < buf.length ? Buffer.from(buf.subarray(offset)) : Buffer.alloc(0);
    return out;
  }

  /** Drops a frame still waiting for bytes (the caller's timeout), counting it. Returns the bytes dropped. */
  discardPartial(): number {
    const n = this.pending.length;
    if (n > 0) {
      this.counters.droppedFrames++;
      this.counters.droppedBytes += n;
    }
    this.pending = Buffer.alloc(0);
    return n;
  }

  /** Forgets held bytes without counting them (the link closed). */
  reset(): void {
    this.pending = Buffer.alloc(0);
  }
}

/** Incremental device → host parser: `push()` bytes as they arrive, get decoded replies. */
export class Msr206ReplyParser extends FrameScanner<Msr206Reply> {
  /** Set while an `ESC t` waits for its answer (see `scanReply`). */
  expectModel = false;

  protected scan(buf: Buffer): ScanStep<Msr206Reply> {
    return scanReply(buf, this.expectModel);
  }

  override reset(): void {
    super.reset();
    this.expectModel = false;
  }
}
