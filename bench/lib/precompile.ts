import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "../../scripts/build.js";

const REPO = fileURLToPath(new URL("../../", import.meta.url));

/**
 * A bench entry (e.g. bench/agent-child.ts) compiled the way the product is (scripts/build.ts, one
 * build configuration: esbuild bundle, native addons external, `import.meta.url` relocated), into
 * tmp/bench-build/NAME.mjs, to run under plain `node` without the tsx loader.
 *
 * `bundlePackages` (default true, as shipped): inline the pure-JS npm packages (zod, ws, …) so the
 * start resolves and reads a handful of files instead of hundreds; false leaves every npm package
 * external (the experiment that showed why inlining matters: ~480–550 ms instead of ~370).
 *
 * Undefined when esbuild (a devDependency) cannot be loaded.
 */
export async function precompile(
  entry: string,
  name: string,
  options: { bundlePackages?: boolean } = {},
): Promise<string | undefined> {
  try {
    await import("esbuild");
  } catch {
    return undefined;
  }
  return build({
    entry: join(REPO, entry),
    outfile: join(REPO, "tmp", "bench-build", `${name}.mjs`),
    bundlePackages: options.bundlePackages ?? true,
    sourcemap: false,
  });
}
