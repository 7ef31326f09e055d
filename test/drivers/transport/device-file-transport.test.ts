import { mkdtempSync, readdirSync, readlinkSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DeviceFileTransport } from "../../../drivers/transport/device-file-transport.js";
import type { TransportCloseInfo } from "../../../drivers/transport/transport.js";
import { PtyDevice } from "../../../simulator/pty/pty-device.js";
import { EchoDevice, frame, until } from "./support.js";

/** Unplugs or closes `pty` and waits until its bridge process is gone. */
async function stopBridge(pty: PtyDevice, stop: () => Promise<void> | void): Promise<void> {
  await stop();
  await pty.settled();
}

/** This process's descriptors open on `device` (Linux: /proc/self/fd). */
function openFdsOn(device: string): number {
  let n = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === device) n++;
    } catch {
      // The descriptor readdir itself used, closed by now.
    }
  }
  return n;
}

/**
 * A real pseudo-terminal stands in for /dev/usb/lp0: one character device, read and written on one
 * descriptor, that hangs up when the "cable" is pulled.
 */
describe("DeviceFileTransport on a pty", () => {
  let dir: string;
  let link: string;
  let pty: PtyDevice | undefined;
  const transports: DeviceFileTransport[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "kiosk-usb-"));
    link = join(dir, "lp0");
  });
  afterEach(async () => {
    for (const t of transports.splice(0)) await t.close();
    if (pty) await stopBridge(pty, () => pty?.close());
    pty = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  async function setup(device = new EchoDevice()) {
    pty = await PtyDevice.start(device, { linkPath: link });
    const transport = new DeviceFileTransport({ path: link });
    transports.push(transport);
    const data: Buffer[] = [];
    const closes: TransportCloseInfo[] = [];
    transport.onData((chunk) => data.push(chunk));
    transport.onClose((info) => closes.push(info));
    return { pty, device, transport, data, closes, received: () => Buffer.concat(data) };
  }

  it("opens, writes and reads back on one descriptor", async () => {
    const { transport, received } = await setup();
    expect(transport.description).toBe(`usb:${link}`);
    await transport.open();
    expect(transport.isOpen).toBe(true);
    await transport.open();
    await transport.write(Buffer.from("\x1bPing\r"));
    await until(() => received().length >= 6);
    expect(received().toString("latin1")).toBe("\x1bPing\r");
  });

  it("reads a burst the device sends in one go, complete and in order", async () => {
    const { device, transport, received } = await setup();
    await transport.open();
    // More than one read's worth (a pty hands over ~4 KB a read), less than the ~11.7 KB a raw pty
    // queues towards a host before the bridge has to drop bytes.
    const burst = frame(8_000, 7);
    device.link?.send(burst);
    await until(() => received().length >= burst.length);
    expect(received().equals(burst)).toBe(true);
  });

  it("writes an 85 KB frame with CR, ESC and NUL bytes complete and in order", async () => {
    const { device, transport } = await setup(new EchoDevice({ echo: false }));
    await transport.open();
    const big = frame(90_000, 1);
    expect(big.includes(0x0d) && big.includes(0x1b) && big.includes(0x00)).toBe(true);
    await transport.write(big);
    await until(() => device.bytes() >= big.length);
    expect(device.received().equals(big)).toBe(true);
  });

  it("queues concurrent writes: one caller's bytes never land inside another's", async () => {
    const { device, transport } = await setup(new EchoDevice({ echo: false }));
    await transport.open();
    const a = Buffer.alloc(40_000, 0x41);
    const b = Buffer.alloc(40_000, 0x42);
    const c = Buffer.from("\x1bSs\r");
    await Promise.all([transport.write(a), transport.write(b), transport.write(c)]);
    await until(() => device.bytes() >= a.length + b.length + c.length);
    expect(device.received().equals(Buffer.concat([a, b, c]))).toBe(true);
  });

  it("open of a missing path rejects with DEVICE_DISCONNECTED naming the path", async () => {
    const path = join(dir, "nope");
    const transport = new DeviceFileTransport({ path });
    const closes: TransportCloseInfo[] = [];
    transport.onClose((info) => closes.push(info));
    const opening = transport.open();
    await expect(opening).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED", device: path });
    await expect(opening).rejects.toThrow(path);
    expect(transport.isOpen).toBe(false);
    expect(closes).toEqual([]);
  });

  it("open of a path that cannot be a device rejects, never throws", async () => {
    const file = join(dir, "lp9");
    // What `cat job > /dev/usb/lp0` leaves behind when no printer is there.
    writeFileSync(file, "stale");
    await expect(new DeviceFileTransport({ path: file }).open()).rejects.toMatchObject({
      code: "DEVICE_DISCONNECTED",
    });
    await expect(new DeviceFileTransport({ path: "bad\0path" }).open()).rejects.toMatchObject({
      code: "DEVICE_DISCONNECTED",
    });
  });

  it("an unplug with nothing being written closes with disconnected: true; writes then reject", async () => {
    const { pty, transport, closes } = await setup();
    await transport.open();
    const slave = realpathSync(link);
    await stopBridge(pty, () => pty.unplug());
    // Noticed by the read loop alone: a hung-up pty reads 0 bytes, and the 0-byte write probe fails.
    await until(() => closes.length > 0);
    expect(closes).toEqual([{ disconnected: true }]);
    expect(transport.isOpen).toBe(false);
    expect(openFdsOn(slave)).toBe(0);
    await expect(transport.write(Buffer.from("y"))).rejects.toMatchObject({
      code: "DEVICE_DISCONNECTED",
      device: link,
    });
  });

  it("a write right after an unplug rejects, whether or not the transport noticed yet", async () => {
    const { pty, transport, closes } = await setup();
    await transport.open();
    await stopBridge(pty, () => pty.unplug());
    await expect(transport.write(Buffer.from("x"))).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
    await until(() => closes.length > 0);
    expect(closes).toEqual([{ disconnected: true }]);
  });

  it("a write in progress when the device vanishes rejects with DEVICE_DISCONNECTED", async () => {
    const device = new EchoDevice({ echo: false });
    // Pulls its own cable as the first bytes of a long frame arrive.
    device.onReceive = () => {
      if (pty) void stopBridge(pty, () => device.link?.unplug());
    };
    const { transport, closes } = await setup(device);
    await transport.open();
    const writing = transport.write(frame(1_000_000, 3));
    const queued = transport.write(Buffer.from("after"));
    await expect(writing).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
    await expect(queued).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
    await until(() => closes.length > 0);
    expect(closes).toEqual([{ disconnected: true }]);
    expect(device.bytes()).toBeLessThan(1_000_000);
  });

  it("opens again once the device is plugged back at the same path", async () => {
    const { pty, transport, closes, received } = await setup();
    await transport.open();
    await stopBridge(pty, () => pty.unplug());
    await until(() => closes.length > 0);
    await expect(transport.open()).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
    pty.replug();
    await pty.settled();
    await transport.open();
    await transport.write(Buffer.from("back\r"));
    await until(() => received().length >= 5);
    expect(received().toString()).toBe("back\r");
    await transport.close();
    expect(closes).toEqual([{ disconnected: true }, { disconnected: false }]);
  });

  it("concurrent opens share one descriptor; close() releases it", async () => {
    const { transport } = await setup();
    await Promise.all([transport.open(), transport.open()]);
    const slave = realpathSync(link);
    expect(openFdsOn(slave)).toBe(1);
    await transport.close();
    expect(openFdsOn(slave)).toBe(0);
  });

  it("close() ends the session with disconnected: false, once, and writes then reject", async () => {
    const { transport, closes } = await setup();
    await transport.open();
    await Promise.all([transport.close(), transport.close()]);
    await transport.close();
    expect(closes).toEqual([{ disconnected: false }]);
    expect(transport.isOpen).toBe(false);
    await expect(transport.write(Buffer.from("x"))).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
  });

  it("close() during a long write rejects the write and still closes once", async () => {
    const { transport, closes } = await setup(new EchoDevice({ echo: false }));
    await transport.open();
    const writing = transport.write(frame(1_000_000, 5));
    const rejected = expect(writing).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
    await transport.close();
    await rejected;
    expect(closes).toEqual([{ disconnected: false }]);
  });

  it("a close listener may re-open at once: the old descriptor is already closed", async () => {
    const { transport, closes, received } = await setup();
    await transport.open();
    const reopened = new Promise<void>((resolve, reject) => {
      const off = transport.onClose(() => {
        off();
        transport.open().then(resolve, reject);
      });
    });
    await transport.close();
    await reopened;
    expect(transport.isOpen).toBe(true);
    await transport.write(Buffer.from("again\r"));
    await until(() => received().length >= 6);
    expect(received().toString()).toBe("again\r");
    expect(closes).toEqual([{ disconnected: false }]);
  });
});
