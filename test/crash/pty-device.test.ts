import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { PtyDevice } from "../../simulator/pty/pty-device.js";
import type { VirtualSerialDevice, VirtualSerialLink } from "../../simulator/serial/virtual-binding.js";

/** Answers every CR-terminated line with `re:<line>`, and remembers what it got. */
class EchoDevice implements VirtualSerialDevice {
  link: VirtualSerialLink | undefined;
  received = "";
  attach(link: VirtualSerialLink): void {
    this.link = link;
  }
  receive(bytes: Buffer): void {
    this.received += bytes.toString("latin1");
    let cr = this.received.indexOf("\r");
    while (cr !== -1) {
      this.link?.send(Buffer.from(`re:${this.received.slice(0, cr)}\r`, "latin1"));
      this.received = this.received.slice(cr + 1);
      cr = this.received.indexOf("\r");
    }
  }
}

/**
 * A host in another process, on the OS serial binding the agent uses: opens PATH, writes each
 * argument as a line, prints what comes back, and holds the port open until killed.
 */
const HOST = `
import { autoDetect } from "@serialport/bindings-cpp";
import { SerialPortStream } from "@serialport/stream";
const [path, ...lines] = process.argv.slice(1);
const port = new SerialPortStream({ binding: autoDetect(), path, baudRate: 115200, autoOpen: false });
port.on("data", (d) => process.stdout.write("got " + JSON.stringify(d.toString("latin1")) + "\\n"));
port.on("close", () => process.stdout.write("closed\\n"));
port.open((err) => {
  if (err) { process.stdout.write("open-failed " + err.message + "\\n"); process.exit(3); }
  process.stdout.write("open\\n");
  for (const l of lines) port.write(l + "\\r");
});
`;

function host(path: string, ...lines: string[]): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, ["--input-type=module", "-e", HOST, path, ...lines], {
    cwd: process.cwd(),
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  return { child, output: () => out };
}

async function until(check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("a simulated serial device on a pseudo-terminal", () => {
  let dir: string;
  let pty: PtyDevice | undefined;
  const children: ChildProcess[] = [];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "kiosk-pty-"));
  });
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await pty?.close();
    pty = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it("is opened by @serialport/bindings-cpp, and reopened by a new host after the first is SIGKILLed", async () => {
    const device = new EchoDevice();
    pty = await PtyDevice.start(device, { linkPath: join(dir, "ttySIM") });
    expect(pty.path).toBe(join(dir, "ttySIM"));

    const first = host(pty.path, "PING");
    children.push(first.child);
    await until(() => first.output().includes('got "re:PING\\r"'));

    const gone = new Promise((r) => first.child.once("exit", r));
    first.child.kill("SIGKILL");
    await gone;
    // Sent while no host has the port open: a real UART drops it, and the next open must not see it.
    device.link?.send(Buffer.from("stale\r"));

    const second = host(pty.path, "AGAIN");
    children.push(second.child);
    await until(() => second.output().includes('got "re:AGAIN\\r"'));
    expect(second.output()).not.toContain("stale");
    expect(pty.stats.bridges).toBe(1);
  });

  it("unplug hangs the host up; replug brings the port back at the same path", async () => {
    const device = new EchoDevice();
    pty = await PtyDevice.start(device, { linkPath: join(dir, "ttySIM") });
    const first = host(pty.path);
    children.push(first.child);
    await until(() => first.output().includes("open"));
    pty.unplug();
    await pty.settled();
    expect(pty.plugged).toBe(false);
    await until(() => first.output().includes("closed"));
    pty.replug();
    await pty.settled();
    expect(pty.plugged).toBe(true);
    const second = host(pty.path, "BACK");
    children.push(second.child);
    await until(() => second.output().includes('got "re:BACK\\r"'));
    expect(pty.stats.bridges).toBe(2);
  });
});
