import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

/**
 * Issue 14, finding 9: pino moves to a version without `fast-redact` (its advisory is flagged by
 * every scanner; pino 9.14 / 10 redact with `@pinojs/redact`), and runtime dependencies nothing
 * imports go (`serialport`, `@serialport/binding-mock`: the agent uses @serialport/stream and
 * bindings-cpp directly, the simulator its own binding).
 */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
  packages: Record<string, { version?: string; dependencies?: Record<string, string>; dev?: boolean }>;
};

/** Every runtime source file: what the bundle and the service load. */
function runtimeSources(): string {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.(ts|mjs|js)$/.test(name)) out.push(readFileSync(p, "utf8"));
    }
  };
  for (const dir of ["agent", "drivers", "simulator", "bin"]) walk(join(ROOT, dir));
  out.push(readFileSync(join(ROOT, "scripts", "build.ts"), "utf8"));
  return out.join("\n");
}

describe("dependencies", () => {
  it("no fast-redact anywhere in the installed tree; pino redacts with @pinojs/redact", () => {
    const names = Object.keys(lock.packages);
    expect(names.filter((n) => n.endsWith("node_modules/fast-redact"))).toEqual([]);
    const pino = lock.packages["node_modules/pino"]!;
    expect(Object.keys(pino.dependencies ?? {})).not.toContain("fast-redact");
    expect(Object.keys(pino.dependencies ?? {})).toContain("@pinojs/redact");
    expect(pkg.dependencies.pino).toBe(pino.version);
  });

  it("every runtime dependency is imported by runtime code; serialport and its mock binding are gone", () => {
    expect(pkg.dependencies).not.toHaveProperty("serialport");
    expect(pkg.dependencies).not.toHaveProperty("@serialport/binding-mock");
    expect(lock.packages).not.toHaveProperty("node_modules/serialport");
    const sources = runtimeSources();
    const unused = Object.keys(pkg.dependencies).filter(
      (name) => !sources.includes(`"${name}"`) && !sources.includes(`"${name}/`),
    );
    expect(unused).toEqual([]);
  });
});
