import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { FAULT_RULES, type FaultOptions, type PrinterFaultName } from "../../simulator/printer/faults.js";
import { type CardRecord, VirtualEvolisPrinter } from "../../simulator/printer/virtual-evolis-printer.js";
import { PtyDevice } from "../../simulator/pty/pty-device.js";
import type { VirtualSerialLink } from "../../simulator/serial/virtual-binding.js";
import { TcpDeviceServer } from "../../simulator/tcp/tcp-device-server.js";
import { parseCommandArgs, UsageError } from "./args.js";

const FAULTS = Object.keys(FAULT_RULES) as PrinterFaultName[];
const DEFAULT_LINK = join(tmpdir(), "ttyKIOSK0");

export const SIMULATOR_HELP = `Usage: kiosk-agent simulator [options]

Starts the simulated Evolis kiosk printer for an agent running separately (kiosk-agent run): on a
pseudo-terminal, which the agent opens as a USB printer-class device file ("link": "usb", as
/dev/usb/lp0) or as a serial port ("link": "serial"); or, with --tcp, on a TCP port of 127.0.0.1
("link": "tcp"). It prints the agent's "printer" configuration and one line per card event.

Options:
  --link PATH          a stable path for the device, a symlink to the pty (default ${DEFAULT_LINK})
  --tcp PORT           serve on 127.0.0.1:PORT instead of a pty (0: any free port)
  --fault SPEC         arm a printer fault at start; repeatable. SPEC is NAME, NAME:COUNT or
                       NAME:persistent. NAME is one of: ${FAULTS.join(", ")}
  --take-after-ms MS   the simulated cardholder takes a presented card after MS (default 2000);
                       'never' leaves it in the mouth until 'take'
  --feeder N           cards in the feeder (default 100)
  --command-ms MS      reply latency of ordinary commands (default 2)
  --print-ms MS        latency of the command that prints (default 150)
  --mag-ms MS          latency of magstripe write and read (default 30)

Commands on standard input, while it runs:
  fault NAME [COUNT|persistent]   arm a fault (once by default)
  clear                           disarm every fault
  take                            the cardholder takes the card in the mouth now
  state                           the printer's state (card position, feeder, ribbon, bins)
  cards                           the cards produced so far (masked PANs only)
  help                            this list
  quit                            stop (so do Ctrl-C and SIGTERM)

Exit codes: 0 stopped on request; 1 the pseudo-terminal or the TCP port could not be opened (python3 missing, the
link path not writable); 2 usage error.`;

const OPTIONS = {
  link: { type: "string" },
  tcp: { type: "string" },
  fault: { type: "string", multiple: true },
  "take-after-ms": { type: "string" },
  feeder: { type: "string" },
  "command-ms": { type: "string" },
  "print-ms": { type: "string" },
  "mag-ms": { type: "string" },
} as const;

export interface SimulatorIo {
  out: (line: string) => void;
  err: (line: string) => void;
  input: Readable;
}

const defaultIo: SimulatorIo = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
  input: process.stdin,
};

/** `NAME`, `NAME:3`, `NAME:persistent`. */
export function parseFaultSpec(spec: string): { name: PrinterFaultName; options: FaultOptions } {
  const [name, arg, extra] = spec.split(/[:\s]+/);
  if (!name || !(FAULTS as string[]).includes(name) || extra !== undefined) {
    throw new UsageError(`unknown fault '${spec}': one of ${FAULTS.join(", ")}`);
  }
  if (arg === undefined) return { name: name as PrinterFaultName, options: {} };
  if (arg === "persistent") return { name: name as PrinterFaultName, options: { persistent: true } };
  const count = Number(arg);
  if (!Number.isInteger(count) || count < 1) throw new UsageError(`fault count must be a whole number ≥ 1`);
  return { name: name as PrinterFaultName, options: { count } };
}

export async function simulatorCommand(argv: string[], io: SimulatorIo = defaultIo): Promise<number> {
  let printer: VirtualEvolisPrinter;
  let link: string;
  let tcpPort: number | undefined;
  let faults: Array<ReturnType<typeof parseFaultSpec>>;
  try {
    const { values } = parseCommandArgs(argv, OPTIONS);
    if (values.help) {
      io.out(SIMULATOR_HELP);
      return 0;
    }
    const ms = (key: "command-ms" | "print-ms" | "mag-ms" | "feeder", d: number): number => {
      const v = values[key];
      if (v === undefined) return d;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${key} must be a whole number`);
      return n;
    };
    const take = values["take-after-ms"];
    const takeAfterMs = take === "never" ? null : take === undefined ? 2000 : Number(take);
    if (takeAfterMs !== null && (!Number.isInteger(takeAfterMs) || takeAfterMs < 0)) {
      throw new UsageError("--take-after-ms must be a whole number or 'never'");
    }
    faults = (values.fault ?? []).map(parseFaultSpec);
    link = resolve(values.link ?? DEFAULT_LINK);
    if (values.tcp !== undefined) {
      tcpPort = Number(values.tcp);
      if (!Number.isInteger(tcpPort) || tcpPort < 0 || tcpPort > 65_535) {
        throw new UsageError("--tcp must be a port number (0: any free port)");
      }
    }
    printer = new VirtualEvolisPrinter({
      takeAfterMs,
      feederCards: ms("feeder", 100),
      latency: { commandMs: ms("command-ms", 2), printMs: ms("print-ms", 150), magMs: ms("mag-ms", 30) },
    });
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${err.message}\n\n${SIMULATOR_HELP}`);
      return 2;
    }
    throw err;
  }

  // Elapsed time on the monotonic clock: a wall-clock step must not make the stamps jump.
  const started = performance.now();
  const stamp = () => `${((performance.now() - started) / 1000).toFixed(2).padStart(7)}s`;
  const describe = (card: CardRecord) => {
    const pan = card.tracks.find((t) => t.maskedPan)?.maskedPan;
    return `card #${card.serial}${pan ? ` ${pan}` : ""}`;
  };
  for (const [event, text] of [
    ["card-inserted", "fed from the feeder"],
    ["card-presented", "presented in the mouth"],
    ["card-taken", "taken by the cardholder"],
    ["card-captured", "taken back from the mouth into the reject box"],
    ["card-rejected", "dropped into the reject box"],
    ["card-ejected", "ejected"],
  ] as const) {
    printer.on(event, (card) => io.out(`${stamp()}  ${describe(card)} ${text}`));
  }
  const arm = (f: ReturnType<typeof parseFaultSpec>): string => {
    printer.injectFault(f.name, { ...f.options, replugAfterMs: f.options.replugAfterMs ?? 1000 });
    const how = f.options.persistent ? "until cleared" : `${f.options.count ?? 1} time(s)`;
    return `fault ${f.name} armed (${how}, at ${FAULT_RULES[f.name].hits.join("/")})`;
  };
  for (const f of faults) io.out(arm(f));

  let device: (VirtualSerialLink & { close(): Promise<void> }) | undefined;
  try {
    if (tcpPort !== undefined) {
      const server = await TcpDeviceServer.start(printer, { port: tcpPort });
      device = server;
      io.out(`virtual Evolis printer ready on tcp ${server.host}:${server.port}`);
      io.out(
        `  agent configuration: "printer": { "link": "tcp", "host": "${server.host}", "port": ${server.port} }`,
      );
    } else {
      const pty = await PtyDevice.start(printer, { linkPath: link });
      device = pty;
      io.out(`virtual Evolis printer ready on ${pty.path}`);
      io.out(`  agent configuration: "printer": { "link": "usb", "path": "${pty.path}" }`);
      io.out(`  (the pty is also a serial port: "link": "serial" works too)`);
    }
  } catch (err) {
    const where = tcpPort !== undefined ? `tcp port ${tcpPort}` : `a pseudo-terminal at ${link}`;
    io.err(`kiosk-agent simulator: cannot open ${where}: ${(err as Error).message}`);
    return 1;
  }
  const pty = device;
  io.out("  type 'help' for commands; Ctrl-C stops");

  const stopped = new Promise<void>((done) => {
    const lines = createInterface({ input: io.input, terminal: false });
    const stop = (): void => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      lines.close();
      done();
    };
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
    lines.on("line", (line) => {
      const [command, ...args] = line.trim().split(/\s+/);
      try {
        switch (command) {
          case "":
          case undefined:
            return;
          case "fault":
            io.out(arm(parseFaultSpec(args.join(":"))));
            return;
          case "clear":
            printer.clearFaults();
            io.out("faults cleared");
            return;
          case "take":
            io.out(printer.takeCardNow() ? "card taken" : "no card in the mouth");
            return;
          case "state":
            io.out(JSON.stringify({ ...printer.state, plugged: pty.plugged }));
            return;
          case "cards":
            for (const c of printer.cardsForRecord()) {
              io.out(
                `card #${c.serial} ${c.outcome} ink ${c.frontInkDots}/${c.backInkDots} tracks ${c.tracks.map((t) => t.maskedPan ?? `#${t.n}`).join(",") || "-"}`,
              );
            }
            return;
          case "help":
            io.out(SIMULATOR_HELP.slice(SIMULATOR_HELP.indexOf("Commands on standard input")));
            return;
          case "quit":
          case "exit":
            stop();
            return;
          default:
            io.out(`unknown command '${command}' (try 'help')`);
        }
      } catch (err) {
        io.out((err as Error).message.split("\n")[0]!);
      }
    });
    // End of input (e.g. started with </dev/null) is not a stop: only quit or a signal is.
  });
  await stopped;
  // An open stdin pipe would keep the process alive after `quit`.
  io.input.destroy();
  await pty.close();
  io.out("virtual printer stopped");
  return 0;
}
