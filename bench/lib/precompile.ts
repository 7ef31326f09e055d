import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const REPO = fileURLToPath(new URL("../../", import.meta.url));

/**
 * The experiment behind the start-up and memory proposals: the same TypeScript compiled ahead of
 * time into one ESM file (esbuild, npm packages left external), run by plain `node` without the tsx
 * loader. `import.meta.url` is pinned per source file so that files found relative to a module
 * (the card font, package.json) resolve as they do from source.
 *
 * esbuild is tsx's own dependency (node_modules/esbuild); undefined when it cannot be loaded.
 */
/** Native addons (and packages that load files next to themselves) stay outside a full bundle. */
const NATIVE = [
  "better-sqlite3",
  "@resvg/resvg-js",
  "@serialport/bindings-cpp",
  "node-hid",
  "@pokusew/pcsclite",
  "pino",
  "thread-stream",
  "esbuild",
  "playwright-core",
];

/**
 * `bundlePackages`: also inline the pure-JS npm packages (zod, ws, …), so start-up resolves and
 * reads a handful of files instead of hundreds.
 */
export async function precompile(
  entry: string,
  name: string,
  options: { bundlePackages?: boolean } = {},
): Promise<string | undefined> {
  let esbuild: typeof import("esbuild");
  try {
    esbuild = await import("esbuild");
  } catch {
    return undefined;
  }
  const outDir = join(REPO, "tmp", "bench-build");
  mkdirSync(outDir, { recursive: true });
  const outfile = join(outDir, `${name}.mjs`);
  await esbuild.build({
    entryPoints: [join(REPO, entry)],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    ...(options.bundlePackages ? { external: NATIVE } : { packages: "external" as const }),
    logLevel: "error",
    // Bundled CommonJS packages call require(): give the ESM bundle one.
    banner: {
      js: "import { createRequire as __benchRequire } from 'node:module'; const require = __benchRequire(import.meta.url);",
    },
    plugins: [
      {
        name: "pin-import-meta-url",
        setup(build) {
          build.onLoad({ filter: /\.ts$/ }, (args) => {
            const source = readFileSync(args.path, "utf8");
            return {
              contents: source.replaceAll("import.meta.url", JSON.stringify(pathToFileURL(args.path).href)),
              loader: "ts",
            };
          });
        },
      },
    ],
  });
  return outfile;
}
