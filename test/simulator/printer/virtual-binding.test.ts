import { describe, expect, it } from "vitest";
import {
  VirtualSerialBinding,
  type VirtualSerialDevice,
  type VirtualSerialLink,
} from "../../../simulator/serial/virtual-binding.js";

const PATH = "/dev/ttyVIRT9";

class RecordingDevice implements VirtualSerialDevice {
  link!: VirtualSerialLink;
  readonly got: Buffer[] = [];
  attach(link: VirtualSerialLink): void {
    this.link = link;
  }
  receive(bytes: Buffer): void {
    this.got.push(bytes);
  }
}

function setup() {
  const binding = new VirtualSerialBinding();
  const device = new RecordingDevice();
  binding.plug(PATH, device, { record: true });
  return { binding, device };
}

const open = (binding: VirtualSerialBinding, path = PATH) => binding.open({ path, baudRate: 115_200 });

describe("VirtualSerialBinding: the serialport binding contract", () => {
  it("opening an unknown path rejects", async () => {
    await expect(open(new VirtualSerialBinding(), "/dev/nothing")).rejects.toThrow(/no such port/);
  });

  it("a port opens once at a time (lock), and again after close", async () => {
    const { binding } = setup();
    const port = await open(binding);
    await expect(open(binding)).rejects.toThrow(/locked/);
    await port.close();
    const again = await open(binding);
    expect(again.isOpen).toBe(true);
    expect(binding.stats(PATH).opens).toBe(2);
  });

  it("fills in the default open options", async () => {
    const { binding } = setup();
    const port = await open(binding);
    expect(port.openOptions).toMatchObject({
      path: PATH,
      baudRate: 115_200,
      dataBits: 8,
      stopBits: 1,
      parity: "none",
    });
    expect(await port.getBaudRate()).toEqual({ baudRate: 115_200 });
  });

  it("refuses overlapping writes", async () => {
    const { binding } = setup();
    const port = await open(binding);
    const first = port.write(Buffer.from("a"));
    await expect(port.write(Buffer.from("b"))).rejects.toThrow(/Overlapping writes/);
    await first;
    await port.write(Buffer.from("c"));
  });

  it("delivers host bytes to the device, counts and records them", async () => {
    const { binding, device } = setup();
    const port = await open(binding);
    await port.write(Buffer.from("abc"));
    await port.write(Buffer.from("de"));
    expect(Buffer.concat(device.got).toString()).toBe("abcde");
    expect(binding.bytesFromHost(PATH)).toBe(5);
    expect(binding.takeRecording(PATH).toString()).toBe("abcde");
    expect(binding.takeRecording(PATH).length).toBe(0);
  });

  it("read() pends until the device sends, and returns at most `length` bytes", async () => {
    const { binding, device } = setup();
    const port = await open(binding);
    const buffer = Buffer.alloc(8);
    let done = false;
    const read = port.read(buffer, 2, 3).then((r) => {
      done = true;
      return r;
    });
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    device.link.send(Buffer.from("hello"));
    expect((await read).bytesRead).toBe(3);
    expect(buffer.subarray(2, 5).toString()).toBe("hel");
    const rest = await port.read(buffer, 0, 8);
    expect(buffer.subarray(0, rest.bytesRead).toString()).toBe("lo");
    expect(binding.stats(PATH).bytesToHost).toBe(5);
  });

  it("closing rejects the pending read with canceled: true", async () => {
    const { binding } = setup();
    const port = await open(binding);
    const read = port.read(Buffer.alloc(4), 0, 4);
    await new Promise((r) => setImmediate(r));
    await port.close();
    await expect(read).rejects.toMatchObject({ canceled: true });
    expect(port.isOpen).toBe(false);
  });

  it("unplug rejects the pending read as a disconnect (not canceled); opens fail until replug", async () => {
    const { binding } = setup();
    const port = await open(binding);
    const read = port.read(Buffer.alloc(4), 0, 4);
    await new Promise((r) => setImmediate(r));
    binding.unplug(PATH);
    const error = await read.catch((e: unknown) => e);
    expect(error).toMatchObject({ disconnected: true });
    expect((error as { canceled?: boolean }).canceled).toBeUndefined();
    await expect(port.write(Buffer.from("x"))).rejects.toMatchObject({ disconnected: true });
    expect(await binding.list()).toEqual([]);
    // The stream closes its handle after a disconnect; a new open still finds no device.
    await port.close();
    await expect(open(binding)).rejects.toThrow(/not present/);
    binding.replug(PATH);
    expect((await binding.list()).map((p) => p.path)).toEqual([PATH]);
    await open(binding);
  });

  it("bytes the device sends while the host has the port closed are lost, as on a UART", async () => {
    const { binding, device } = setup();
    device.link.send(Buffer.from("lost"));
    const port = await open(binding);
    device.link.send(Buffer.from("kept"));
    const buffer = Buffer.alloc(16);
    const { bytesRead } = await port.read(buffer, 0, 16);
    expect(buffer.subarray(0, bytesRead).toString()).toBe("kept");
  });
});
