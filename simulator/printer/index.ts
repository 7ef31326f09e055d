import type { VirtualSerialBinding } from "../serial/virtual-binding.js";
import { VirtualPrinter, type VirtualPrinterOptions } from "./virtual-printer.js";

export type { FaultOptions, PrinterFaultName } from "./faults.js";
export type { CardOutcome, CardRecord, VirtualPrinterOptions } from "./virtual-printer.js";
export { VirtualPrinter } from "./virtual-printer.js";

export interface AttachOptions extends VirtualPrinterOptions {
  /** Keep the host's bytes for `binding.takeRecording(path)`. */
  record?: boolean;
}

/** A simulated printer plugged into `binding` at `path`, ready for a `SerialTransport` to open. */
export function attachVirtualPrinter(
  binding: VirtualSerialBinding,
  path: string,
  options: AttachOptions = {},
): VirtualPrinter {
  const { record, ...printerOptions } = options;
  const printer = new VirtualPrinter(printerOptions);
  binding.plug(path, printer, {
    record: record ?? false,
    info: { manufacturer: "Virtual Evolis-style printer" },
  });
  return printer;
}
