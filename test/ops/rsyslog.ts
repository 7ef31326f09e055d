import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";

/**
 * A real rsyslog (Debian's `rsyslog` package, scripts/setup.sh) as the audit trail's collector: a
 * child process in the foreground (`rsyslogd -n`) with a configuration, pid file and output file of
 * its own, listening on a loopback port. It writes every message it receives, exactly as received
 * (`%rawmsg%`), one per line. One main-queue worker, so lines are written in the order received.
 */
export const RSYSLOGD = "/usr/sbin/rsyslogd";

export function rsyslogAvailability(): { available: true } | { unavailable: string } {
  if (!existsSync(RSYSLOGD))
    return { unavailable: `${RSYSLOGD} is not installed (scripts/setup.sh installs rsyslog)` };
  return { available: true };
}

/** RFC 5425 needs rsyslog's OpenSSL network stream driver (Debian's `rsyslog-openssl`). */
export function rsyslogTlsAvailability(): { available: true } | { unavailable: string } {
  const base = rsyslogAvailability();
  if ("unavailable" in base) return base;
  const driver = [
    "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so",
    "/usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_ossl.so",
  ];
  if (!driver.some((f) => existsSync(f)))
    return { unavailable: "rsyslog-openssl is not installed (scripts/setup.sh installs it)" };
  return { available: true };
}

export interface RsyslogTls {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export class Rsyslog {
  readonly output: string;
  private child: ChildProcess | undefined;
  private readonly conf: string;
  private readonly pidFile: string;
  private readonly stderrFile: string;
  private stderr = "";

  private constructor(
    dir: string,
    readonly port: number,
  ) {
    this.output = join(dir, "collector.log");
    this.conf = join(dir, "rsyslog.conf");
    this.pidFile = join(dir, "rsyslogd.pid");
    this.stderrFile = join(dir, "rsyslogd.stderr");
  }

  /** Writes the configuration for a free loopback port and starts rsyslogd. */
  static async start(dir: string, options: { tls?: RsyslogTls } = {}): Promise<Rsyslog> {
    const r = new Rsyslog(dir, await freePort());
    const tls = options.tls;
    writeFileSync(
      r.conf,
      [
        `global(workDirectory="${dir}" maxMessageSize="64k"${
          tls
            ? ` defaultNetstreamDriver="ossl" defaultNetstreamDriverCAFile="${tls.caFile}" defaultNetstreamDriverCertFile="${tls.certFile}" defaultNetstreamDriverKeyFile="${tls.keyFile}"`
            : ""
        })`,
        tls
          ? 'module(load="imtcp" streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")'
          : 'module(load="imtcp")',
        'main_queue(queue.workerThreads="1")',
        'template(name="raw" type="string" string="%rawmsg%\\n")',
        `input(type="imtcp" address="127.0.0.1" port="${r.port}" ruleset="audit")`,
        `ruleset(name="audit") { action(type="omfile" file="${r.output}" template="raw") }`,
        "",
      ].join("\n"),
    );
    await r.resume();
    return r;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts rsyslogd (again) on the same port and output file; resolves once it accepts connections. */
  async resume(): Promise<void> {
    if (this.child) throw new Error("rsyslogd is already running");
    const child = spawn(RSYSLOGD, ["-n", "-f", this.conf, "-i", this.pidFile], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.child = child;
    child.stderr?.on("data", (d: Buffer) => {
      this.stderr += d.toString();
      writeFileSync(this.stderrFile, this.stderr);
    });
    child.once("exit", () => {
      if (this.child === child) this.child = undefined;
    });
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (this.child !== child) throw new Error(`rsyslogd exited at start: ${this.stderr.trim()}`);
      if (await accepts(this.port)) return;
      if (Date.now() > deadline)
        throw new Error(`rsyslogd does not listen on ${this.port}: ${this.stderr.trim()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** A graceful stop (SIGTERM, as `systemctl stop rsyslog`): resolves once the process has exited. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  /** Every line rsyslog wrote so far. */
  lines(): string[] {
    if (!existsSync(this.output)) return [];
    return readFileSync(this.output, "utf8")
      .split("\n")
      .filter((l) => l.length > 0);
  }

  get log(): string {
    return this.stderr;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Whether something accepts a TCP connection on the port (the probe sends nothing). */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}
