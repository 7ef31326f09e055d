import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { TcpTransport } from "../../../drivers/transport/tcp-transport.js";
import type { TransportCloseInfo } from "../../../drivers/transport/transport.js";
import { TcpDeviceServer } from "../../../simulator/tcp/tcp-device-server.js";
import { EchoDevice, frame, until } from "./support.js";

/** A loopback port nobody listens on: bound, read, released. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (!address || typeof address !== "object") throw new Error("no port");
  return address.port;
}

/**
 * A listener whose accept queue is full (backlog 0, filled by one connection of its own that it
 * never accepts): Linux drops further SYNs, so a connect neither succeeds nor is refused, like a
 * printer switched off behind a switch. Python, because a Node server always accepts.
 */
const BLACK_HOLE = `
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
filler = socket.create_connection(s.getsockname())
print(s.getsockname()[1], flush=True)
sys.stdin.read()
`;

describe("TcpTransport to a TcpDeviceServer on loopback", () => {
  const servers: TcpDeviceServer[] = [];
  const transports: TcpTransport[] = [];
  const children: ChildProcess[] = [];
  afterEach(async () => {
    for (const t of transports.splice(0)) await t.close();
    for (const s of servers.splice(0)) await s.close();
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  });

  async function setup(device = new EchoDevice()) {
    const server = await TcpDeviceServer.start(device);
    servers.push(server);
    const rig = client(server.port);
    return { server, device, ...rig };
  }

  function client(port: number, options: { connectTimeoutMs?: number } = {}) {
    const transport = new TcpTransport({ host: "127.0.0.1", port, ...options });
    transports.push(transport);
    const data: Buffer[] = [];
    const closes: TransportCloseInfo[] = [];
    transport.onData((chunk) => data.push(chunk));
    transport.onClose((info) => closes.push(info));
    return { transport, data, closes, received: () => Buffer.concat(data) };
  }

  it("connects, writes and reads back", async () => {
    const { server, transport, received } = await setup();
    expect(server.path).toBe(`tcp:127.0.0.1:${server.port}`);
    expect(transport.description).toBe(`tcp:127.0.0.1:${server.port}`);
    await transport.open();
    expect(transport.isOpen).toBe(true);
    await transport.open();
    await transport.write(Buffer.from("\x1bPing\r"));
    await until(() => received().length >= 6);
    expect(received().toString("latin1")).toBe("\x1bPing\r");
    expect(server.stats.connections).toBe(1);
  });

  it("writes a 100 KB frame intact, and concurrent writes in call order", async () => {
    const { device, transport } = await setup(new EchoDevice({ echo: false }));
    await transport.open();
    const big = frame(100_000, 1);
    const small = Buffer.from("\x1bSs\r");
    await Promise.all([transport.write(big), transport.write(small)]);
    await until(() => device.bytes() >= big.length + small.length);
    expect(device.received().equals(Buffer.concat([big, small]))).toBe(true);
  });

  it("a refused connection rejects open() with DEVICE_DISCONNECTED", async () => {
    const port = await freePort();
    const { transport, closes } = client(port);
    await expect(transport.open()).rejects.toMatchObject({
      code: "DEVICE_DISCONNECTED",
      device: `tcp:127.0.0.1:${port}`,
    });
    expect(transport.isOpen).toBe(false);
    expect(closes).toEqual([]);
  });

  it("a connection that is never answered rejects open() after connectTimeoutMs", async () => {
    const hole = spawn("python3", ["-c", BLACK_HOLE], { stdio: ["pipe", "pipe", "inherit"] });
    children.push(hole);
    const port = await new Promise<number>((resolve, reject) => {
      hole.stdout?.once("data", (d: Buffer) => resolve(Number.parseInt(d.toString(), 10)));
      hole.once("error", reject);
    });
    const { transport } = client(port, { connectTimeoutMs: 150 });
    const started = Date.now();
    await expect(transport.open()).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(transport.isOpen).toBe(false);
  });

  it("a bad port rejects open(), never throws", async () => {
    const { transport } = client(70_000);
    await expect(transport.open()).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
  });

  it("the server unplugging closes with disconnected: true; writes then reject", async () => {
    const { server, transport, closes } = await setup();
    await transport.open();
    server.unplug();
    await server.settled();
    await until(() => closes.length > 0);
    expect(closes).toEqual([{ disconnected: true }]);
    expect(transport.isOpen).toBe(false);
    await expect(transport.write(Buffer.from("x"))).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
  });

  it("refuses connections while unplugged and connects again after replug", async () => {
    const { server, transport, closes, received } = await setup();
    await transport.open();
    server.unplug();
    await server.settled();
    await until(() => closes.length > 0);
    await expect(transport.open()).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
    server.replug();
    await server.settled();
    expect(server.plugged).toBe(true);
    await transport.open();
    await transport.write(Buffer.from("back\r"));
    await until(() => received().length >= 5);
    expect(received().toString()).toBe("back\r");
    await transport.close();
    expect(closes).toEqual([{ disconnected: true }, { disconnected: false }]);
  });

  it("device bytes with no host connected are dropped, not kept for the next one", async () => {
    const { server, device, transport, received } = await setup();
    device.link?.send(Buffer.from("stale"));
    await transport.open();
    await until(() => server.connected);
    await transport.write(Buffer.from("new"));
    await until(() => received().length >= 3);
    expect(received().toString()).toBe("new");
  });

  it("a second client is closed at once while the first is served", async () => {
    const { server, transport, received } = await setup();
    await transport.open();
    await until(() => server.connected);
    const second = client(server.port);
    // The kernel completes the handshake before the server sees the connection: the second client
    // connects, then is dropped, which it sees as the device going away.
    await second.transport.open();
    await until(() => second.closes.length > 0);
    expect(second.closes).toEqual([{ disconnected: true }]);
    expect(second.transport.isOpen).toBe(false);
    expect(server.stats.refused).toBe(1);
    await transport.write(Buffer.from("still\r"));
    await until(() => received().length >= 6);
    expect(received().toString()).toBe("still\r");
  });

  it("the next client is served once the first has closed", async () => {
    const { server, transport } = await setup();
    await transport.open();
    await until(() => server.connected);
    await transport.close();
    await until(() => !server.connected);
    const next = client(server.port);
    await next.transport.open();
    await next.transport.write(Buffer.from("next\r"));
    await until(() => next.received().length >= 5);
    expect(next.received().toString()).toBe("next\r");
    expect(server.stats).toMatchObject({ connections: 2, refused: 0 });
  });

  it("close() ends the session with disconnected: false, once; writes then reject", async () => {
    const { transport, closes } = await setup();
    await transport.open();
    await Promise.all([transport.close(), transport.close()]);
    await transport.close();
    expect(closes).toEqual([{ disconnected: false }]);
    expect(transport.isOpen).toBe(false);
    await expect(transport.write(Buffer.from("x"))).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
  });

  it("close() flushes what was written before it", async () => {
    const { device, transport } = await setup(new EchoDevice({ echo: false }));
    await transport.open();
    const big = frame(200_000, 9);
    const writing = transport.write(big);
    await transport.close();
    await writing;
    await until(() => device.bytes() >= big.length);
    expect(device.received().equals(big)).toBe(true);
  });

  it("the server closing for good closes the transport with disconnected: true", async () => {
    const { server, transport, closes } = await setup();
    await transport.open();
    await server.close();
    await until(() => closes.length > 0);
    expect(closes).toEqual([{ disconnected: true }]);
    await expect(transport.open()).rejects.toMatchObject({ code: "DEVICE_DISCONNECTED" });
  });
});
