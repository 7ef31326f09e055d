import type { VirtualSerialBinding } from "../serial/virtual-binding.js";
import { VirtualEvolisPrinter, type VirtualPrinterOptions } from "./virtual-evolis-printer.js";

export type { FaultOptions, PrinterFaultName } from "./faults.js";
export type { CardOutcome, CardRecord, VirtualPrinterOptions } from "./virtual-evolis-printer.js";
export { VirtualEvolisPrinter } from "./virtual-evolis-printer.js";

export interface AttachOptions extends VirtualPrinterOptions {
  /** Keep the host's bytes for `binding.takeRecording(path)`. */
  record?: boolean;
}

/** A simulated Evolis plugged into `binding` at `path`, ready for a `SerialTransport` to open. */
export function attachVirtualPrinter(
  binding: VirtualSerialBinding,
  path: string,
  options: AttachOptions = {},
): VirtualEvolisPrinter {
  const { record, ...printerOptions } = options;
  const printer = new VirtualEvolisPrinter(printerOptions);
  binding.plug(path, printer, {
    record: record ?? false,
    info: { manufacturer: "Evolis (simulated)", vendorId: "0f49" },
  });
  return printer;
}
