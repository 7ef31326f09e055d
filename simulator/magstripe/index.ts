import type { VirtualSerialBinding } from "../serial/virtual-binding.js";
import { VirtualMsr206, type VirtualMsr206Options } from "./virtual-msr206.js";

export type { Msr206FaultName, Msr206FaultOptions } from "./faults.js";
export type { StripeWriteRecord, VirtualMsr206HidOptions, VirtualMsr206Options } from "./virtual-msr206.js";
export { VirtualMsr206 } from "./virtual-msr206.js";

export interface AttachMsr206Options extends VirtualMsr206Options {
  /** Keep the host's bytes for `binding.takeRecording(path)`. */
  record?: boolean;
}

/** A simulated serial MSR206 plugged into `binding` at `path`, ready for a `SerialTransport`. */
export function attachVirtualMsr206(
  binding: VirtualSerialBinding,
  path: string,
  options: AttachMsr206Options = {},
): VirtualMsr206 {
  const { record, ...deviceOptions } = options;
  const device = new VirtualMsr206(deviceOptions);
  binding.plug(path, device, { record: record ?? false, info: { manufacturer: "Virtual MSR206" } });
  return device;
}
