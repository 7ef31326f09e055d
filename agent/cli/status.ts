import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../config/load.js";
import type { AgentConfig } from "../config/schema.js";
import type { ConsoleSnapshot } from "../console/types.js";
import { parseCommandArgs, UsageError } from "./args.js";
import { shortId } from "./jobs-file.js";

export const STATUS_HELP = `Usage: kiosk-agent status [--url URL] [--token TOKEN] [--config FILE] [--json]

Asks a running agent's local console (GET /api/status) and prints the D1 link, each device with its
state and reason, the queue, recent jobs (masked PANs only) and the last errors.

Options:
  --url URL         the console's address (default: from --config, else http://127.0.0.1:8787)
  --token TOKEN     the console token (default: $KIOSK_CONSOLE_TOKEN, else from --config:
                    console.token, or the console.token file in the agent's data directory)
  --config FILE     the agent's configuration file, for the console's address and token
  --json            print the agent's JSON answer instead of the table
  --timeout-ms MS   give up after MS milliseconds (default 5000)

Exit codes:
  0  the agent answered; the D1 link is up and no device is stopped or offline
  1  no status: the agent is unreachable, refused the token (401) or answered something else
  2  usage error
  3  the agent answered, and something needs attention: the D1 link is not up, a device is
     stopped or offline (the reason is printed), or a supply warning is raised (ribbon low, a
     feeder empty or nearly empty, a bin nearly full, cleaning due, a counter mismatch)`;

const OPTIONS = {
  url: { type: "string" },
  token: { type: "string" },
  config: { type: "string", short: "c" },
  json: { type: "boolean" },
  "timeout-ms": { type: "string" },
} as const;

export interface StatusIo {
  out: (line: string) => void;
  err: (line: string) => void;
  env: NodeJS.ProcessEnv;
}

const defaultIo: StatusIo = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
  env: process.env,
};

export async function statusCommand(argv: string[], io: StatusIo = defaultIo): Promise<number> {
  let values: { url?: string; token?: string; config?: string; json?: boolean; "timeout-ms"?: string };
  try {
    ({ values } = parseCommandArgs(argv, OPTIONS) as { values: typeof values & { help?: boolean } });
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${err.message}\n\n${STATUS_HELP}`);
      return 2;
    }
    throw err;
  }
  if ((values as { help?: boolean }).help) {
    io.out(STATUS_HELP);
    return 0;
  }
  const timeoutMs = values["timeout-ms"] === undefined ? 5000 : Number(values["timeout-ms"]);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    io.err(`--timeout-ms must be a positive whole number\n\n${STATUS_HELP}`);
    return 2;
  }

  let url = values.url;
  let token = values.token ?? io.env["KIOSK_CONSOLE_TOKEN"];
  if (values.config) {
    try {
      const fromConfig = consoleOf(loadConfig(values.config, io.env));
      url ??= fromConfig.url;
      token ??= fromConfig.token;
    } catch (err) {
      if (err instanceof ConfigError) {
        io.err(err.message);
        return 1;
      }
      throw err;
    }
  }
  url ??= "http://127.0.0.1:8787";
  if (!token) {
    io.err("kiosk-agent status: no console token (--token, $KIOSK_CONSOLE_TOKEN or --config)");
    return 2;
  }
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    io.err(`--url ${url} is not a URL\n\n${STATUS_HELP}`);
    return 2;
  }

  let response: Response;
  try {
    response = await fetch(new URL("/api/status", base), {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const cause = fetchFailureCode(err);
    io.err(`kiosk-agent status: cannot reach the agent's console at ${base.origin} (${cause})`);
    return 1;
  }
  if (response.status === 401) {
    io.err(`kiosk-agent status: the console at ${base.origin} refused the token (401)`);
    return 1;
  }
  let snapshot: ConsoleSnapshot;
  try {
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    snapshot = (await response.json()) as ConsoleSnapshot;
    if (snapshot?.version !== 1) throw new Error("not a kiosk-agent status answer");
  } catch (err) {
    io.err(`kiosk-agent status: unexpected answer from ${base.origin}: ${(err as Error).message}`);
    return 1;
  }
  if (values.json) io.out(JSON.stringify(snapshot, null, 2));
  else io.out(formatStatus(snapshot, base.origin));
  return needsAttention(snapshot) ? 3 : 0;
}

/**
 * The console's address and token as an agent's configuration gives them: `console.host`/`port`,
 * and `console.token` or the token file the agent wrote in its data directory (shared with
 * `kiosk-agent printer`).
 */
export function consoleOf(config: AgentConfig): { url: string; token: string | undefined } {
  const host = config.console.host.includes(":") ? `[${config.console.host}]` : config.console.host;
  return {
    url: `http://${host}:${config.console.port}`,
    token: config.console.token ?? readTokenFile(join(config.dataDir, "console.token")),
  };
}

/** Why a fetch to the console failed: the socket error code (ECONNREFUSED, …) or the error's name. */
export function fetchFailureCode(err: unknown): string {
  return (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
}

export function needsAttention(s: ConsoleSnapshot): boolean {
  return (
    s.d1.state !== "up" ||
    s.devices.some((d) => d.state === "stopped" || d.state === "offline") ||
    (s.store !== undefined && (s.store.state !== "ok" || (s.store.warnings?.length ?? 0) > 0)) ||
    // An agent older than the supplies picture has none.
    (s.supplies?.warnings.length ?? 0) > 0
  );
}

/** The human-readable status, as `lpstat` would print it. */
export function formatStatus(s: ConsoleSnapshot, origin: string): string {
  const lines: string[] = [];
  lines.push(`kiosk-agent ${s.agentVersion} · station ${s.station} · ${s.mode} mode · ${origin}`);
  const d1Detail = [
    s.d1.since ? `since ${clock(s.d1.since)}` : "",
    s.d1.reason ? `(${s.d1.reason})` : "",
    `D1 ${s.d1.host}`,
    `${s.d1.sessions} session${s.d1.sessions === 1 ? "" : "s"}`,
  ]
    .filter(Boolean)
    .join(" · ");
  lines.push(`D1 link   ${s.d1.state.toUpperCase()}  ${d1Detail}`);
  lines.push("");
  lines.push(table(["DEVICE", "STATE", "REASON", "DETAIL"], s.devices.map(deviceRow)));
  if (s.store) lines.push(formatStore(s.store));
  if (s.swipe) {
    lines.push(
      `SWIPE     the teller must swipe the card through the magstripe encoder now (${s.swipe.operation}), before ${clock(s.swipe.until)}`,
    );
  }
  if (s.supplies) lines.push("", ...formatSupplies(s.supplies));
  lines.push("");
  const q = s.queue;
  lines.push(
    `QUEUE     waiting ${q.waiting} · in production ${q.inProduction} · statuses not yet acked by D1 ${q.outbox}`,
  );
  lines.push(
    `          ${Object.entries(q.counts)
      .map(([state, n]) => `${state} ${n}`)
      .join("  ")}`,
  );
  lines.push("");
  lines.push("RECENT JOBS");
  if (s.recentJobs.length === 0) lines.push("  (none)");
  else
    lines.push(
      indent(
        table(
          ["UPDATED", "OPERATION", "PAN", "STATE", "D1 STATUS", "REASON"],
          s.recentJobs
            .slice(0, 10)
            .map((j) => [
              clock(j.updatedAt),
              shortId(j.operationId),
              j.maskedPan ?? "",
              j.state,
              j.d1Status,
              [j.reason, j.error].filter(Boolean).join(": "),
            ]),
        ),
      ),
    );
  lines.push("");
  lines.push("LAST ERRORS");
  if (s.lastErrors.length === 0) lines.push("  (none)");
  else
    lines.push(
      indent(
        table(
          ["WHEN", "SOURCE", "REASON", "DETAIL", "OPERATION"],
          s.lastErrors.map((e) => [
            clock(e.at),
            e.source,
            e.reason,
            e.error ?? "",
            shortId(e.operationId ?? ""),
          ]),
        ),
      ),
    );
  if (s.simulator) {
    const p = s.simulator.printer as { position?: string; feederCards?: number; ribbonPanels?: number };
    lines.push("");
    lines.push(
      `SIMULATOR card position ${p.position ?? "?"} · feeder ${p.feederCards ?? "?"} · ribbon ${p.ribbonPanels ?? "?"}` +
        (s.simulator.injected.length
          ? ` · injected: ${s.simulator.injected.map((f) => f.name).join(", ")}`
          : ""),
    );
  }
  return lines.join("\n");
}

/** Ribbon, bins, cleaning and counter on one line; the feeders as a table; then each warning. */
function formatSupplies(sup: NonNullable<ConsoleSnapshot["supplies"]>): string[] {
  const r = sup.ribbon;
  const parts = [
    `ribbon ${r.remaining === null ? "unknown" : `${r.remaining}${r.capacity ? `/${r.capacity}` : ""} panels`}`,
    `cleaning ${sup.cleaning}`,
    ...sup.bins.map((b) => `${b.bin === "reject" ? "reject box" : "capture bin"} ${b.cards}/${b.capacity}`),
    `printer counter ${sup.counter.cardsInserted ?? "not read"}`,
  ];
  const lines = [`SUPPLIES  ${parts.join(" · ")}`];
  lines.push(
    indent(
      table(
        ["FEEDER", "STOCK", "CARDS", "SENSOR"],
        sup.feeders.map((f) => [
          f.feeder,
          f.stock,
          f.cards === null ? "-" : String(f.cards),
          f.empty ? "EMPTY" : f.nearEmpty ? "near empty" : "ok",
        ]),
      ),
    ),
  );
  for (const w of sup.warnings) lines.push(`WARNING   ${w.keyword}: ${w.message}`);
  return lines;
}

/** The job store: fine, a fault, or under the free-space watermark; then a line per warning. */
function formatStore(store: NonNullable<ConsoleSnapshot["store"]>): string {
  const warnings = (store.warnings ?? []).map(
    (w) => `\nSTORE     WARNING  ${w.keyword} since ${clock(w.since)}: ${w.detail}; see docs/security.md`,
  );
  return formatStoreState(store) + warnings.join("");
}

function formatStoreState(store: NonNullable<ConsoleSnapshot["store"]>): string {
  const free =
    store.freeBytes === undefined
      ? ""
      : ` · ${mb(store.freeBytes)} free, pushes refused below ${mb(store.minFreeBytes)}`;
  if (store.state === "ok") return `STORE     OK${free}`;
  if (store.state === "low-space")
    return `STORE     LOW SPACE  STORE_FULL: new pushes refused until space is freed${free}`;
  const since = store.since ? ` since ${clock(store.since)}` : "";
  return `STORE     FAULT  ${store.reason}${store.detail ? ` (${store.detail})` : ""}${since}: production waits; see docs/operations.md, "A full disk and a damaged store"${free}`;
}

function mb(bytes: number): string {
  return `${Math.floor(bytes / (1024 * 1024))} MB`;
}

function deviceRow(d: ConsoleSnapshot["devices"][number]): string[] {
  const detail = [
    d.path,
    d.since ? `since ${clock(d.since)}` : "",
    d.step ? `step ${d.step} of ${shortId(d.operationId ?? "")}` : "",
    d.lastFault ? `last fault ${d.lastFault.reason} at ${clock(d.lastFault.at)}` : "",
  ]
    .filter(Boolean)
    .join(" · ");
  return [d.name, d.state, d.reason ?? "-", detail];
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

function indent(text: string): string {
  return text
    .split("\n")
    .map((l) => `  ${l}`)
    .join("\n");
}

/** Local wall-clock time of an ISO timestamp, HH:MM:SS. */
function clock(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n: number) => String(n).padStart(2, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function readTokenFile(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}
