import { CR, ESC, isPrinterCommand, type PrinterCommandName } from "./codec.js";
import { PANEL_BYTES } from "./raster/geometry.js";

/**
 * Device side of the printer wire format: turns the host's byte stream into commands. The
 * simulator runs on it; it lives next to the codec because it is the same protocol read backwards.
 *
 * Bitmaps are binary and may contain CR or ESC, so `Db`/`Dbc` frames are cut by length (fixed for
 * `Db`, declared for `Dbc`), never by searching for CR. Everything else ends at the first CR.
 */
export type ParsedCommand =
  | { kind: "command"; name: PrinterCommandName; params: string[]; binary?: Buffer }
  /** Well framed, but not a command this printer knows: answered `ERROR CDE`. */
  | { kind: "unknown"; name: string }
  /** A bitmap whose declared length or trailer is wrong: answered `ERROR PARAMETRES`. */
  | { kind: "malformed"; name: string };

/** Longest text header a frame may have; the longest legitimate one is `Dm;3;` + 104 chars. */
const MAX_HEADER = 256;
/** A compressed panel larger than twice the raw one is not a panel. */
export const MAX_COMPRESSED_BITMAP = PANEL_BYTES * 2;

type State =
  | { at: "idle" }
  | { at: "header"; bytes: number[] }
  | { at: "binary"; name: "Db" | "Dbc"; params: string[]; chunks: Buffer[]; remaining: number }
  | { at: "trailer"; name: "Db" | "Dbc"; params: string[]; binary: Buffer };

export class CommandParser {
  /** Bytes seen outside any frame (noise before an ESC). */
  droppedBytes = 0;
  /** Frames abandoned: non-printable header, overlong header, or cut short by the next ESC. */
  droppedFrames = 0;
  private state: State = { at: "idle" };

  /** Forgets a half-received frame, e.g. when the line was cut. */
  reset(): void {
    this.state = { at: "idle" };
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
          else this.droppedBytes++;
          break;
        case "trailer":
          if (byte === CR) {
            out.push({ kind: "command", name: state.name, params: state.params, binary: state.binary });
            this.state = { at: "idle" };
          } else {
            out.push({ kind: "malformed", name: state.name });
            this.state = { at: "idle" };
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
      this.state = { at: "idle" };
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
      this.state = { at: "idle" };
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
      this.state = { at: "binary", name, params: fields.slice(1, 3), chunks: [], remaining: PANEL_BYTES };
    } else if (name === "Dbc" && separators === 4) {
      const declared = fields[3] ?? "";
      const length = /^\d{1,7}$/.test(declared) ? Number(declared) : Number.NaN;
      if (!(length > 0 && length <= MAX_COMPRESSED_BITMAP)) {
        // The payload length is unknown, so the bytes that follow cannot be skipped reliably; they
        // fall through as noise until the next ESC.
        out.push({ kind: "malformed", name });
        this.state = { at: "idle" };
        return;
      }
      this.state = { at: "binary", name, params: fields.slice(1, 4), chunks: [], remaining: length };
    }
  }
}

function textCommand(header: string): ParsedCommand {
  const separator = header.indexOf(";");
  const name = separator === -1 ? header : header.slice(0, separator);
  if (!isPrinterCommand(name)) return { kind: "unknown", name };
  if (separator === -1) return { kind: "command", name, params: [] };
  const rest = header.slice(separator + 1);
  if (name === "Dm") {
    // Track data runs to CR and may itself contain `;` (track 1 allows it).
    const cut = rest.indexOf(";");
    return { kind: "command", name, params: cut === -1 ? [rest] : [rest.slice(0, cut), rest.slice(cut + 1)] };
  }
  return { kind: "command", name, params: rest.split(";") };
}
