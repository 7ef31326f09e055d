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
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      // V8's message may quote a slice of the file (a token, say): report the place, not the text.
      throw new ConfigError(
        "CONFIG_UNREADABLE",
        `config file ${file} is not valid JSON (${jsonErrorPlace(text, err as Error)})`,
      );
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new ConfigError("CONFIG_INVALID", `config file ${file} must hold a JSON object`);
    }
    raw = parsed as Record<string, unknown>;
  }
  const fromEnv = applyEnvOverrides(raw, env);
  return parseConfig(raw, fromEnv);
}

/**
 * Validates a configuration object. `fromEnv` maps dotted keys to the environment variable that
 * set them, so an error names the variable too.
 */
export function parseConfig(raw: unknown, fromEnv: ReadonlyMap<string, string> = new Map()): AgentConfig {
  const result = ConfigSchema.safeParse(raw);
  if (result.success) return result.data;
  const problems = describeIssues(result.error.issues, raw, fromEnv);
  throw new ConfigError("CONFIG_INVALID", `invalid configuration:\n  ${problems.join("\n  ")}`, problems);
}

function describeIssues(
  issues: z.core.$ZodIssue[],
  raw: unknown,
  fromEnv: ReadonlyMap<string, string>,
): string[] {
  return issues.map((i) => {
    const key = i.path.join(".") || "(root)";
    const source = fromEnv.get(key);
    const where = source ? `${key} (from ${source})` : key;
    // zod's messages name expected types, never the received value, so no secret can leak here.
    if (i.code === "invalid_type" && valueAt(raw, i.path) === undefined) {
      return `${where}: missing (required, ${i.expected === "object" ? "a section" : `a ${i.expected}`})`;
    }
    return `${where}: ${i.message}`;
  });
}

function valueAt(root: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let node = root;
  for (const key of path) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

/** "line 4, column 12" from V8's "… at position N" (or "line L column C"), never the text itself. */
function jsonErrorPlace(text: string, err: Error): string {
  const lc = /line (\d+) column (\d+)/.exec(err.message);
  if (lc) return `line ${lc[1]}, column ${lc[2]}`;
  const pos = /position (\d+)/.exec(err.message);
  if (pos) {
    const before = text.slice(0, Number(pos[1]));
    const line = before.split("\n").length;
    const column = before.length - before.lastIndexOf("\n");
    return `line ${line}, column ${column}`;
  }
  return text.trim() === "" ? "the file is empty" : "unexpected end or token";
}

/** Applies KIOSK_AGENT__* variables; returns dotted key → variable name for each key it set. */
function applyEnvOverrides(target: Record<string, unknown>, env: NodeJS.ProcessEnv): Map<string, string> {
  const applied = new Map<string, string>();
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
    node[path[path.length - 1]!] = coerce(value, leafType(path));
    applied.set(path.join("."), name);
  }
  return applied;
}

/**
 * Environment values are text; they become a number or a boolean only where the schema expects one
 * (a digit-only token stays a string). A value that does not fit stays text, and validation then
 * reports the key and the variable.
 */
function coerce(value: string, expected: string | undefined): unknown {
  if (expected === "boolean") {
    if (value === "true") return true;
    if (value === "false") return false;
    return value;
  }
  if (expected === "number" && /^-?\d+(\.\d+)?$/.test(value.trim())) return Number(value);
  return value;
}

/** The zod type name ("string", "number", "boolean", "enum", …) the schema expects at `path`. */
function leafType(path: string[]): string | undefined {
  let node: z.core.$ZodType | undefined = ConfigSchema;
  const unwrap = (t: z.core.$ZodType): z.core.$ZodType => {
    let cur = t;
    for (;;) {
      const def = cur._zod.def as { type: string; innerType?: z.core.$ZodType; in?: z.core.$ZodType };
      if (
        def.innerType &&
        ["default", "optional", "nullable", "prefault", "catch", "readonly"].includes(def.type)
      )
        cur = def.innerType;
      else if (def.type === "pipe" && def.in) cur = def.in;
      else return cur;
    }
  };
  for (const key of path) {
    if (!node) return undefined;
    const obj = unwrap(node)._zod.def as { type: string; shape?: Record<string, z.core.$ZodType> };
    node = obj.type === "object" ? obj.shape?.[key] : undefined;
  }
  return node ? unwrap(node)._zod.def.type : undefined;
}
