/**
 * The DNS-rebinding guard of the agent's loopback HTTP servers (console, health; docs/security.md):
 * a request is served only when its `Host` header names this machine's loopback (`127.0.0.1`,
 * `localhost`, `[::1]`) or a name the configuration allows. A page on `evil.example` whose name was
 * re-pointed at 127.0.0.1 sends `Host: evil.example:PORT` and is refused before anything else.
 *
 * Only the name is checked, not the port: the attacker controls the name, never which port a local
 * client used (an SSH tunnel may forward another local port), so checking it adds nothing.
 */

const LOOPBACK_NAMES = ["127.0.0.1", "localhost", "[::1]"];

/** A host name or IP literal a configuration may allow (IPv6 in brackets, as in a Host header). */
export const ALLOWED_HOST_NAME =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])$/;

export class HostAllowList {
  private readonly names: ReadonlySet<string>;

  constructor(extra: readonly string[] = []) {
    this.names = new Set([...LOOPBACK_NAMES, ...extra.map((n) => n.toLowerCase())]);
  }

  /** True when `header` (a Host header, `name[:port]`) names an allowed host. */
  allows(header: string | undefined): boolean {
    const name = hostName(header);
    return name !== undefined && this.names.has(name);
  }

  /** The allowed names, for the refusal's text and the log. */
  get list(): string[] {
    return [...this.names];
  }
}

/** The name part of a Host header, lower case; undefined when there is none or it is malformed. */
export function hostName(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const h = header.trim().toLowerCase();
  if (h.length === 0 || h.length > 260) return undefined;
  let name: string;
  let port: string | undefined;
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    if (end < 0) return undefined;
    name = h.slice(0, end + 1);
    const rest = h.slice(end + 1);
    if (rest !== "" && !rest.startsWith(":")) return undefined;
    port = rest === "" ? undefined : rest.slice(1);
  } else {
    const i = h.indexOf(":");
    name = i < 0 ? h : h.slice(0, i);
    port = i < 0 ? undefined : h.slice(i + 1);
  }
  if (port !== undefined && !/^\d{1,5}$/.test(port)) return undefined;
  return name;
}

/** Is `host` (a listen address or name from the configuration) a loopback one? */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase();
  if (h === "localhost" || h === "::1" || h === "[::1]") return true;
  if (h.startsWith("::ffff:")) return isLoopbackHost(h.slice("::ffff:".length));
  const v4 = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return v4?.slice(1).every((o) => Number(o) <= 255) ?? false;
}
