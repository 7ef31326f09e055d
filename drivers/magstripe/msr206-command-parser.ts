import type { TrackNumber } from "./iso7813.js";
import {
  BLOCK_START,
  type BlockTracks,
  ESC,
  FrameScanner,
  MSR206_COMMAND,
  type Msr206CommandName,
  type ReadTracks,
  type ScanStep,
  scanDataBlock,
  type TrackRead,
  tracksOfEraseSelector,
} from "./msr206-codec.js";

/**
 * Host → device commands as the encoder sees them: the device side of `msr206-codec.ts`, used by the
 * simulator (and by tests that check what the driver sent).
 */
export type Msr206Command =
  | { kind: Exclude<Msr206CommandName, "writeIso" | "erase"> }
  | { kind: "writeIso"; tracks: BlockTracks }
  | { kind: "erase"; tracks: TrackNumber[] }
  /** `ESC` + a byte that is no command: the device answers status `4`. */
  | { kind: "unknown"; code: number }
  /** A write block or erase selector that does not parse: the device answers status `2`. */
  | { kind: "malformed"; command: "writeIso" | "erase" };

const BY_CODE = new Map<number, Msr206CommandName>(
  Object.entries(MSR206_COMMAND).map(([name, code]) => [code, name as Msr206CommandName]),
);

/** One host → device command at the head of `buf`. */
export function scanCommand(buf: Buffer): ScanStep<Msr206Command> {
  if (buf.length === 0) return { kind: "need-more" };
  if (buf[0] !== ESC) {
    const next = buf.indexOf(ESC);
    return { kind: "noise", length: next === -1 ? buf.length : next };
  }
  if (buf.length < 2) return { kind: "need-more" };
  const code = buf[1]!;
  // ESC ESC: the first one started something that was cut off; the second starts the next command.
  if (code === ESC) return { kind: "broken", length: 1 };
  const name = BY_CODE.get(code);
  if (name === undefined) return { kind: "frame", value: { kind: "unknown", code }, length: 2 };
  if (name === "erase") {
    if (buf.length < 3) return { kind: "need-more" };
    const tracks = tracksOfEraseSelector(buf[2]!);
    return {
      kind: "frame",
      value: tracks ? { kind: "erase", tracks } : { kind: "malformed", command: "erase" },
      length: 3,
    };
  }
  if (name !== "writeIso") return { kind: "frame", value: { kind: name }, length: 2 };
  // ESC w, then the data block ESC s ...
  if (buf.length < 4) return { kind: "need-more" };
  if (buf[2] !== ESC || buf[3] !== BLOCK_START) {
    return { kind: "frame", value: { kind: "malformed", command: "writeIso" }, length: 2 };
  }
  const block = scanDataBlock(buf, 2, "write");
  if (block.kind === "need-more") return block;
  if (block.kind === "broken") {
    // Answered as a format error; what follows the break is looked at again.
    return { kind: "frame", value: { kind: "malformed", command: "writeIso" }, length: 2 + block.length };
  }
  return {
    kind: "frame",
    value: { kind: "writeIso", tracks: writeTextsOf(block.tracks) },
    length: block.end,
  };
}

/** A write block's tracks as text: `""` for a track sent empty (a write block has no bad tracks). */
function writeTextsOf(tracks: ReadTracks): BlockTracks {
  const text = (t: TrackRead): string => (t.status === "data" ? t.text : "");
  return { track1: text(tracks.track1), track2: text(tracks.track2), track3: text(tracks.track3) };
}

/** Incremental host → device parser, the device's end of the line. */
export class Msr206CommandParser extends FrameScanner<Msr206Command> {
  protected scan(buf: Buffer): ScanStep<Msr206Command> {
    return scanCommand(buf);
  }
}
