/**
 * The Evolis escape-command wire format, host side: pure functions over Buffer and strings. The
 * frame layout, every reply and where each comes from are in docs/devices.md ("Printer: Evolis").
 */
import type { DeviceFault } from "../../device-fault.js";
import type { EvolisCommandName } from "./commands.js";
import { assertPanelSize } from "./panel.js";

export const ESC = 0x1b;
export const CR = 0x0d;
export const LF = 0x0a;
export const NUL = 0x00;

const PRINTABLE = /^[\x20-\x7e]*$/;

/**
 * `ESC name;p1;p2…CR` (guide §3), or with `binary`, `ESC name;p1;…;<binary>CR`. Only the last
 * parameter may contain `;`: the printer reads the data of `Dm` up to CR. Throws RangeError on
 * input that would break framing; the message names the command, never the parameter value.
 */
export function encodeCommand(
  name: EvolisCommandName,
  params: readonly string[] = [],
  binary?: Buffer,
): Buffer {
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

/** `ESC Db;k;2;<82296 raw bytes> CR` (guide p.14). */
export function encodeRawPanel(panel: Buffer): Buffer {
  assertPanelSize(panel);
  return encodeCommand("Db", ["k", "2"], panel);
}

/** `ESC Dbc;k;2;<decimal length>;<payload> CR` (guide p.6), payload from `compressKO()`. */
export function encodeCompressedPanel(payload: Buffer): Buffer {
  return encodeCommand("Dbc", ["k", "2", String(payload.length)], payload);
}

export type EvolisReply =
  | { kind: "ok" }
  | { kind: "value"; text: string }
  | { kind: "error"; fault: DeviceFault; text: string };

/**
 * Error replies by prefix, longest first wins. libevolis calls any reply that begins with `ERR` an
 * error (`EVOLIS_REPLY_IS_ERR`, evolis.h); the other rows are texts public code shows the printer
 * sending without that prefix (shared/evolis/README.md "Error replies"). A text is matched by
 * prefix so that `ERROR MAGN DATA`, `ERROR MAG DATA` and a firmware's longer wording all land at
 * once, never as a timeout.
 */
const ERROR_ROWS: ReadonlyArray<readonly [prefix: string, fault: DeviceFault]> = [
  ["ERROR CDE", "COMMAND_REJECTED"],
  ["ERROR PARAMETRES", "COMMAND_REJECTED"],
  ["ERROR PARAMETERS", "COMMAND_REJECTED"],
  ["OPT NOT AVAILABLE", "COMMAND_REJECTED"],
  ["ERROR TIME OUT", "MECHANICAL_ERROR"],
  ["ERR TIME", "MECHANICAL_ERROR"],
  ["ERROR HEAD", "MECHANICAL_ERROR"],
  ["CARD JAM", "CARD_JAM"],
  ["COVER OPEN", "COVER_OPEN"],
  ["HOPPER DOOR", "COVER_OPEN"],
  ["FEEDER EMPTY", "FEEDER_EMPTY"],
  ["ERROR HOPPER", "MECHANICAL_ERROR"],
  // The reject box sits under the output hopper (guide p.42, Ser): a full hopper is a full box.
  ["HOPPER FULL", "REJECT_BOX_FULL"],
  ["ERROR RIBBON", "RIBBON_OUT"],
  ["ERR RIB", "RIBBON_OUT"],
  ["ERR RIBBON", "RIBBON_OUT"],
  ["ERROR MAGN CHECKSUM", "MAG_READ"],
  ["ERROR MAG CHECKSUM", "MAG_READ"],
  ["ERR READ", "MAG_READ"],
  ["ERROR MAGN DATA", "MAG_WRITE"],
  ["ERROR MAG DATA", "MAG_WRITE"],
  ["ERROR MAGN", "MAG_WRITE"],
  ["ERROR MAG", "MAG_WRITE"],
  ["ERR WRITE", "MAG_WRITE"],
  ["ERR NEED CLEANING", "CLEANING_REQUIRED"],
  ["NEED CLEANING", "CLEANING_REQUIRED"],
  // The two card texts of the guide's `Rlr;p` (p.34), as answers to a card move: no card to move,
  // or a card where the move needs none. `Rlr` itself reads them as values, not errors.
  ["NO CARD", "NO_CARD"],
  ["ERR CARD", "CARD_IN_PATH"],
  // Anything else that starts like an error is one: answered at once, with its own reason.
  ["ERR", "PRINTER_ERROR"],
];

export const ERROR_PREFIXES = [...ERROR_ROWS].sort((a, b) => b[0].length - a[0].length);

/** The fault an error reply means, or undefined when the text is not an error reply. */
export function errorFaultOf(text: string): DeviceFault | undefined {
  for (const [prefix, fault] of ERROR_PREFIXES) if (text.startsWith(prefix)) return fault;
  return undefined;
}

/** Classifies one reply line. A command that reads a status word checks its own values first. */
export function classifyReply(text: string): EvolisReply {
  if (text === "OK") return { kind: "ok" };
  const fault = errorFaultOf(text);
  return fault === undefined ? { kind: "value", text } : { kind: "error", fault, text };
}

/** `Rse;x`: `5,00 Volts` → 5 (a decimal comma, as the printer sends it). */
export function parseVolts(text: string): number | undefined {
  const match = /^(\d{1,2})[,.](\d{1,3}) ?V(?:olts?)?$/i.exec(text.trim());
  return match ? Number(`${match[1] ?? ""}.${match[2] ?? ""}`) : undefined;
}

export function formatVolts(volts: number): string {
  return `${volts.toFixed(2).replace(".", ",")} Volts`;
}

/**
 * A sensor reads "active" from this voltage up. The kiosk driver's mouth test is `>= 1.0`
 * (CheckCardPostion: ~0,2x Volts empty, ~4,9x Volts card), its feeder and cover tests look at the
 * first digit (`'0'` = empty / open): both put the line at 1 V.
 */
export const SENSOR_ACTIVE_VOLTS = 1.0;

/** Where `Rlr;p` says the card is inside the printer. The mouth is read separately (`Rse;b`). */
export type InsidePosition = "NONE" | "INSIDE" | "CONTACT" | "CONTACTLESS";

/**
 * `Rlr;p`. Newer firmware (kiosk driver): `OK` (no card), `CARD` (print position), `SMART CARD`,
 * `CONTACTLESS CARD`. The guide (p.34): `NO CARD` / `ERR CARD`.
 */
export function parseInsidePosition(text: string): InsidePosition | undefined {
  switch (text.trim()) {
    case "OK":
    case "NO CARD":
      return "NONE";
    case "CARD":
    case "ERR CARD":
      return "INSIDE";
    case "SMART CARD":
      return "CONTACT";
    case "CONTACTLESS CARD":
      return "CONTACTLESS";
    default:
      return undefined;
  }
}

/** `Rlr;r`: true when the printer asks for a cleaning (guide p.34: `ERR NEED CLEANING`). */
export function parseCleaningReply(text: string): boolean | undefined {
  const t = text.trim();
  if (t === "OK") return false;
  if (errorFaultOf(t) === "CLEANING_REQUIRED") return true;
  return undefined;
}

/** `Rlr;h`: true when the reject (eject) box is full (kiosk driver GetBoxStatus: `CARD`). */
export function parseBoxFullReply(text: string): boolean | undefined {
  const t = text.trim();
  if (t === "CARD") return true;
  if (t === "NO CARD" || t === "OK") return false;
  return undefined;
}

/** `Rrt;count`, `Rrt;qty`, `Rco;x`: a whole number. */
export function parseCount(text: string): number | undefined {
  return /^\d{1,9}$/.test(text.trim()) ? Number(text.trim()) : undefined;
}
