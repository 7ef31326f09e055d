/**
 * The local web console (docs/console.md): a plain node:http server on loopback serving one static
 * page, a JSON status API, a Server-Sent Events stream of status snapshots and, in simulator mode,
 * the fault / sample-job buttons. Every route needs a credential: the console token in an
 * `Authorization: Bearer` header, or a server-side session's cookie. The token is taken in the query
 * only as `GET /?token=`, which opens a session (HttpOnly, SameSite=Strict cookie) and redirects to
 * `/`, so the token leaves the address bar and history. Anything else gets 401; wrong tokens are
 * rate-limited per address (agent/console/auth.ts); a `Host` that is not this machine's is refused.
 */
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { describeLink } from "../../drivers/printer/create-printer.js";
import {
  checkOperator,
  isTechnicianCommand,
  READING_COMMANDS,
  runTechnicianCommand,
  TECHNICIAN_COMMANDS,
  TechnicianAudit,
  type TechnicianCommand,
  TechnicianError,
} from "../audit/technician-audit.js";
import type { Logger } from "../log/logger.js";
import { type Clock, systemClock } from "../util/clock.js";
import { HostAllowList, isLoopbackHost } from "../util/host-check.js";
import { ConsoleAuth } from "./auth.js";
import { type ConsoleAgent, SnapshotSource } from "./snapshot.js";
import type { SimulatorControls } from "./types.js";

export interface ConsoleServerOptions {
  agent: ConsoleAgent;
  logger: Logger;
  clock?: Clock;
  /** Default 127.0.0.1. */
  host?: string;
  /** 0 = ephemeral. Default 8787. */
  port?: number;
  /** The console token. Absent: a random one, written to `tokenFile` when given. */
  token?: string;
  tokenFile?: string;
  /** Simulator mode: the fault and sample-job buttons act on these. */
  simulator?: SimulatorControls;
  /** Host names besides 127.0.0.1, localhost and [::1] that requests may name (`console.allowedHosts`). */
  allowedHosts?: readonly string[];
}

const COOKIE = "kiosk_console";
const PAGE_FILE = new URL("./page.html", import.meta.url);
/** SSE comment lines keep idle proxies and the browser from dropping the stream. */
const KEEPALIVE_MS = 25_000;
const MAX_BODY = 4096;

interface Client {
  res: ServerResponse;
  /** The session the stream was opened with: the stream ends when that session expires. */
  session?: string;
}

export class ConsoleServer {
  readonly token: string;
  private readonly host: string;
  private readonly port: number;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly page: { html: string; csp: string };
  private server: Server | undefined;
  private source: SnapshotSource | undefined;
  private starting: Promise<{ url: string }> | undefined;
  private address: string | undefined;
  private readonly clients = new Set<Client>();
  private scheduled = false;
  private eventSeq = 0;
  private keepalive: object | undefined;
  private readonly detach: Array<() => void> = [];
  /** The TECHNICIAN audit rows of printer commands, on the job store's connection (made on first use). */
  private technicianAudit: TechnicianAudit | undefined;
  private readonly auth: ConsoleAuth;
  private readonly hosts: HostAllowList;
  private hostRefusals = { lastLogAt: Number.NEGATIVE_INFINITY, suppressed: 0 };

  constructor(private readonly options: ConsoleServerOptions) {
    this.host = options.host ?? "127.0.0.1";
    // Plain HTTP only: the token and the session cookie must not cross a network (config validation
    // says the same in one line; this is the last word).
    if (!isLoopbackHost(this.host)) {
      throw new Error(`console.host ${this.host} is not a loopback address: the console has no TLS`);
    }
    this.port = options.port ?? 8787;
    this.clock = options.clock ?? systemClock;
    this.log = options.logger.child({ component: "console" });
    this.token = options.token ?? randomBytes(24).toString("base64url");
    if (options.token === undefined && options.tokenFile) {
      writeFileSync(options.tokenFile, `${this.token}\n`, { mode: 0o600 });
    }
    this.page = loadPage();
    this.auth = new ConsoleAuth(this.token, this.clock, this.log);
    this.hosts = new HostAllowList(options.allowedHosts);
  }

  /** The console's base URL once listening (`http://127.0.0.1:PORT`). */
  get url(): string | undefined {
    return this.address;
  }

  /** Starts listening (once; later calls return the same promise). */
  start(): Promise<{ url: string }> {
    this.starting ??= this.listen();
    return this.starting;
  }

  async stop(): Promise<void> {
    // A listen still under way would otherwise finish after the stop and keep the port open.
    await this.starting?.catch(() => undefined);
    const server = this.server;
    this.server = undefined;
    if (this.keepalive) this.clock.clearTimeout(this.keepalive);
    this.keepalive = undefined;
    for (const d of this.detach.splice(0)) d();
    this.source?.close();
    for (const c of this.clients) c.res.end();
    this.clients.clear();
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private async listen(): Promise<{ url: string }> {
    const { agent, simulator } = this.options;
    this.source = new SnapshotSource(agent, this.clock, simulator);
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.log.error({ err }, "console request failed");
        if (!res.headersSent) json(res, 500, { error: "internal error" });
        else res.end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, this.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", (err) => this.log.error({ err }, "console server error"));
    this.server = server;
    const { port } = server.address() as AddressInfo;
    const host = this.host.includes(":") ? `[${this.host}]` : this.host;
    this.address = `http://${host}:${port}`;
    this.watch();
    this.tick();
    this.log.info({ url: this.address }, "local console listening");
    return { url: this.address };
  }

  /** Every change the page should see schedules one broadcast for the next turn of the event loop. */
  private watch(): void {
    const { agent, simulator } = this.options;
    const changed = (): void => this.changed();
    const on = <E extends string>(
      emitter: { on(e: E, l: () => void): unknown; off(e: E, l: () => void): unknown },
      event: E,
    ): void => {
      emitter.on(event, changed);
      this.detach.push(() => emitter.off(event, changed));
    };
    on(agent.link, "up");
    on(agent.link, "down");
    // Pushes, acks and queries: the agent's own handler runs first (it registered first).
    on(agent.link, "message");
    on(agent.pipeline, "step");
    on(agent.pipeline, "finished");
    on(agent.supervisor, "change");
    on(agent.supervisor, "supplies");
    on(agent.swipePrompt, "change");
    if (simulator) this.detach.push(simulator.onChange(changed));
    agent.ready().then(changed, changed);
  }

  private changed(): void {
    if (this.scheduled || this.clients.size === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.broadcast();
    });
  }

  private broadcast(): void {
    if (!this.source || this.clients.size === 0) return;
    const frame = this.statusFrame();
    for (const c of this.clients) c.res.write(frame);
  }

  private statusFrame(): string {
    const data = JSON.stringify(this.source!.snapshot());
    return `id: ${++this.eventSeq}\nevent: status\ndata: ${data}\n\n`;
  }

  private tick(): void {
    this.keepalive = this.clock.setTimeout(() => {
      for (const c of this.clients) {
        if (c.session !== undefined && !this.auth.live(c.session)) {
          // The session expired: the stream ends, and the page's reconnect is refused (401).
          this.clients.delete(c);
          c.res.end();
          continue;
        }
        c.res.write(": keepalive\n\n");
      }
      if (this.server) this.tick();
    }, KEEPALIVE_MS);
    (this.keepalive as { unref?: () => void }).unref?.();
  }

  // ---- requests -------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://console.invalid");
    const path = url.pathname;
    const method = req.method ?? "GET";
    setCommonHeaders(res);
    if (!this.hosts.allows(req.headers.host)) {
      // DNS rebinding: a foreign page whose name points at 127.0.0.1 names itself in Host.
      this.refuseHost(req.headers.host);
      res.writeHead(421, { "Content-Type": "text/plain; charset=utf-8" });
      res.end(`host not allowed: open the console as http://127.0.0.1:${this.listenPort()}/\n`);
      return;
    }
    if (path === "/favicon.ico") {
      // Browsers ask for it on their own; an empty answer keeps their console free of 404s.
      res.writeHead(204);
      res.end();
      return;
    }

    const auth = this.authorize(req, url, method, path);
    if (auth.kind !== "ok") {
      if (auth.kind === "locked") {
        const retryAfter = Math.ceil(auth.lockedForMs / 1000);
        res.setHeader("Retry-After", String(retryAfter));
        json(res, 429, { error: `too many wrong tokens from this address: try again in ${retryAfter} s` });
      } else if (path.startsWith("/api/")) {
        res.setHeader("WWW-Authenticate", 'Bearer realm="kiosk-console"');
        json(res, 401, { error: "unauthorized: send the console token (Authorization: Bearer)" });
      } else {
        res.writeHead(401, { "Content-Type": "text/html; charset=utf-8" });
        res.end(UNAUTHORIZED_PAGE);
      }
      return;
    }

    if (method === "GET" && path === "/") {
      if (auth.via === "query") {
        // The token leaves the address bar (and history) at once; a session cookie carries on.
        const id = this.auth.openSession();
        res.setHeader(
          "Set-Cookie",
          `${COOKIE}=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${this.auth.cookieMaxAgeSec}`,
        );
        res.writeHead(303, { Location: "/" });
        res.end();
        return;
      }
      res.writeHead(200, {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": this.page.csp,
      });
      res.end(this.page.html);
      return;
    }
    if (method === "GET" && path === "/api/status") {
      json(res, 200, this.source!.snapshot());
      return;
    }
    if (method === "GET" && path === "/api/events") {
      this.openStream(req, res, auth.session);
      return;
    }
    const preview = /^\/api\/preview\/(\d{1,9})\/(front|back)\.png$/.exec(path);
    if (method === "GET" && preview) {
      const png = this.options.simulator?.preview(Number(preview[1]))?.sides[preview[2] as "front" | "back"];
      if (!png) {
        json(res, 404, { error: "no such preview" });
        return;
      }
      res.writeHead(200, { "Content-Type": "image/png", "Content-Length": png.length });
      res.end(png);
      return;
    }
    if (path.startsWith("/api/printer/")) {
      await this.printerAction(req, res, method, url, path.slice("/api/printer/".length));
      return;
    }
    if (path.startsWith("/api/sim/")) {
      await this.simulatorAction(req, res, method, path.slice("/api/sim/".length));
      return;
    }
    json(res, 404, { error: "not found" });
  }

  private async simulatorAction(
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    action: string,
  ): Promise<void> {
    const sim = this.options.simulator;
    if (!sim) {
      json(res, 404, { error: "not in simulator mode" });
      return;
    }
    if (method !== "POST") {
      res.setHeader("Allow", "POST");
      json(res, 405, { error: "POST only" });
      return;
    }
    // A JSON content type forces a CORS preflight (which this server never grants), and a foreign
    // Origin is refused: another page on this machine cannot press the buttons with our cookie.
    if (!(req.headers["content-type"] ?? "").startsWith("application/json") || !this.sameOrigin(req)) {
      json(res, 403, { error: "JSON from the console page only" });
      return;
    }
    const body = await readJson(req);
    switch (action) {
      case "fault": {
        const name = typeof body?.["name"] === "string" ? body["name"] : "";
        if (!sim.faults.includes(name)) {
          json(res, 400, { error: "unknown fault", faults: sim.faults });
          return;
        }
        sim.injectFault(name);
        this.log.info({ fault: name }, "fault injected from the console");
        json(res, 200, { ok: true, fault: name });
        return;
      }
      case "clear-faults":
        sim.clearFaults();
        json(res, 200, { ok: true });
        return;
      case "take-card":
        json(res, 200, { ok: true, taken: sim.takeCard() });
        return;
      case "push-sample": {
        try {
          const answer = await sim.pushSampleJob();
          this.log.info({ operationId: answer.operationId, result: answer.result }, "sample job pushed");
          json(res, 200, { ok: answer.result === "accepted", ...answer });
        } catch (err) {
          json(res, 503, { error: `push failed: ${(err as Error).message}` });
        }
        return;
      }
      default:
        json(res, 404, { error: "unknown simulator action" });
    }
  }

  /**
   * A technician's printer command (docs/console.md, `kiosk-agent printer`): `GET info|counters`,
   * `POST clean|reset|eject|test-card` with `{operator?, feeder?}`. It runs between cards through the
   * supervisor (`maintenance`: refused during a card or while the printer is away) and every run,
   * done or refused, is a TECHNICIAN audit row.
   */
  private async printerAction(
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    url: URL,
    name: string,
  ): Promise<void> {
    if (!isTechnicianCommand(name)) {
      json(res, 404, { error: "unknown printer command", commands: TECHNICIAN_COMMANDS });
      return;
    }
    const reading = READING_COMMANDS.has(name);
    const allowed = reading ? "GET" : "POST";
    if (method !== allowed) {
      res.setHeader("Allow", allowed);
      json(res, 405, { error: `${allowed} only` });
      return;
    }
    let body: Record<string, unknown> | undefined;
    if (reading) {
      body = { operator: url.searchParams.get("operator") ?? undefined };
    } else {
      // As for the simulator buttons: JSON only (a CORS preflight nobody grants), no foreign Origin.
      if (!(req.headers["content-type"] ?? "").startsWith("application/json") || !this.sameOrigin(req)) {
        json(res, 403, { error: "JSON from the console page only" });
        return;
      }
      body = await readJson(req);
    }
    const badRequest = (error: string): void =>
      json(res, 400, { ok: false, command: name, code: "BAD_REQUEST", error });
    if (!body) return badRequest("the body must be a JSON object of at most 4096 bytes");
    if (body["feeder"] !== undefined && typeof body["feeder"] !== "string") {
      return badRequest("feeder must be a feeder id (a string)");
    }
    let operator: string | undefined;
    try {
      operator = checkOperator(body["operator"]);
    } catch (err) {
      if (err instanceof TechnicianError) return badRequest(err.message);
      throw err;
    }
    const agent = this.options.agent;
    const router = agent.router;
    this.technicianAudit ??= new TechnicianAudit(agent.store.db, this.clock);
    const feeder = body["feeder"] as string | undefined;
    const outcome = await runTechnicianCommand(
      { command: name, operator, feeder, via: "console" },
      {
        run: (command: TechnicianCommand, operation) => agent.supervisor.maintenance(command, operation),
        feeders: agent.config.printer.feeders.map((f) => f.id),
        stockOf: (id) => router.stockOf(id),
        ledger: agent.store.stock,
        audit: this.technicianAudit,
        link: describeLink(agent.config.printer),
      },
    );
    this.log.info(
      { command: name, result: outcome.ok ? "ok" : outcome.code, ...(operator ? { operator } : {}) },
      "technician printer command",
    );
    json(res, outcome.ok ? 200 : technicianHttpStatus(outcome.code), outcome);
  }

  private openStream(req: IncomingMessage, res: ServerResponse, session?: string): void {
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-store",
      Connection: "keep-alive",
      "X-Accel-Buffering": "no",
    });
    res.write("retry: 1000\n\n");
    res.write(this.statusFrame());
    const client: Client = { res, ...(session !== undefined ? { session } : {}) };
    this.clients.add(client);
    req.socket.setNoDelay(true);
    req.on("close", () => this.clients.delete(client));
  }

  /**
   * Who is asking: a live session's cookie, the token in `Authorization: Bearer`, or the token as
   * `?token=` on `GET /` only (anywhere else a token in the URL is ignored: it would stay in history
   * and logs). A wrong token is counted against the remote address; a locked-out address gets 429.
   */
  private authorize(
    req: IncomingMessage,
    url: URL,
    method: string,
    path: string,
  ):
    | { kind: "ok"; via: "session" | "bearer" | "query"; session?: string }
    | { kind: "locked"; lockedForMs: number }
    | { kind: "none" } {
    const remote = req.socket.remoteAddress ?? "unknown";
    const query = method === "GET" && path === "/" ? url.searchParams.get("token") : null;
    if (query === null) {
      // A sign-in link always opens a fresh session; otherwise a live session is enough.
      const session = this.auth.session(parseCookies(req.headers.cookie)[COOKIE]);
      if (session !== undefined) return { kind: "ok", via: "session", session };
    }
    const bearer = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "")?.[1]?.trim();
    const presented = query ?? bearer;
    if (presented === undefined) return { kind: "none" };
    const verdict = this.auth.checkToken(presented, remote, query !== null ? "query" : "bearer");
    if (verdict.ok) return { kind: "ok", via: query !== null ? "query" : "bearer" };
    return "locked" in verdict ? { kind: "locked", lockedForMs: verdict.lockedForMs } : { kind: "none" };
  }

  /** One log line per 10 s at most for refused Host headers (a rebinding page may poll). */
  private refuseHost(host: string | undefined): void {
    const now = this.clock.now();
    if (now - this.hostRefusals.lastLogAt < 10_000) {
      this.hostRefusals.suppressed++;
      return;
    }
    this.log.warn(
      {
        host: (host ?? "(none)").slice(0, 100),
        allowed: this.hosts.list,
        suppressed: this.hostRefusals.suppressed,
      },
      "console: request for a host name that is not this machine's refused (DNS rebinding?)",
    );
    this.hostRefusals = { lastLogAt: now, suppressed: 0 };
  }

  private listenPort(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? this.port;
  }

  private sameOrigin(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return true; // curl, the status CLI
    return origin === `http://${req.headers.host ?? ""}`;
  }
}

/** A refused or failed printer command: bad request 400, a card in production 409, printer away 503, a printer fault 502. */
function technicianHttpStatus(code: string): number {
  switch (code) {
    case "BAD_REQUEST":
    case "BAD_FEEDER":
      return 400;
    case "PRINTER_BUSY":
      return 409;
    case "PRINTER_OFFLINE":
      return 503;
    default:
      return 502;
  }
}

function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? "").split(";")) {
    const i = part.indexOf("=");
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

function setCommonHeaders(res: ServerResponse): void {
  res.setHeader("Cache-Control", "no-store");
  res.setHeader("X-Content-Type-Options", "nosniff");
  res.setHeader("X-Frame-Options", "DENY");
  res.setHeader("Referrer-Policy", "no-referrer");
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8" });
  res.end(text);
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown> | undefined> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) return undefined;
    chunks.push(chunk);
  }
  if (size === 0) return {};
  try {
    const value = JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown;
    return value && typeof value === "object" ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The page, and a CSP that allows exactly its one inline script (by hash) and nothing remote. */
function loadPage(): { html: string; csp: string } {
  const html = readFileSync(PAGE_FILE, "utf8");
  const scripts = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map(
    (m) => `'sha256-${createHash("sha256").update(m[1]!).digest("base64")}'`,
  );
  const styles = [...html.matchAll(/<style>([\s\S]*?)<\/style>/g)].map(
    (m) => `'sha256-${createHash("sha256").update(m[1]!).digest("base64")}'`,
  );
  const csp = [
    "default-src 'none'",
    `script-src ${scripts.join(" ") || "'none'"}`,
    `style-src ${styles.join(" ") || "'none'"}`,
    "img-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
  return { html, csp };
}

const UNAUTHORIZED_PAGE = `<!doctype html><meta charset="utf-8"><title>kiosk console: token needed</title>
<p>This console needs its token. Open it as <code>http://127.0.0.1:PORT/?token=TOKEN</code>: the demo
prints that link, and on a kiosk the token is in <code>console.token</code> in the agent's data
directory. A session ends after 15 minutes without use, or 8 hours after the link was opened.</p>`;
