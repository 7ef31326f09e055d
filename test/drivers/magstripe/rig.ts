import type { Logger } from "../../../agent/log/logger.js";
import { silentLogger } from "../../../agent/log/logger.js";
import { ManualClock } from "../../../agent/util/clock.js";
import { HidReassembler } from "../../../drivers/magstripe/hid-framing.js";
import { Msr206CommandParser } from "../../../drivers/magstripe/msr206-command-parser.js";
import { Msr206Encoder, type Msr206EncoderOptions } from "../../../drivers/magstripe/msr206-driver.js";
import { HidTransport } from "../../../drivers/transport/hid-transport.js";
import { SerialTransport } from "../../../drivers/transport/serial-transport.js";
import type { Transport } from "../../../drivers/transport/transport.js";
import { attachVirtualMsr206 } from "../../../simulator/magstripe/index.js";
import { VirtualMsr206, type VirtualMsr206Options } from "../../../simulator/magstripe/virtual-msr206.js";
import {
  VirtualSerialBinding,
  type VirtualSerialDevice,
  type VirtualSerialLink,
} from "../../../simulator/serial/virtual-binding.js";

export const MSR_PATH = "/dev/ttyMSR0";

/** Byte fixtures as hex pairs, the way a sniffer shows them. */
export function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ""), "hex");
}

export function ascii(text: string): Buffer {
  return Buffer.from(text, "latin1");
}

/** Turns of the event loop (not time) until `done()` holds: nothing here sleeps. */
export async function settle(done: () => boolean = () => false, turns = 200): Promise<void> {
  for (let i = 0; i < turns && !done(); i++) await new Promise<void>((r) => setImmediate(r));
}

export type Carrier = "serial" | "hid";

export interface MsrStack {
  carrier: Carrier;
  clock: ManualClock;
  sim: VirtualMsr206;
  transport: Transport;
  encoder: Msr206Encoder;
  /** Protocol bytes the host sent since the last call (HID reports unframed). */
  wire(): Buffer;
}

/** What a test may set on the encoder. */
export type EncoderTestOptions = Pick<
  Msr206EncoderOptions,
  "timeouts" | "swipeTimeoutMs" | "onSwipeRequest"
> & {
  logger?: Logger;
};

export interface StackOptions extends EncoderTestOptions {
  device?: VirtualMsr206Options;
}

/** Msr206Encoder → SerialTransport → SerialPortStream → VirtualSerialBinding → VirtualMsr206. */
export function serialStack(options: StackOptions = {}): MsrStack & { binding: VirtualSerialBinding } {
  const clock = new ManualClock();
  const binding = new VirtualSerialBinding();
  const sim = attachVirtualMsr206(binding, MSR_PATH, { clock, record: true, ...options.device });
  const transport = new SerialTransport({ path: MSR_PATH, baudRate: 9600, binding });
  return {
    carrier: "serial",
    clock,
    binding,
    sim,
    transport,
    encoder: encoderOn(transport, clock, options),
    wire: () => binding.takeRecording(MSR_PATH),
  };
}

/** Msr206Encoder → HidTransport → VirtualMsr206.hidBackend() (a node-hid stand-in). */
export function hidStack(options: StackOptions = {}): MsrStack & { hid: HidTransport } {
  const clock = new ManualClock();
  const sim = new VirtualMsr206({ clock, ...options.device });
  const hid = new HidTransport({ backend: sim.hidBackend() });
  return {
    carrier: "hid",
    clock,
    sim,
    transport: hid,
    hid,
    encoder: encoderOn(hid, clock, options),
    wire: () => unframeHidWrites(sim.takeHidWrites()),
  };
}

export function stackFor(carrier: Carrier, options: StackOptions = {}): MsrStack {
  return carrier === "serial" ? serialStack(options) : hidStack(options);
}

function encoderOn(transport: Transport, clock: ManualClock, options: EncoderTestOptions): Msr206Encoder {
  return new Msr206Encoder({
    transport,
    clock,
    logger: options.logger ?? silentLogger,
    ...(options.timeouts ? { timeouts: options.timeouts } : {}),
    ...(options.swipeTimeoutMs === undefined ? {} : { swipeTimeoutMs: options.swipeTimeoutMs }),
    ...(options.onSwipeRequest ? { onSwipeRequest: options.onSwipeRequest } : {}),
  });
}

/** The protocol bytes inside node-hid `write()` calls (report id + 64-byte reports). */
export function unframeHidWrites(writes: Buffer[]): Buffer {
  const reassembler = new HidReassembler();
  const messages: Buffer[] = [];
  for (const w of writes) messages.push(...reassembler.push(w.subarray(1)));
  return Buffer.concat(messages);
}

/**
 * A serial device that answers each command with the next scripted reply, for answers the
 * simulator never gives (status 9, a read that fails, noise in odd places, exact read-answer byte
 * fixtures). It answers at once: the swipe is taken as done.
 */
export class ScriptedMsr implements VirtualSerialDevice {
  private link: VirtualSerialLink | undefined;
  private readonly parser = new Msr206CommandParser();
  readonly received: string[] = [];

  constructor(private readonly script: Array<Buffer | null>) {}

  attach(link: VirtualSerialLink): void {
    this.link = link;
  }

  receive(bytes: Buffer): void {
    for (const command of this.parser.push(bytes)) {
      this.received.push(command.kind);
      if (command.kind === "reset") continue;
      const next = this.script.shift();
      // null: stay silent for this command.
      if (next === undefined || next === null) continue;
      setImmediate(() => this.link?.send(next));
    }
  }

  /** Bytes the device volunteers with no command pending. */
  say(bytes: Buffer): void {
    this.link?.send(bytes);
  }
}

export function scriptedStack(script: Array<Buffer | null>, options: EncoderTestOptions = {}) {
  const clock = new ManualClock();
  const binding = new VirtualSerialBinding();
  const device = new ScriptedMsr(script);
  binding.plug(MSR_PATH, device, { record: true });
  const transport = new SerialTransport({ path: MSR_PATH, baudRate: 9600, binding });
  return {
    clock,
    binding,
    device,
    transport,
    encoder: encoderOn(transport, clock, options),
    wire: () => binding.takeRecording(MSR_PATH),
  };
}
