import { DeviceError } from "../device-fault.js";
import { isEncodableTrack, type TrackNumber } from "./iso7813.js";

/**
 * What the production pipeline needs from a magnetic stripe encoder, whichever device does it: the
 * printer's built-in encoder (`CardPrinter.encodeMagstripe`) or a separate MSR206-family unit
 * (`Msr206Encoder`, over serial or USB HID). Both write the tracks, read them back and compare.
 */

export type Coercivity = "HICO" | "LOCO";

/** ISO 7813 track data without sentinels and LRC (the encoder adds them). */
export interface MagstripeTracks {
  track1?: string;
  track2?: string;
  track3?: string;
}

export interface MagstripeEncoder {
  /**
   * Writes the given tracks with the given coercivity, reads them back and compares. Rejects with a
   * `DeviceError` (`MAG_WRITE`, `MAG_VERIFY`, `MAG_READ`, `COMMAND_REJECTED`, `DEVICE_TIMEOUT`,
   * `DEVICE_DISCONNECTED`, ...) whose message never carries track data.
   */
  encode(tracks: MagstripeTracks, coercivity: Coercivity): Promise<void>;
}

/** Which encoder a kiosk uses: the printer's own, or a separate MSR206 / MSR605X. */
export type MagstripeEncoderKind = "printer" | "msr206-hid" | "msr206-serial";

/** The part of `CardPrinter` the adapter needs; structural, so this module imports no printer code. */
export interface PrinterWithEncoder {
  encodeMagstripe(tracks: MagstripeTracks, coercivity: Coercivity): Promise<void>;
}

/** The printer's built-in encoder as a `MagstripeEncoder`. */
export function printerMagstripeEncoder(printer: PrinterWithEncoder): MagstripeEncoder {
  return { encode: (tracks, coercivity) => printer.encodeMagstripe(tracks, coercivity) };
}

/**
 * The tracks an encode call asks for, in track order, each checked as ISO-mode data before any byte
 * goes to a device: data an encoder cannot take fails with `COMMAND_REJECTED` naming the track,
 * never its content. Asking to encode nothing is a caller bug (`RangeError`).
 */
export function tracksToWrite(
  tracks: MagstripeTracks,
  who: { device: string; command: string },
): Array<{ n: TrackNumber; data: string }> {
  const out: Array<{ n: TrackNumber; data: string }> = [];
  for (const n of [1, 2, 3] as const) {
    const data = tracks[`track${n}`];
    if (data === undefined) continue;
    if (!isEncodableTrack(n, data)) {
      throw new DeviceError("COMMAND_REJECTED", `track ${n} data is not ISO 7813 encodable`, who);
    }
    out.push({ n, data });
  }
  if (out.length === 0) throw new RangeError("an encode needs at least one track");
  return out;
}
