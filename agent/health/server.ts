import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { Logger } from "../log/logger.js";
import { HostAllowList } from "../util/host-check.js";

/** The answer of /readyz: ready, or why not (machine-readable reasons). */
export interface Readiness {
  ready: boolean;
  /**
   * Short keywords: D1_LINK_DOWN, PRINTER_STOPPED, PRINTER_OFFLINE, PRINTER_CONNECTING, SHUTTING_DOWN,
   * STORE_FULL, STORE_CORRUPT, STORE_READONLY, STORE_IO_ERROR.
   */
  reasons: string[];
  d1: "up" | "down";
  printer: { state: string; reason?: string };
}

export interface HealthServerOptions {
  /** Always loopback in the agent; tests may pass nothing else either. */
  host?: string;
  port: number;
  registry: Registry;
  readiness: () => Readiness;
  logger: Logger;
  version: string;
  /** Host names besides 127.0.0.1, localhost and [::1] that requests may name (`health.allowedHosts`). */
  allowedHosts?: readonly string[];
}

/**
 * /healthz, /readyz and /metrics on 127.0.0.1 (docs/operations.md#health-and-metrics), on node:http.
 * Read-only and without card data, so without authentication; loopback keeps it off the network,
 * and the Host check (agent/util/host-check.ts) keeps a web page's rebound name out of it.
 */
export class HealthServer {
  private server: Server | undefined;
  private starting: Promise<AddressInfo> | undefined;
  private readonly log: Logger;
  /** Monotonic (performance.now()): uptime is a duration, and must not follow a clock step. */
  private readonly startedAt = performance.now();
  private readonly hosts: HostAllowList;
  private hostRefusals = { lastLogAt: Number.NEGATIVE_INFINITY, suppressed: 0 };

  constructor(private readonly options: HealthServerOptions) {
    this.log = options.logger.child({ component: "health" });
    this.hosts = new HostAllowList(options.allowedHosts);
  }

  /** Listens; resolves with the bound address (port 0 = ephemeral). Repeated calls share one start. */
  start(): Promise<AddressInfo> {
    this.starting ??= this.listen();
    return this.starting;
  }

  private async listen(): Promise<AddressInfo> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.log.error({ err }, "health endpoint failed");
        if (!res.headersSent) send(res, 500, "text/plain; charset=utf-8", "internal error\n");
        else res.end();
      });
    });
    server.keepAliveTimeout = 5_000;
    server.headersTimeout = 10_000;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.options.port, this.options.host ?? "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.server = server;
    const address = server.address() as AddressInfo;
    this.log.info({ host: address.address, port: address.port }, "health endpoint listening");
    return address;
  }

  get address(): AddressInfo | undefined {
    return this.server?.address() as AddressInfo | undefined;
  }

  private refuseHost(host: string | undefined): void {
    const suppressed = throttled(this.hostRefusals, performance.now());
    if (suppressed === undefined) return;
    this.log.warn(
      { host: (host ?? "(none)").slice(0, 100), allowed: this.hosts.list, suppressed },
      "health: request for a host name that is not this machine's refused (DNS rebinding?)",
    );
  }

  async stop(): Promise<void> {
    await this.starting?.catch(() => undefined);
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    if (!this.hosts.allows(req.headers.host)) {
      // DNS rebinding: a web page whose name was pointed at 127.0.0.1 names itself in Host.
      this.refuseHost(req.headers.host);
      send(res, 421, "text/plain; charset=utf-8", "host not allowed: ask 127.0.0.1 or localhost\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD");
      send(res, 405, "text/plain; charset=utf-8", "method not allowed\n");
      return;
    }
    switch (path) {
      case "/healthz":
        sendJson(res, 200, {
          status: "ok",
          version: this.options.version,
          uptimeSec: Math.round((performance.now() - this.startedAt) / 1000),
        });
        return;
      case "/readyz": {
        const readiness = this.options.readiness();
        sendJson(res, readiness.ready ? 200 : 503, readiness);
        return;
      }
      case "/metrics": {
        const body = await this.options.registry.metrics();
        send(res, 200, this.options.registry.contentType, body);
        return;
      }
      default:
        send(res, 404, "text/plain; charset=utf-8", "not found: /healthz, /readyz, /metrics\n");
    }
  }
}

/** Shared by both refusals' log lines: one per 10 s at most (a rebinding page may poll). */
function throttled(state: { lastLogAt: number; suppressed: number }, now: number): number | undefined {
  if (now - state.lastLogAt < 10_000) {
    state.suppressed++;
    return undefined;
  }
  const suppressed = state.suppressed;
  state.lastLogAt = now;
  state.suppressed = 0;
  return suppressed;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  send(res, status, "application/json; charset=utf-8", `${JSON.stringify(body)}\n`);
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { "Content-Type": type, "Cache-Control": "no-store" });
  res.end(res.req.method === "HEAD" ? undefined : body);
}
