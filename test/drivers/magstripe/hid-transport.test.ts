import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
import { isDeviceError } from "../../../drivers/device-fault.js";
import { encodeHidReports } from "../../../drivers/magstripe/hid-framing.js";
import {
  type HidBackend,
  type HidDeviceHandle,
  HidTransport,
  loadNodeHid,
} from "../../../drivers/transport/hid-transport.js";
import type { TransportCloseInfo } from "../../../drivers/transport/transport.js";
import { hex } from "./rig.js";

/** A node-hid `HID.HID` stand-in that records writes and lets the test push input reports. */
class FakeHid extends EventEmitter implements HidDeviceHandle {
  writes: Buffer[] = [];
  closed = 0;
  failWrites = false;

  write(values: number[] | Buffer): number {
    if (this.failWrites) throw new Error("Cannot write to hid device");
    this.writes.push(Buffer.from(values));
    return values.length;
  }

  close(): void {
    this.closed++;
    this.removeAllListeners();
  }
}

function fakeBackend(devices = [{ vendorId: 0x0801, productId: 0x0003, path: "/dev/hidraw7" }]) {
  const opened: Array<{ path: string; device: FakeHid }> = [];
  const backend: HidBackend = {
    devices: () => devices,
    open: (path) => {
      if (!devices.some((d) => d.path === path)) throw new Error(`cannot open device with path ${path}`);
      const device = new FakeHid();
      opened.push({ path, device });
      return device;
    },
  };
  return { backend, opened };
}

function setup(options: { path?: string } = {}) {
  const { backend, opened } = fakeBackend([
    { vendorId: 0x046d, productId: 0xc52b, path: "/dev/hidraw0" }, // a keyboard receiver
    { vendorId: 0x0801, productId: 0x0003, path: "/dev/hidraw7" },
  ]);
  const transport = new HidTransport({ backend, ...options });
  const data: Buffer[] = [];
  const closes: TransportCloseInfo[] = [];
  transport.onData((chunk) => data.push(chunk));
  transport.onClose((info) => closes.push(info));
  const device = () => opened[opened.length - 1]!.device;
  return { transport, opened, device, data, closes };
}

describe("HidTransport", () => {
  it("opens the first device with the MSR605X vendor/product id", async () => {
    const { transport, opened } = setup();
    expect(transport.description).toBe("hid:0801:0003");
    await transport.open();
    expect(transport.isOpen).toBe(true);
    expect(opened.map((o) => o.path)).toEqual(["/dev/hidraw7"]);
    await transport.open(); // no-op
    expect(opened).toHaveLength(1);
  });

  it("opens a configured path", async () => {
    const { transport, opened } = setup({ path: "/dev/hidraw7" });
    expect(transport.description).toBe("hid:/dev/hidraw7");
    await transport.open();
    expect(opened.map((o) => o.path)).toEqual(["/dev/hidraw7"]);
  });

  it("rejects with DEVICE_DISCONNECTED when no such device is present", async () => {
    const { backend } = fakeBackend([]);
    const transport = new HidTransport({ backend });
    await expect(transport.open()).rejects.toSatisfy((e) => isDeviceError(e, "DEVICE_DISCONNECTED"));
    const byPath = new HidTransport({ backend, path: "/dev/hidraw9" });
    await expect(byPath.open()).rejects.toSatisfy((e) => isDeviceError(e, "DEVICE_DISCONNECTED"));
  });

  it("rejects with DEVICE_DISCONNECTED when node-hid cannot be loaded", async () => {
    const transport = new HidTransport({
      backend: () => Promise.reject(new Error("libusb-1.0.so.0: cannot open shared object file")),
    });
    await expect(transport.open()).rejects.toSatisfy((e) => isDeviceError(e, "DEVICE_DISCONNECTED"));
  });

  it("writes each message as 64-byte reports behind report id 0", async () => {
    const { transport, device } = setup();
    await transport.open();
    await transport.write(hex("1B 65")); // ESC e
    const long = Buffer.alloc(100, 0x31);
    await transport.write(long);
    const writes = device().writes;
    expect(writes.map((w) => w.length)).toEqual([65, 65, 65]);
    expect(writes[0]!.subarray(0, 4)).toEqual(hex("00 C2 1B 65"));
    expect(writes[0]!.subarray(4).every((b) => b === 0)).toBe(true);
    expect(writes[1]!.subarray(0, 2)).toEqual(hex("00 BF"));
    expect(writes[2]!.subarray(0, 2)).toEqual(hex("00 65")); // last + 37
    expect(transport.stats.reportsWritten).toBe(3);
  });

  it("emits whole messages reassembled from reports split across several data events", async () => {
    const { transport, device, data } = setup();
    await transport.open();
    const message = Buffer.concat([
      hex("1B 73 1B 01"),
      Buffer.alloc(70, 0x41),
      hex("1B 02 1B 03 3F 1C 1B 30"),
    ]);
    const stream = Buffer.concat(encodeHidReports(message, 20)); // 5 reports of ≤ 20 bytes payload
    for (let i = 0; i < stream.length; i += 13) device().emit("data", stream.subarray(i, i + 13));
    expect(data).toEqual([message]);
    expect(transport.stats).toMatchObject({ reports: 5, messages: 1, orphanReports: 0 });
  });

  it("drops a report arriving without a first report, counting it", async () => {
    const { transport, device, data } = setup();
    await transport.open();
    const orphan = Buffer.alloc(64, 0x55);
    orphan[0] = 0x45; // last + 5, no first flag
    device().emit("data", orphan);
    device().emit("data", encodeHidReports(hex("1B 79"))[0]!);
    expect(data).toEqual([hex("1B 79")]);
    expect(transport.stats.orphanReports).toBe(1);
  });

  it("a read error (unplug) closes with disconnected: true, never throws, later writes reject", async () => {
    const { transport, device, closes } = setup();
    await transport.open();
    const handle = device();
    expect(() => handle.emit("error", new Error("could not read from HID device"))).not.toThrow();
    expect(closes).toEqual([{ disconnected: true }]);
    expect(transport.isOpen).toBe(false);
    expect(handle.closed).toBe(1);
    await expect(transport.write(hex("1B 65"))).rejects.toSatisfy((e) =>
      isDeviceError(e, "DEVICE_DISCONNECTED"),
    );
    // Re-opening after the device came back works, with a new handle.
    await transport.open();
    expect(transport.isOpen).toBe(true);
  });

  it("a write that throws (device gone) rejects DEVICE_DISCONNECTED and closes as a disconnect", async () => {
    const { transport, device, closes } = setup();
    await transport.open();
    device().failWrites = true;
    const written = transport.write(hex("1B 65"));
    await expect(written).rejects.toSatisfy((e) => isDeviceError(e, "DEVICE_DISCONNECTED"));
    expect(closes).toEqual([{ disconnected: true }]);
  });

  it("close() fires close once with disconnected: false and releases the device", async () => {
    const { transport, device, closes } = setup();
    await transport.open();
    await transport.close();
    await transport.close();
    expect(closes).toEqual([{ disconnected: false }]);
    expect(device().closed).toBe(1);
    await expect(transport.write(hex("1B 65"))).rejects.toSatisfy((e) =>
      isDeviceError(e, "DEVICE_DISCONNECTED"),
    );
  });

  it("a listener that throws does not close the link", async () => {
    const { transport, device, closes } = setup();
    transport.onData(() => {
      throw new Error("listener bug");
    });
    await transport.open();
    expect(() => device().emit("data", encodeHidReports(hex("1B 79"))[0]!)).not.toThrow();
    expect(transport.isOpen).toBe(true);
    expect(closes).toEqual([]);
  });

  it("loads node-hid lazily, only when asked", async () => {
    const backend = await loadNodeHid();
    expect(typeof backend.devices).toBe("function");
    expect(typeof backend.open).toBe("function");
  });
});
