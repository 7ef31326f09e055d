/**
 * What the production pipeline needs from a magnetic stripe encoder, whichever device does it: the
 * printer's built-in encoder (`PrinterDriver.encodeMagstripe`) or a separate MSR206-family unit
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

/** The part of `PrinterDriver` the adapter needs; structural, so this module imports no printer code. */
export interface PrinterWithEncoder {
  encodeMagstripe(tracks: MagstripeTracks, coercivity: Coercivity): Promise<void>;
}

/** The printer's built-in encoder as a `MagstripeEncoder`. */
export function printerMagstripeEncoder(printer: PrinterWithEncoder): MagstripeEncoder {
  return { encode: (tracks, coercivity) => printer.encodeMagstripe(tracks, coercivity) };
}
