/**
 * The console's credentials (docs/console.md, "Sign-in and sessions"): the token, presented in an
 * `Authorization: Bearer` header (the CLIs) or once as `/?token=` (the printed link), and the
 * server-side sessions a browser holds after that link, by an HttpOnly cookie. Wrong tokens are
 * counted per remote address; past a few, that address is locked out for a doubling time.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Logger } from "../log/logger.js";
import type { Clock } from "../util/clock.js";

/** PCI DSS 8.2.8: a session idle for more than 15 minutes needs the token again. */
export const SESSION_IDLE_MS = 15 * 60_000;
/** A session lasts one shift at most, however busy. */
export const SESSION_ABSOLUTE_MS = 8 * 3_600_000;
/** Sessions kept at once; the oldest goes first (each `/?token=` sign-in makes one). */
export const MAX_SESSIONS = 16;
/** Wrong tokens from one address before it is locked out. */
export const FREE_FAILURES = 5;
/** The first lockout; each further wrong token doubles it, up to LOCKOUT_MAX_MS. */
export const LOCKOUT_BASE_MS = 1_000;
export const LOCKOUT_MAX_MS = 15 * 60_000;
/** Failures older than this (with none since) are forgotten. */
const FAILURE_MEMORY_MS = 15 * 60_000;
const MAX_ADDRESSES = 1024;

/**
 * `wrong`: checked and wrong (it may have started a lockout); `locked`: not checked at all, the
 * address is locked out for `lockedForMs` more.
 */
export type TokenVerdict =
  | { ok: true }
  | { ok: false; wrong: true }
  | { ok: false; locked: true; lockedForMs: number };

interface Session {
  createdAt: number;
  seenAt: number;
}

interface Failures {
  count: number;
  lastAt: number;
  lockedUntil: number;
  /** The lockout was already logged (one line per lockout, not one per refused attempt). */
  told: boolean;
}

export class ConsoleAuth {
  /** SHA-256 of the session id → session: the map never holds what the browser sends. */
  private readonly sessions = new Map<string, Session>();
  private readonly failures = new Map<string, Failures>();

  constructor(
    private readonly token: string,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /**
   * A token presented by `remote`. Refused unchecked while the address is locked out; a wrong one is
   * counted and logged (never its value), a right one clears the address's count.
   */
  checkToken(candidate: string, remote: string, via: "bearer" | "query"): TokenVerdict {
    const now = this.clock.now();
    const f = this.failures.get(remote);
    if (f && now - f.lastAt > FAILURE_MEMORY_MS && now >= f.lockedUntil) this.failures.delete(remote);
    const current = this.failures.get(remote);
    if (current && now < current.lockedUntil) {
      const lockedForMs = current.lockedUntil - now;
      if (!current.told) {
        current.told = true;
        this.log.warn(
          { remote, via, failures: current.count, lockedForMs },
          "console: token attempts refused unchecked while this address is locked out",
        );
      }
      return { ok: false, locked: true, lockedForMs };
    }
    if (equal(candidate, this.token)) {
      this.failures.delete(remote);
      return { ok: true };
    }
    const next: Failures = current ?? { count: 0, lastAt: now, lockedUntil: 0, told: false };
    next.count++;
    next.lastAt = now;
    let lockedForMs: number | undefined;
    if (next.count >= FREE_FAILURES) {
      lockedForMs = Math.min(LOCKOUT_MAX_MS, LOCKOUT_BASE_MS * 2 ** (next.count - FREE_FAILURES));
      next.lockedUntil = now + lockedForMs;
      next.told = false;
    }
    this.failures.delete(remote);
    this.failures.set(remote, next);
    if (this.failures.size > MAX_ADDRESSES) this.failures.delete(this.failures.keys().next().value!);
    this.log.warn(
      { remote, via, failures: next.count, ...(lockedForMs !== undefined ? { lockedForMs } : {}) },
      "console: wrong token",
    );
    return { ok: false, wrong: true };
  }

  /** A new session; returns the id for the cookie. */
  openSession(): string {
    const id = randomBytes(32).toString("base64url");
    const now = this.clock.now();
    this.sweep(now);
    this.sessions.set(digest(id), { createdAt: now, seenAt: now });
    while (this.sessions.size > MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
    return id;
  }

  /**
   * The session key of a live session (its idle time starts again when `touch`), or undefined for
   * an unknown or expired one (which is dropped).
   */
  session(id: string | undefined, touch = true): string | undefined {
    if (id === undefined || id.length > 100) return undefined;
    const key = digest(id);
    return this.live(key, touch) ? key : undefined;
  }

  /** Is the session behind `key` still live? (for a live stream; does not count as activity) */
  live(key: string, touch = false): boolean {
    const s = this.sessions.get(key);
    if (!s) return false;
    const now = this.clock.now();
    if (now - s.seenAt > SESSION_IDLE_MS || now - s.createdAt > SESSION_ABSOLUTE_MS) {
      this.sessions.delete(key);
      return false;
    }
    if (touch) s.seenAt = now;
    return true;
  }

  /** Seconds the cookie may live (the absolute bound; the idle bound is kept here, server-side). */
  get cookieMaxAgeSec(): number {
    return SESSION_ABSOLUTE_MS / 1000;
  }

  private sweep(now: number): void {
    for (const [key, s] of this.sessions) {
      if (now - s.seenAt > SESSION_IDLE_MS || now - s.createdAt > SESSION_ABSOLUTE_MS)
        this.sessions.delete(key);
    }
  }
}

function digest(id: string): string {
  return createHash("sha256").update(id).digest("base64url");
}

function equal(a: string, b: string): boolean {
  const x = createHash("sha256").update(a).digest();
  const y = createHash("sha256").update(b).digest();
  return timingSafeEqual(x, y);
}
