import type { Logger } from "../../../agent/log/logger.js";
import { silentLogger } from "../../../agent/log/logger.js";
import { ManualClock } from "../../../agent/util/clock.js";
import { CR } from "../../../drivers/printer/codec.js";
import { CommandParser } from "../../../drivers/printer/command-parser.js";
import { PrinterDriver, type PrinterTimeouts } from "../../../drivers/printer/driver.js";
import { SerialTransport } from "../../../drivers/transport/serial-transport.js";
import { attachVirtualPrinter } from "../../../simulator/printer/index.js";
import type { VirtualPrinter, VirtualPrinterOptions } from "../../../simulator/printer/virtual-printer.js";
import {
  VirtualSerialBinding,
  type VirtualSerialDevice,
  type VirtualSerialLink,
} from "../../../simulator/serial/virtual-binding.js";

export const PATH = "/dev/ttyVIRT0";

/** Byte fixtures are written as hex pairs, the way a serial sniffer shows them. */
export function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ""), "hex");
}

/**
 * Lets the serial stream, the binding and the simulator run until `done()` holds. Turns of the
 * event loop, not time: nothing here sleeps.
 */
export async function settle(done: () => boolean = () => false, turns = 200): Promise<void> {
  for (let i = 0; i < turns && !done(); i++) await new Promise<void>((r) => setImmediate(r));
}

/**
 * Moves a ManualClock forward in small steps, letting the I/O run between steps, until `done()`
 * holds: for loops that mix device round trips with timers (polling, backoff).
 */
export async function driveClock(clock: ManualClock, done: () => boolean, stepMs: number, maxSteps = 1000) {
  for (let i = 0; i < maxSteps && !done(); i++) {
    await settle(done, 20);
    if (!done()) clock.advance(stepMs);
  }
}

interface Stack {
  clock: ManualClock;
  binding: VirtualSerialBinding;
  transport: SerialTransport;
  driver: PrinterDriver;
  /** Host-to-device bytes since the last call. */
  wire(): Buffer;
}

function driverOn(
  binding: VirtualSerialBinding,
  clock: ManualClock,
  options: { timeouts?: Partial<PrinterTimeouts>; logger?: Logger },
): Omit<Stack, "clock" | "binding" | "wire"> {
  const transport = new SerialTransport({ path: PATH, baudRate: 115_200, binding });
  const driver = new PrinterDriver({
    transport,
    clock,
    logger: options.logger ?? silentLogger,
    ...(options.timeouts ? { timeouts: options.timeouts } : {}),
  });
  return { transport, driver };
}

/** PrinterDriver → SerialTransport → SerialPortStream → VirtualSerialBinding → VirtualPrinter. */
export function printerStack(
  options: { printer?: VirtualPrinterOptions; timeouts?: Partial<PrinterTimeouts>; logger?: Logger } = {},
): Stack & { printer: VirtualPrinter } {
  const clock = new ManualClock();
  const binding = new VirtualSerialBinding();
  const printer = attachVirtualPrinter(binding, PATH, { clock, record: true, ...options.printer });
  return {
    clock,
    binding,
    printer,
    ...driverOn(binding, clock, options),
    wire: () => binding.takeRecording(PATH),
  };
}

/**
 * A device that answers every command with the next line of a script, for replies the simulated
 * printer never gives (arbitrary error texts, printable junk).
 */
export class ScriptedDevice implements VirtualSerialDevice {
  private link: VirtualSerialLink | undefined;
  private readonly parser = new CommandParser();
  readonly received: string[] = [];

  constructor(private readonly script: Array<string | Buffer>) {}

  attach(link: VirtualSerialLink): void {
    this.link = link;
  }

  receive(bytes: Buffer): void {
    for (const command of this.parser.push(bytes)) {
      this.received.push(command.name);
      const next = this.script.shift();
      if (next === undefined) continue;
      const bytesOut = typeof next === "string" ? Buffer.from(`${next}\r`, "latin1") : next;
      setImmediate(() => this.link?.send(bytesOut));
    }
  }

  /** Bytes the device volunteers with no command pending. */
  say(line: string): void {
    this.link?.send(Buffer.concat([Buffer.from(line, "latin1"), Buffer.of(CR)]));
  }
}

export function scriptedStack(
  script: Array<string | Buffer>,
  options: { timeouts?: Partial<PrinterTimeouts>; logger?: Logger } = {},
): Stack & { device: ScriptedDevice } {
  const clock = new ManualClock();
  const binding = new VirtualSerialBinding();
  const device = new ScriptedDevice(script);
  binding.plug(PATH, device, { record: true });
  return {
    clock,
    binding,
    device,
    ...driverOn(binding, clock, options),
    wire: () => binding.takeRecording(PATH),
  };
}
