import type { Logger } from "../../../../agent/log/logger.js";
import { silentLogger } from "../../../../agent/log/logger.js";
import { ManualClock } from "../../../../agent/util/clock.js";
import { CommandParser } from "../../../../drivers/printer/evolis/command-parser.js";
import {
  EvolisPrinter,
  type EvolisPrinterOptions,
  type EvolisTimeouts,
} from "../../../../drivers/printer/evolis/evolis-printer.js";
import { SerialTransport } from "../../../../drivers/transport/serial-transport.js";
import { attachVirtualPrinter } from "../../../../simulator/printer/index.js";
import type {
  VirtualEvolisPrinter,
  VirtualPrinterOptions,
} from "../../../../simulator/printer/virtual-evolis-printer.js";
import {
  VirtualSerialBinding,
  type VirtualSerialDevice,
  type VirtualSerialLink,
} from "../../../../simulator/serial/virtual-binding.js";

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
  driver: EvolisPrinter;
  /** Host-to-device bytes since the last call. */
  wire(): Buffer;
}

export interface DriverOptions {
  timeouts?: Partial<EvolisTimeouts>;
  logger?: Logger;
  link?: EvolisPrinterOptions["link"];
  replyIdleGapMs?: number;
  takePollMs?: number;
  feeders?: readonly string[];
}

function driverOn(
  binding: VirtualSerialBinding,
  clock: ManualClock,
  options: DriverOptions,
): Omit<Stack, "clock" | "binding" | "wire"> {
  const transport = new SerialTransport({ path: PATH, baudRate: 115_200, binding });
  const driver = new EvolisPrinter({
    transport,
    link: options.link ?? "serial",
    clock,
    logger: options.logger ?? silentLogger,
    ...(options.timeouts ? { timeouts: options.timeouts } : {}),
    ...(options.replyIdleGapMs === undefined ? {} : { replyIdleGapMs: options.replyIdleGapMs }),
    ...(options.takePollMs === undefined ? {} : { takePollMs: options.takePollMs }),
    ...(options.feeders === undefined ? {} : { feeders: options.feeders }),
  });
  return { transport, driver };
}

/** EvolisPrinter → SerialTransport → SerialPortStream → VirtualSerialBinding → VirtualEvolisPrinter. */
export function printerStack(
  options: { printer?: VirtualPrinterOptions } & DriverOptions = {},
): Stack & { printer: VirtualEvolisPrinter } {
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
 * A device that answers every command with the next reply of a script, for replies the simulated
 * printer never gives (arbitrary error texts, printable junk, other terminators). A string reply is
 * sent with a NUL, a Buffer as it is.
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
      const bytesOut = typeof next === "string" ? Buffer.from(`${next}\0`, "latin1") : next;
      setImmediate(() => this.link?.send(bytesOut));
    }
  }

  /** Bytes the device volunteers with no command pending. */
  say(line: string): void {
    this.link?.send(Buffer.from(`${line}\0`, "latin1"));
  }
}

export function scriptedStack(
  script: Array<string | Buffer>,
  options: DriverOptions = {},
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
