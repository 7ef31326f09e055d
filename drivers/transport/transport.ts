/**
 * A byte stream to a device: serial port, USB bulk pipe, TCP socket or the simulator. Drivers speak
 * their protocol over this and never see what carries the bytes.
 *
 * Contract every implementation honours:
 * - `open()` resolves once bytes can be written; it rejects with a `DeviceError`
 *   (`DEVICE_DISCONNECTED`) when the device is absent. Opening an open transport is a no-op.
 * - `write()` resolves once the bytes are handed to the OS (not when the device has read them).
 *   It rejects with `DEVICE_DISCONNECTED` when the transport is closed or the device vanished,
 *   and never throws synchronously.
 * - `data` listeners get bytes in arrival order, cut at arbitrary points: framing is the driver's job.
 * - `close` fires exactly once per successful `open()`, after which `isOpen` is false.
 *   `disconnected: true` means the device went away (unplugged, read error): the caller did not ask.
 *   A device vanishing never surfaces as a thrown or uncaught error, only as this event.
 * - A closed transport may be opened again (e.g. after the device is plugged back).
 */
export interface Transport {
  /** For logs and errors, e.g. `serial:/dev/ttyUSB0`. */
  readonly description: string;
  readonly isOpen: boolean;
  open(): Promise<void>;
  /** Resolves after the `close` event has fired; closing a closed transport is a no-op. */
  close(): Promise<void>;
  write(data: Buffer): Promise<void>;
  /** Returns a function that removes the listener. */
  onData(listener: (chunk: Buffer) => void): () => void;
  /** Returns a function that removes the listener. */
  onClose(listener: (info: TransportCloseInfo) => void): () => void;
}

export interface TransportCloseInfo {
  /** True when the device went away rather than the caller closing the transport. */
  disconnected: boolean;
}
