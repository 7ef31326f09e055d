import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import type { Operation } from "../d1/operation.js";
import { makeSampleJob } from "../jobs/sample-jobs.js";
import { parseCommandArgs, UsageError } from "./args.js";
import { readJobsFile, shortId as short } from "./jobs-file.js";

export const D1_EMULATOR_HELP = `Usage: kiosk-agent d1-emulator [options]

Runs the D1 emulator (the issuer platform's WebSocket side, docs/protocol.md) for an agent running
separately: prints the URL and token to put in the agent's "d1" configuration, waits for the station
to connect, pushes the jobs you give it, and prints every status the agent reports. Ctrl-C stops it
and lists what each operation last reported.

Options:
  --port N              port on 127.0.0.1 (default 8765; 0 = any free port)
  --host HOST           address to listen on (default 127.0.0.1)
  --token TOKEN         the bearer token the agent must present (default: a new random one)
  --station ID          push to this persoStation (default: the first one that connects)
  --jobs-file FILE      push the jobs in FILE (a JSON array of production jobs) once it connects
  --sample N            push N generated sample jobs once it connects
  --record FILE         append every operation object received, one JSON object per line
  --exit-when-done      exit once every pushed job has reached a terminal status
  --timeout-sec S       with --exit-when-done: give up after S seconds (default 120); also how long
                        to wait for the station to connect before pushing (default 120)

Exit codes: 0 every pushed job ended (or stopped on request); 1 the station did not connect, or
jobs were still open at the timeout; 2 usage error (a bad option, an unreadable jobs file).`;

const OPTIONS = {
  port: { type: "string" },
  host: { type: "string" },
  token: { type: "string" },
  station: { type: "string" },
  "jobs-file": { type: "string" },
  sample: { type: "string" },
  record: { type: "string" },
  "exit-when-done": { type: "boolean" },
  "timeout-sec": { type: "string" },
} as const;

export interface D1EmulatorIo {
  out: (line: string) => void;
  err: (line: string) => void;
  /** Resolves when the command should stop (default: SIGINT / SIGTERM). */
  stopSignal?: Promise<void>;
}

const defaultIo: D1EmulatorIo = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
};

export async function d1EmulatorCommand(argv: string[], io: D1EmulatorIo = defaultIo): Promise<number> {
  let o: {
    port: number;
    host: string;
    token: string;
    station?: string;
    jobs: unknown[];
    samples: number;
    record?: string;
    exitWhenDone: boolean;
    timeoutSec: number;
  };
  try {
    const { values } = parseCommandArgs(argv, OPTIONS);
    if (values.help) {
      io.out(D1_EMULATOR_HELP);
      return 0;
    }
    const whole = (key: "port" | "sample" | "timeout-sec", d: number): number => {
      const v = values[key];
      if (v === undefined) return d;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${key} must be a whole number`);
      return n;
    };
    const token = values.token ?? randomBytes(18).toString("base64url");
    if (token.length < 8)
      throw new UsageError("--token must be at least 8 characters (the agent requires it)");
    const jobs: unknown[] = values["jobs-file"] ? readJobsFile(values["jobs-file"]) : [];
    const samples = whole("sample", 0);
    o = {
      port: whole("port", 8765),
      host: values.host ?? "127.0.0.1",
      token,
      ...(values.station ? { station: values.station } : {}),
      jobs,
      samples,
      ...(values.record ? { record: resolve(values.record) } : {}),
      exitWhenDone: values["exit-when-done"] === true,
      timeoutSec: whole("timeout-sec", 120),
    };
    if (o.exitWhenDone && jobs.length + samples === 0)
      throw new UsageError("--exit-when-done needs --jobs-file or --sample");
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${err.message}\n\n${D1_EMULATOR_HELP}`);
      return 2;
    }
    throw err;
  }

  if (o.record) writeFileSync(o.record, "", { flag: "a" });
  const emulator = new D1Emulator({
    token: o.token,
    port: o.port,
    host: o.host,
    ...(o.record ? { recordFile: o.record } : {}),
  });
  let url: string;
  try {
    ({ url } = await emulator.start());
  } catch (err) {
    io.err(`kiosk-agent d1-emulator: cannot listen on ${o.host}:${o.port}: ${(err as Error).message}`);
    return 1;
  }
  // Elapsed time on the monotonic clock: a wall-clock step must not make the stamps jump.
  const started = performance.now();
  const stamp = () => `${((performance.now() - started) / 1000).toFixed(2).padStart(7)}s`;
  io.out(`D1 emulator listening on ${url}`);
  io.out(`  agent configuration: "d1": { "url": "${url}", "token": "${o.token}", "allowInsecure": true }`);
  emulator.on("connection", (s) =>
    io.out(`${stamp()}  station ${s.persoStation} connected (agent ${s.agentVersion})`),
  );
  emulator.on("disconnect", ({ station }) => {
    if (station) io.out(`${stamp()}  station ${station} disconnected`);
  });
  emulator.on("operation", (op: Operation) => io.out(`${stamp()}  D1 <- ${describe(op)}`));
  emulator.on("violation", (v) => io.out(`${stamp()}  protocol violation ${v.kind}: ${v.detail}`));

  const stop =
    io.stopSignal ??
    new Promise<void>((done) => {
      const handler = (): void => {
        process.off("SIGINT", handler);
        process.off("SIGTERM", handler);
        done();
      };
      process.once("SIGINT", handler);
      process.once("SIGTERM", handler);
    });
  const pushed: string[] = [];
  let code = 0;
  try {
    if (o.jobs.length + o.samples > 0) {
      io.out(`waiting for ${o.station ?? "a station"} to connect…`);
      let station: string;
      try {
        const info = await Promise.race([
          emulator.waitForConnection(o.station, o.timeoutSec * 1000),
          stop.then(() => undefined),
        ]);
        if (!info) return 0;
        station = info.persoStation;
      } catch {
        io.err(`kiosk-agent d1-emulator: no station connected within ${o.timeoutSec}s`);
        return 1;
      }
      // Sample jobs are made for the station that connected, so that they are valid for it.
      const runId = randomBytes(4).toString("hex");
      const samples = Array.from({ length: o.samples }, (_, i) => makeSampleJob(i, { runId, station }));
      for (const job of [...o.jobs, ...samples]) {
        const answer = await emulator.push(job, { station });
        const id = answer.operationId ?? "(no operationId)";
        if (answer.result === "accepted") pushed.push(id);
        io.out(
          `${stamp()}  push ${short(id)} ${answer.result}` +
            (answer.duplicate ? " (duplicate)" : "") +
            (answer.errorCode ? ` ${answer.errorCode} (${answer.error})` : ""),
        );
      }
    }
    if (o.exitWhenDone) {
      const open = () => [...new Set(pushed)].filter((id) => emulator.terminalCount(id) === 0);
      try {
        await Promise.race([emulator.waitFor(() => open().length === 0, o.timeoutSec * 1000), stop]);
      } catch {
        io.err(`kiosk-agent d1-emulator: ${open().length} job(s) still open after ${o.timeoutSec}s`);
        code = 1;
      }
    } else {
      await stop;
    }
    printReport(emulator, io);
    return code;
  } finally {
    await emulator.stop();
  }
}

/** What each operation last reported, as D1 decides "last" (a terminal event wins). */
function printReport(emulator: D1Emulator, io: D1EmulatorIo): void {
  const ids = [...new Set(emulator.operations().map((o) => o.operationId))];
  io.out(`\nreported: ${ids.length} operation(s)`);
  for (const id of ids) {
    io.out(`  ${id}  ${statusOf(emulator.latest(id)!)}`);
  }
}

function describe(op: Operation): string {
  return `${short(op.operationId)}  ${statusOf(op)}`;
}

function statusOf(op: Operation): string {
  const extra = [
    op.details.reason ? `reason=${op.details.reason}` : "",
    op.errorCode ? `errorCode=${op.errorCode}` : "",
    op.error ? `error=${op.error}` : "",
  ]
    .filter(Boolean)
    .join(" ");
  return `${op.details.status.padEnd(20)} ${op.status.padEnd(10)} ${extra}`.trimEnd();
}
