import { CR, ESC } from "./codec.js";
import { type EvolisCommandName, isEvolisCommand } from "./commands.js";
import { MAX_KO_PAYLOAD_BYTES } from "./ko-compression.js";
import { PANEL_BYTES } from "./panel.js";

/**
 * Device side of the Evolis wire format: turns the host's byte stream into commands. The simulator
 * runs on it; it lives next to the codec because it is the same protocol read backwards.
 *
 * Framing (guide §3): ESC, the command, `;`-separated parameters, CR; "the Start Character is not
 * compulsory after the CR character", so a letter right after a CR also starts a command. Bitmaps
 * are binary and may contain CR, ESC or NUL, so `Db`/`Dbc` frames are cut by length (a full panel
 * for `Db;k;2;`, the declared count for `Dbc;k;2;<n>;`), never by searching for CR. NUL padding
 * between commands (the Windows driver ends a job with it) is noise before the next ESC.
 */
export type ParsedCommand =
  | { kind: "command"; name: EvolisCommandName; params: string[]; binary?: Buffer }
  /** Well framed, but not a command an Evolis knows: answered `ERROR CDE`. */
  | { kind: "unknown"; name: string }
  /** A bitmap whose declared length or trailer is wrong: answered `ERROR PARAMETRES`. */
  | { kind: "malformed"; name: string };

/** Longest text header a frame may have; the longest legitimate one is `Dm;3;` + 104 characters. */
const MAX_HEADER = 256;

type State =
  | { at: "idle"; afterCr: boolean }
  | { at: "header"; bytes: number[] }
  | { at: "binary"; name: "Db" | "Dbc"; params: string[]; chunks: Buffer[]; remaining: number }
  | { at: "trailer"; name: "Db" | "Dbc"; params: string[]; binary: Buffer };

export class CommandParser {
  /** Bytes seen outside any frame (noise or padding before an ESC). */
  droppedBytes = 0;
  /** Frames abandoned: non-printable header, overlong header, or cut short by the next ESC. */
  droppedFrames = 0;
  private state: State = { at: "idle", afterCr: false };

  /** Forgets a half-received frame, e.g. when the line was cut. */
  reset(): void {
    this.state = { at: "idle", afterCr: false };
  }

  push(chunk: Buffer): ParsedCommand[] {
    const out: ParsedCommand[] = [];
    let i = 0;
    while (i < chunk.length) {
      const state = this.state;
      if (state.at === "binary") {
        const take = Math.min(state.remaining, chunk.length - i);
        state.chunks.push(Buffer.from(chunk.subarray(i, i + take)));
        state.remaining -= take;
        i += take;
        if (state.remaining === 0) {
          this.state = {
            at: "trailer",
            name: state.name,
            params: state.params,
            binary: Buffer.concat(state.chunks),
          };
        }
        continue;
      }
      const byte = chunk[i]!;
      i++;
      switch (state.at) {
        case "idle":
          if (byte === ESC) this.state = { at: "header", bytes: [] };
          else if (state.afterCr && isLetter(byte)) this.state = { at: "header", bytes: [byte] };
          else {
            this.droppedBytes++;
            this.state = { at: "idle", afterCr: byte === CR };
          }
          break;
        case "trailer":
          if (byte === CR) {
            out.push({ kind: "command", name: state.name, params: state.params, binary: state.binary });
            this.state = { at: "idle", afterCr: true };
          } else {
            out.push({ kind: "malformed", name: state.name });
            this.state = { at: "idle", afterCr: false };
            i--; // the stray byte may be the ESC of the next command
          }
          break;
        case "header":
          this.onHeaderByte(state, byte, out);
          break;
      }
    }
    return out;
  }

  private onHeaderByte(state: { at: "header"; bytes: number[] }, byte: number, out: ParsedCommand[]): void {
    if (byte === CR) {
      out.push(textCommand(Buffer.from(state.bytes).toString("latin1")));
      this.state = { at: "idle", afterCr: true };
      return;
    }
    if (byte === ESC) {
      // A text frame cannot contain ESC: the previous command was cut short.
      this.droppedFrames++;
      this.state = { at: "header", bytes: [] };
      return;
    }
    if (byte < 0x20 || byte > 0x7e || state.bytes.length >= MAX_HEADER) {
      this.droppedFrames++;
      this.state = { at: "idle", afterCr: false };
      return;
    }
    state.bytes.push(byte);
    if (byte === 0x3b /* ; */) this.maybeStartBinary(state.bytes, out);
  }

  /** `Db;k;2;` and `Dbc;k;2;<len>;` switch to reading a counted binary block. */
  private maybeStartBinary(header: number[], out: ParsedCommand[]): void {
    const fields = Buffer.from(header).toString("latin1").split(";");
    const name = fields[0];
    const separators = fields.length - 1;
    if (name === "Db" && separators === 3) {
      if (fields[2] !== "2") {
        // Only 2-level (K/O) panels have a size this printer model reads; colour data cannot be skipped.
        out.push({ kind: "malformed", name });
        this.state = { at: "idle", afterCr: false };
        return;
      }
      this.state = { at: "binary", name, params: fields.slice(1, 3), chunks: [], remaining: PANEL_BYTES };
    } else if (name === "Dbc" && separators === 4) {
      const declared = fields[3] ?? "";
      const length = /^\d{1,7}$/.test(declared) ? Number(declared) : Number.NaN;
      if (!(length > 0 && length <= MAX_KO_PAYLOAD_BYTES)) {
        // The payload length is unknown, so the bytes that follow cannot be skipped reliably; they
        // fall through as noise until the next ESC.
        out.push({ kind: "malformed", name });
        this.state = { at: "idle", afterCr: false };
        return;
      }
      this.state = { at: "binary", name, params: fields.slice(1, 4), chunks: [], remaining: length };
    }
  }
}

function isLetter(byte: number): boolean {
  return (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
}

function textCommand(header: string): ParsedCommand {
  const separator = header.indexOf(";");
  const name = separator === -1 ? header : header.slice(0, separator);
  if (!isEvolisCommand(name)) return { kind: "unknown", name };
  if (separator === -1) return { kind: "command", name, params: [] };
  const rest = header.slice(separator + 1);
  if (name === "Dm") {
    // Track data runs to CR and may itself contain `;` (track 1 allows it).
    const cut = rest.indexOf(";");
    return { kind: "command", name, params: cut === -1 ? [rest] : [rest.slice(0, cut), rest.slice(cut + 1)] };
  }
  return { kind: "command", name, params: rest.split(";") };
}
