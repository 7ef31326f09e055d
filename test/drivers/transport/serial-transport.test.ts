import { describe, expect, it } from "vitest";
import { SerialTransport } from "../../../drivers/transport/serial-transport.js";
import type { TransportCloseInfo } from "../../../drivers/transport/transport.js";
import {
  VirtualSerialBinding,
  type VirtualSerialDevice,
  type VirtualSerialLink,
} from "../../../simulator/serial/virtual-binding.js";
import { PATH, settle } from "../printer/evolis/rig.js";

/** Echoes every chunk back, so data flows both ways without a protocol. */
class EchoDevice implements VirtualSerialDevice {
  link: VirtualSerialLink | undefined;
  attach(link: VirtualSerialLink): void {
    this.link = link;
  }
  receive(bytes: Buffer): void {
    setImmediate(() => this.link?.send(bytes));
  }
}

function setup() {
  const binding = new VirtualSerialBinding();
  const device = new EchoDevice();
  binding.plug(PATH, device);
  const transport = new SerialTransport({ path: PATH, baudRate: 115_200, binding });
  const data: Buffer[] = [];
  const closes: TransportCloseInfo[] = [];
  transport.onData((chunk) => data.push(chunk));
  transport.onClose((info) => closes.push(info));
  return { binding, device, transport, data, closes };
}

describe("SerialTransport over SerialPortStream", () => {
  it("writes and receives bytes", async () => {
    const { transport, data } = setup();
    await transport.open();
    expect(transport.isOpen).toBe(true);
    await transport.write(Buffer.from("ping"));
    await settle(() => data.length > 0);
    expect(Buffer.concat(data).toString()).toBe("ping");
    await transport.close();
  });

  it("close() ends the session with disconnected: false, once", async () => {
    const { transport, closes } = setup();
    await transport.open();
    await transport.close();
    await transport.close();
    await settle();
    expect(closes).toEqual([{ disconnected: false }]);
    expect(transport.isOpen).toBe(false);
  });

  it("an unplug surfaces as close { disconnected: true }, not as an error", async () => {
    const { binding, transport, closes } = setup();
    await transport.open();
    binding.unplug(PATH);
    await settle(() => closes.length > 0);
    expect(closes).toEqual([{ disconnected: true }]);
    expect(transport.isOpen).toBe(false);
  });

  it("writes while closed reject with DEVICE_DISCONNECTED", async () => {
    const { transport } = setup();
    await expect(transport.write(Buffer.from("x"))).rejects.toMatchObject({
      code: "DEVICE_DISCONNECTED",
      device: PATH,
    });
  });

  it("open of an absent device rejects with DEVICE_DISCONNECTED; it opens again once plugged back", async () => {
    const { binding, transport, data } = setup();
    await transport.open();
    binding.unplug(PATH);
    await settle(() => !transport.isOpen);
    await expect(transport.open()).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
    binding.replug(PATH);
    await transport.open();
    await transport.write(Buffer.from("back"));
    await settle(() => data.length > 0);
    expect(Buffer.concat(data).toString()).toBe("back");
    await transport.close();
  });

  it("open of an unknown path rejects", async () => {
    const binding = new VirtualSerialBinding();
    const transport = new SerialTransport({ path: "/dev/ttyNOPE", baudRate: 9600, binding });
    await expect(transport.open()).rejects.toMatchObject({
      code: "DEVICE_DISCONNECTED",
      device: "/dev/ttyNOPE",
    });
  });
});

describe("SerialTransport.open()", () => {
  it("concurrent opens share one attempt", async () => {
    const { binding, transport } = setup();
    await Promise.all([transport.open(), transport.open()]);
    expect(binding.stats(PATH).opens).toBe(1);
    await transport.close();
  });
});
