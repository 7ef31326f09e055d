import { readFileSync } from "node:fs";
import type { z } from "zod";
import { CodedError } from "../util/errors.js";
import { type AgentConfig, ConfigSchema } from "./schema.js";

/** Environment variables that override file keys: KIOSK_AGENT__D1__TOKEN sets d1.token. */
export const ENV_PREFIX = "KIOSK_AGENT__";

export class ConfigError extends CodedError<"CONFIG_UNREADABLE" | "CONFIG_INVALID"> {
  constructor(
    code: "CONFIG_UNREADABLE" | "CONFIG_INVALID",
    message: string,
    readonly problems: string[] = [],
  ) {
    super(code, message);
  }
}

/** Reads a JSON config file, applies environment overrides, validates. Errors name each bad key. */
export function loadConfig(file: string | undefined, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  let raw: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new ConfigError(
        "CONFIG_UNREADABLE",
        `cannot read config file ${file}: ${(err as Error).message}`,
      );
    }
    try {
      raw = JSON.parse(text) as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError(
        "CONFIG_UNREADABLE",
        `config file ${file} is not valid JSON: ${(err as Error).message}`,
      );
    }
  }
  applyEnvOverrides(raw, env);
  return parseConfig(raw);
}

export function parseConfig(raw: unknown): AgentConfig {
  const result = ConfigSchema.safeParse(raw);
  if (result.success) return result.data;
  const problems = describeIssues(result.error.issues);
  throw new ConfigError("CONFIG_INVALID", `invalid configuration:\n  ${problems.join("\n  ")}`, problems);
}

function describeIssues(issues: z.core.$ZodIssue[]): string[] {
  return issues.map((i) => {
    const key = i.path.join(".") || "(root)";
    // zod's messages name expected types, never the received value, so no secret can leak here.
    return `${key}: ${i.message}`;
  });
}

function applyEnvOverrides(target: Record<string, unknown>, env: NodeJS.ProcessEnv): void {
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || value === undefined) continue;
    const path = name
      .slice(ENV_PREFIX.length)
      .split("__")
      .map((p) => p.toLowerCase().replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase()));
    let node = target;
    for (const key of path.slice(0, -1)) {
      if (typeof node[key] !== "object" || node[key] === null) node[key] = {};
      node = node[key] as Record<string, unknown>;
    }
    node[path[path.length - 1]!] = coerce(value);
  }
}

function coerce(value: string): unknown {
  if (value === "true") return true;
  if (value === "false") return false;
  if (/^-?\d+(\.\d+)?$/.test(value)) return Number(value);
  return value;
}
