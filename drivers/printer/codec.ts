import type { DeviceFault } from "../device-fault.js";
import { assertPanelSize } from "./raster/geometry.js";

/**
 * Wire format of the Evolis-style card printer, host side. Pure functions over Buffer; the frame
 * layout and every reply are described in docs/devices.md, section "Printer".
 */

export const ESC = 0x1b;
export const CR = 0x0d;

/** `Db;k;2;` and `Dbc;k;2;<len>;`: black panel, the only one a monochrome ribbon has. */
export const BITMAP_PANEL = "k";
export const BITMAP_MODE = "2";

/** Every command the agent sends; the device answers anything else `ERROR CDE`. */
export const PRINTER_COMMANDS = [
  "Pem",
  "Si",
  "Sis",
  "Ss",
  "Sr",
  "Sv",
  "Se",
  "Db",
  "Dbc",
  "Pr",
  "Pmc",
  "Dm",
  "Smw",
  "Smr",
  "Seb",
  "Rbz",
  "Wbz",
  "Scb",
  "Ser",
  "Rse",
  "Rrt",
  "Rcv",
  "Rpos",
] as const;
export type PrinterCommandName = (typeof PRINTER_COMMANDS)[number];

export function isPrinterCommand(name: string): name is PrinterCommandName {
  return (PRINTER_COMMANDS as readonly string[]).includes(name);
}

/** Where the card is inside the printer (`Rpos`). */
export const CARD_POSITIONS = ["NONE", "INSERT", "PRINT", "CONTACT", "BEZEL"] as const;
export type CardPosition = (typeof CARD_POSITIONS)[number];

const COMMAND_NAME = /^[A-Za-z]+$/;
const PRINTABLE = /^[\x20-\x7e]*$/;

/**
 * `ESC name;p1;p2…CR`, or with `binary`, `ESC name;p1;…;<binary>CR`. Only the last parameter may
 * contain `;`: the device reads the last field of `Dm` up to CR. Throws RangeError on input that
 * would break framing; the message names the command, never the parameter value.
 */
export function encodeCommand(name: string, params: readonly string[] = [], binary?: Buffer): Buffer {
  if (!COMMAND_NAME.test(name)) throw new RangeError(`invalid command name "${name}"`);
  params.forEach((param, i) => {
    const last = i === params.length - 1 && binary === undefined;
    if (!PRINTABLE.test(param) || (!last && param.includes(";"))) {
      throw new RangeError(`${name}: parameter ${i + 1} is not encodable`);
    }
  });
  const text = [name, ...params].join(";") + (binary === undefined ? "" : ";");
  const parts: Buffer[] = [Buffer.of(ESC), Buffer.from(text, "latin1")];
  if (binary !== undefined) parts.push(binary);
  parts.push(Buffer.of(CR));
  return Buffer.concat(parts);
}

/** `ESC Db;k;2;<82296 raw bytes> CR`; panel layout in raster/geometry.ts. */
export function encodeRawBitmap(panel: Buffer): Buffer {
  assertPanelSize(panel);
  return encodeCommand("Db", [BITMAP_PANEL, BITMAP_MODE], panel);
}

/** `ESC Dbc;k;2;<decimal length>;<payload> CR`, payload from `compressPanel()`. */
export function encodeCompressedBitmap(payload: Buffer): Buffer {
  return encodeCommand("Dbc", [BITMAP_PANEL, BITMAP_MODE, String(payload.length)], payload);
}

export type PrinterReply =
  | { kind: "ok" }
  | { kind: "value"; text: string }
  | { kind: "error"; fault: DeviceFault; text: string };

/** Every error text the printer family is known to send, and what it means for the agent. */
export const ERROR_REPLIES: Readonly<Record<string, DeviceFault>> = {
  "ERROR CDE": "COMMAND_REJECTED",
  "ERROR PARAMETRES": "COMMAND_REJECTED",
  "ERROR TIME OUT": "DEVICE_TIMEOUT",
  "ERR TIME": "DEVICE_TIMEOUT",
  // The output hopper is, like the reject box, a receptacle someone has to empty before the
  // printer can get rid of a card; the agent has no separate fault for it.
  "HOPPER FULL": "REJECT_BOX_FULL",
  "COVER OPEN": "COVER_OPEN",
  "FEEDER EMPTY": "FEEDER_EMPTY",
  "CARD JAM": "CARD_JAM",
  "ERROR RIBBON": "RIBBON_OUT",
  "ERR RIBBON": "RIBBON_OUT",
  "ERR RIB DETECTION": "RIBBON_OUT",
  "ERROR MAG CHECKSUM": "MAG_READ",
  "ERROR MAG DATA": "MAG_WRITE",
  "ERR READ": "MAG_READ",
  "ERR WRITE": "MAG_WRITE",
  "REJECT BOX FULL": "REJECT_BOX_FULL",
  "CAPTURE BIN FULL": "CAPTURE_BIN_FULL",
  "NO CARD": "NO_CARD",
};

/**
 * Classifies one reply line (without its CR). `command` resolves the one ambiguity of the protocol:
 * `NO CARD` answers `Rbz`/`Wbz` (the mouth is empty) but is an error for every card move.
 */
export function parseReply(line: string, command?: string): PrinterReply {
  if (line === "OK") return { kind: "ok" };
  if ((command === "Rbz" || command === "Wbz") && parseBezelSensor(line) !== undefined) {
    return { kind: "value", text: line };
  }
  const fault = ERROR_REPLIES[line];
  if (fault !== undefined) return { kind: "error", fault, text: line };
  return { kind: "value", text: line };
}

/** `Rse;f`: `5,00 Volts` → 5. The sensor reads about 5 V when cards are present, 0 V when empty. */
export function parseFeederVoltage(text: string): number | undefined {
  const match = /^(\d{1,2}),(\d{2}) Volts$/.exec(text);
  return match ? Number(`${match[1]}.${match[2]}`) : undefined;
}

/** Below this the feeder sensor sees no card. */
export const FEEDER_PRESENT_VOLTS = 2.5;

export function formatFeederVoltage(volts: number): string {
  return `${volts.toFixed(2).replace(".", ",")} Volts`;
}

/** `Rrt;count`: prints left on the ribbon. */
export function parseRibbonRemaining(text: string): number | undefined {
  return /^\d{1,6}$/.test(text) ? Number(text) : undefined;
}

export function parseCoverState(text: string): "OPEN" | "CLOSED" | undefined {
  return text === "OPEN" || text === "CLOSED" ? text : undefined;
}

export function parseCardPosition(text: string): CardPosition | undefined {
  return (CARD_POSITIONS as readonly string[]).includes(text) ? (text as CardPosition) : undefined;
}

/** `Rbz`: true while the card is still in the mouth. */
export function parseBezelSensor(text: string): boolean | undefined {
  if (text === "CARD") return true;
  if (text === "NO CARD") return false;
  return undefined;
}

export interface ReplySplitterOptions {
  /** A line longer than this is noise, not a reply. Default 256 (the longest reply is a track 3 read). */
  maxLineLength?: number;
}

/**
 * Cuts the printer's byte stream into reply lines. A line holding anything but printable ASCII, or
 * growing past `maxLineLength`, is line noise: it is dropped and counted, and the next CR starts a
 * clean line, which is how the driver regains sync. An LF next to the CR is tolerated (some
 * firmware ends lines with CR LF).
 */
export class ReplySplitter {
  droppedFrames = 0;
  private readonly maxLineLength: number;
  private pending: Buffer[] = [];
  private pendingLength = 0;
  private overflowed = false;

  constructor(options: ReplySplitterOptions = {}) {
    this.maxLineLength = options.maxLineLength ?? 256;
  }

  /** Returns the complete lines in `chunk`, in order; keeps a partial line for the next call. */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let cr = chunk.indexOf(CR); cr !== -1; cr = chunk.indexOf(CR, start)) {
      this.append(chunk.subarray(start, cr));
      const line = this.takeLine();
      if (line !== undefined) lines.push(line);
      start = cr + 1;
    }
    this.append(chunk.subarray(start));
    return lines;
  }

  /** Forgets a partial line, e.g. after the port closed mid-reply. */
  reset(): void {
    this.pending = [];
    this.pendingLength = 0;
    this.overflowed = false;
  }

  private append(bytes: Buffer): void {
    if (bytes.length === 0 || this.overflowed) return;
    if (this.pendingLength + bytes.length > this.maxLineLength + 1) {
      // Stop buffering: whatever ends at the next CR is dropped anyway.
      this.overflowed = true;
      this.pending = [];
      this.pendingLength = 0;
      return;
    }
    this.pending.push(bytes);
    this.pendingLength += bytes.length;
  }

  private takeLine(): string | undefined {
    const overflowed = this.overflowed;
    const raw = Buffer.concat(this.pending);
    this.reset();
    if (overflowed) {
      this.droppedFrames++;
      return undefined;
    }
    const text = raw.toString("latin1").replace(/^\n/, "").replace(/\n$/, "");
    if (text.length === 0) return undefined;
    if (text.length > this.maxLineLength || !PRINTABLE.test(text)) {
      this.droppedFrames++;
      return undefined;
    }
    return text;
  }
}
