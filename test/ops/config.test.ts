import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { configCheckCommand } from "../../agent/cli/config-check.js";
import { ConfigError, loadConfig, parseConfig } from "../../agent/config/load.js";
import { tempDir } from "./support.js";

/** A minimal valid configuration; each test breaks one thing. */
function base(): Record<string, unknown> {
  return {
    station: { id: "KIOSK-PS-101" },
    d1: { url: "wss://d1.example.test/perso", token: "station-bearer-token" },
    dataDir: "/var/lib/kiosk-agent",
    printer: { path: "/dev/ttyUSB0" },
  };
}

/** The problems a config produces (loadConfig via a file, so env overrides apply as in production). */
function problems(raw: unknown, env: NodeJS.ProcessEnv = {}): string[] {
  const file = join(dir, `config-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, typeof raw === "string" ? raw : JSON.stringify(raw));
  try {
    loadConfig(file, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as ConfigError;
    return e.problems.length > 0 ? e.problems : [e.message];
  }
  return [];
}

let dir = "";
let remove = (): void => undefined;
beforeEach(() => {
  ({ dir, remove } = tempDir("kiosk-config-"));
});
afterEach(() => {
  vi.restoreAllMocks();
  remove();
});

describe("configuration errors name the key and what is wrong", () => {
  it("accepts the minimal configuration", () => {
    expect(problems(base())).toEqual([]);
  });

  it("missing key", () => {
    const raw = base();
    delete (raw.d1 as Record<string, unknown>).token;
    delete raw.station;
    expect(problems(raw)).toEqual([
      "station: missing (required, a section)",
      "d1.token: missing (required, a string)",
    ]);
  });

  it("a misspelt key is an error, not a silent default", () => {
    const raw = base();
    (raw as Record<string, unknown>).production = { holdWhileStopedSec: 5 };
    const found = problems(raw);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/^production: .*holdWhileStopedSec/);
  });

  it("wrong type", () => {
    const raw = base();
    (raw.printer as Record<string, unknown>).baudRate = "fast";
    expect(problems(raw)).toEqual(["printer.baudRate: Invalid input: expected number, received string"]);
  });

  it("bad URL, and a URL that is not ws:// or wss://", () => {
    const raw = base();
    (raw.d1 as Record<string, unknown>).url = "d1 dot bank";
    expect(problems(raw)).toEqual(["d1.url: must be a ws:// or wss:// URL"]);
    (raw.d1 as Record<string, unknown>).url = "https://d1.example.test/perso";
    expect(problems(raw)).toEqual(["d1.url: must be a ws:// or wss:// URL"]);
  });

  it("out of range", () => {
    const raw: Record<string, unknown> = {
      ...base(),
      health: { enabled: true, port: 70_000 },
      shutdown: { graceSec: -1 },
    };
    (raw.d1 as Record<string, unknown>).pingIntervalMs = 5;
    expect(problems(raw)).toEqual([
      "d1.pingIntervalMs: Too small: expected number to be >=100",
      "health.port: Too big: expected number to be <=65535",
      "shutdown.graceSec: Too small: expected number to be >=0",
    ]);
  });

  it("unknown enum value", () => {
    expect(problems({ ...base(), log: { level: "verbose" } })).toEqual([
      'log.level: Invalid option: expected one of "fatal"|"error"|"warn"|"info"|"debug"|"trace"',
    ]);
  });

  it("invalid JSON file: says where, never quotes the file (it holds the token)", () => {
    const text = '{\n  "d1": {\n    "token": "s3cr3t-station-token"\n    "url": "wss://x"\n  }\n}';
    const [message] = problems(text);
    expect(message).toMatch(/is not valid JSON \(line 4, column 5\)$/);
    expect(message).not.toContain("s3cr3t");
    expect(problems("")[0]).toMatch(/is not valid JSON/);
    expect(problems("[1, 2]")[0]).toMatch(/must hold a JSON object/);
  });

  it("unreadable file", () => {
    expect(() => loadConfig(join(dir, "nope.json"), {})).toThrow(/cannot read config file .*nope\.json/);
  });

  it("environment override of the wrong type names the key and the variable", () => {
    expect(
      problems(base(), {
        KIOSK_AGENT__D1__PING_INTERVAL_MS: "soon",
        KIOSK_AGENT__HEALTH__ENABLED: "yes",
      }),
    ).toEqual([
      "d1.pingIntervalMs (from KIOSK_AGENT__D1__PING_INTERVAL_MS): Invalid input: expected number, received string",
      "health.enabled (from KIOSK_AGENT__HEALTH__ENABLED): Invalid input: expected boolean, received string",
    ]);
  });

  it("environment values are typed by the schema: a digit-only token stays a string", () => {
    const file = join(dir, "c.json");
    writeFileSync(file, JSON.stringify(base()));
    const config = loadConfig(file, {
      KIOSK_AGENT__D1__TOKEN: "0012345678901234",
      KIOSK_AGENT__STATION__ID: "4711",
      KIOSK_AGENT__D1__PING_INTERVAL_MS: "2500",
      KIOSK_AGENT__HEALTH__ENABLED: "true",
      KIOSK_AGENT__SHUTDOWN__GRACE_SEC: "7.5",
      KIOSK_AGENT__LOG__LEVEL: "debug",
    });
    expect(config.d1.token).toBe("0012345678901234");
    expect(config.station.id).toBe("4711");
    expect(config.d1.pingIntervalMs).toBe(2500);
    expect(config.health.enabled).toBe(true);
    expect(config.shutdown.graceSec).toBe(7.5);
    expect(config.log.level).toBe("debug");
  });

  it("plain ws:// is refused unless d1.allowInsecure is true", () => {
    const raw = base();
    (raw.d1 as Record<string, unknown>).url = "ws://127.0.0.1:8080";
    expect(problems(raw)).toEqual([
      "d1.url: plain ws:// is refused: use wss://, or set d1.allowInsecure: true (demo and development only)",
    ]);
    (raw.d1 as Record<string, unknown>).allowInsecure = true;
    expect(problems(raw)).toEqual([]);
  });

  it("a client certificate needs its key", () => {
    const raw = base();
    (raw.d1 as Record<string, unknown>).tls = { certFile: "/etc/kiosk-agent/station.crt" };
    expect(problems(raw)).toEqual([
      "d1.tls.keyFile: a client certificate needs both d1.tls.certFile and d1.tls.keyFile (or d1.tls.keyCredential)",
    ]);
  });

  it("several mistakes are all reported at once, and values are never echoed", () => {
    const raw = base();
    (raw.d1 as Record<string, unknown>).token = "short";
    (raw.d1 as Record<string, unknown>).missedPongs = 99;
    let message = "";
    try {
      parseConfig(raw);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain("d1.token: Too small: expected string to have >=8 characters");
    expect(message).toContain("d1.missedPongs: Too big: expected number to be <=10");
    expect(message).not.toContain("short");
  });
});

describe("kiosk-agent config check", () => {
  const run = async (argv: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    vi.spyOn(console, "log").mockImplementation((line: string) => void out.push(line));
    vi.spyOn(console, "error").mockImplementation((line: string) => void err.push(line));
    const code = await configCheckCommand(argv);
    vi.restoreAllMocks();
    return { code, out: out.join("\n"), err: err.join("\n") };
  };

  it("the documented example configuration is valid", async () => {
    const result = await run(["check", "docs/config.example.json"]);
    expect(result).toMatchObject({ code: 0, err: "" });
    expect(result.out).toContain("valid (station KIOSK-PS-101");
  });

  it("an invalid file: exit 1 and one line per bad key", async () => {
    const file = join(dir, "bad.json");
    writeFileSync(file, JSON.stringify({ ...base(), log: { level: "loud" }, health: { port: "x" } }));
    const result = await run(["check", file]);
    expect(result.code).toBe(1);
    expect(result.err).toContain("health.port: Invalid input: expected number, received string");
    expect(result.err).toContain("log.level: Invalid option");
  });

  it("usage errors exit 2", async () => {
    expect((await run(["check"])).code).toBe(2);
    expect((await run(["inspect", "x.json"])).code).toBe(2);
  });

  it("through the real binary: exit codes 0 and 1", { timeout: 60_000 }, () => {
    const bad = join(dir, "bad.json");
    writeFileSync(bad, "{ not json");
    const cli = (file: string) =>
      spawnSync(process.execPath, ["bin/kiosk-agent.mjs", "config", "check", file], { encoding: "utf8" });
    const ok = cli("docs/config.example.json");
    expect({ status: ok.status, stderr: ok.stderr }).toEqual({ status: 0, stderr: "" });
    const failed = cli(bad);
    expect({ status: failed.status, stderr: failed.stderr }).toEqual({
      status: 1,
      stderr: expect.stringMatching(/is not valid JSON \(line 1, column 3\)/),
    });
  });
});
