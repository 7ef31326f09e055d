import { CodedError } from "../agent/util/errors.js";

/**
 * Why a device operation failed, in the agent's vocabulary. Each driver maps its wire-level
 * errors onto these; the job engine alone turns them into job states and D1 reasons.
 */
export type DeviceFault =
  | "FEEDER_EMPTY"
  | "RIBBON_OUT"
  | "COVER_OPEN"
  | "CARD_JAM"
  | "MAG_WRITE"
  | "MAG_READ"
  | "MAG_VERIFY"
  | "REJECT_BOX_FULL"
  /** The printer asks for a cleaning before it prints again. */
  | "CLEANING_REQUIRED"
  /** The printer's own mechanical timeout or a head/hopper fault. */
  | "MECHANICAL_ERROR"
  /** A card is where the move needs none (a feed with a card still inside). */
  | "CARD_IN_PATH"
  /** An error reply the driver has no row for: still an error, answered at once. */
  | "PRINTER_ERROR"
  | "DEVICE_TIMEOUT"
  | "DEVICE_DISCONNECTED"
  | "COMMAND_REJECTED"
  | "NO_CARD"
  | "PROTOCOL_ERROR";

export interface DeviceErrorDetails {
  /** Which device failed, e.g. `printer` or a port path. */
  device: string;
  /** The command name (`Si`, `Smw`), never its parameters: those may be card data. */
  command?: string;
  cause?: unknown;
}

/** A device operation that failed for a known reason. The message never carries card data. */
export class DeviceError extends CodedError<DeviceFault> {
  readonly device: string;
  readonly command?: string;

  constructor(code: DeviceFault, message: string, details: DeviceErrorDetails) {
    super(code, message, details.cause === undefined ? undefined : { cause: details.cause });
    this.device = details.device;
    if (details.command !== undefined) this.command = details.command;
  }
}

export function isDeviceError(error: unknown, code?: DeviceFault): error is DeviceError {
  return error instanceof DeviceError && (code === undefined || error.code === code);
}
