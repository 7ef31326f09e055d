/**
 * `npm run build`: the shipped form of the agent, `dist/kiosk-agent.mjs` (+ `.map`), one ESM file
 * that plain `node` runs without the tsx loader (bin/kiosk-agent.mjs picks it while it is newer than
 * the sources). Why: the tsx loader costs ~0.5 s of start-up and ~30 MB (its own thread and V8
 * isolate), and resolving hundreds of package files costs the rest (docs/performance.md, 5 and 7).
 *
 * One build configuration for the product and the bench (bench/lib/precompile.ts builds its entry
 * with `buildOptions()` too):
 *  - bundle, platform node, ESM, target node20;
 *  - pure-JS npm packages (zod, ws, jose, prom-client, pngjs, serialport's JS…) are inlined, so the
 *    start reads one file instead of resolving and reading hundreds;
 *  - EXTERNAL packages stay imports, resolved from node_modules at run time: native addons (they find
 *    their `.node` next to themselves) and packages that load files or threads by path;
 *  - a `require` for the inlined CommonJS (ESM output has none);
 *  - `import.meta.url` of every source file rewritten to that file's own URL *relative to the
 *    bundle* (`new URL("../agent/version.ts", import.meta.url).href`), so files found next to a module
 *    (package.json, assets/fonts, agent/console/page.html, simulator/pty/pty_bridge.py) resolve as
 *    from source, and a moved or copied checkout still finds them (no build machine path inside);
 *  - a linked source map (`//# sourceMappingURL=kiosk-agent.mjs.map`, sources relative, the agent's
 *    own files only: ownSourcesOnly()): bin enables source maps, so stack traces name the .ts files
 *    and lines;
 *  - written by rename (build()), so a process starting during a build never reads half a bundle.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { BuildOptions, Plugin } from "esbuild";

export const REPO = fileURLToPath(new URL("../", import.meta.url));
export const ENTRY = join(REPO, "agent", "cli", "main.ts");
export const OUTFILE = join(REPO, "dist", "kiosk-agent.mjs");

/**
 * Left out of the bundle, imported from node_modules at run time:
 *  - native addons, which load their compiled `.node` relative to their own files: better-sqlite3,
 *    @resvg/resvg-js, @serialport/bindings-cpp, node-hid, @pokusew/pcsclite;
 *  (pino is inlined: the agent logs through pino.destination, never a transport, which would start
 *  a worker thread from a file path inside the package; inlined, it loads ~30 ms faster);
 *  - tools that are never part of the agent's run but must not be inlined if a path reaches them:
 *    esbuild (a native binary), playwright-core (browser test), tsx (a loader, hooks by path).
 */
export const EXTERNAL = [
  "better-sqlite3",
  "@resvg/resvg-js",
  "@serialport/bindings-cpp",
  "node-hid",
  "@pokusew/pcsclite",
  "esbuild",
  "playwright-core",
  "tsx",
];

/** Rewrites `import.meta.url` in each source file to its own URL relative to the bundle's directory. */
export function relocatableImportMetaUrl(outDir: string): Plugin {
  return {
    name: "relocatable-import-meta-url",
    setup(build) {
      build.onLoad({ filter: /\.[cm]?ts$/ }, (args) => {
        const source = readFileSync(args.path, "utf8");
        if (!source.includes("import.meta.url")) return { contents: source, loader: "ts" };
        // A URL path is "/"-separated whatever the platform; relative() gives "../agent/x.ts".
        const fromBundle = relative(outDir, args.path).split(sep).join("/");
        const own = `new URL(${JSON.stringify(fromBundle)}, import.meta.url).href`;
        return { contents: source.replaceAll("import.meta.url", own), loader: "ts" };
      });
    },
  };
}

export interface BuildConfig {
  /** Absolute path of the TypeScript entry. */
  entry: string;
  /**
   * Absolute path of the `.mjs` to write. The external packages are imported from there at run time,
   * so a node_modules must lie above it (the repository's, for dist/).
   */
  outfile: string;
  /** Inline the pure-JS npm packages (default true); false leaves every package external. */
  bundlePackages?: boolean;
  /** Write a linked source map next to the output (default true). */
  sourcemap?: boolean;
}

export function buildOptions(config: BuildConfig): BuildOptions {
  const bundlePackages = config.bundlePackages ?? true;
  return {
    entryPoints: [config.entry],
    outfile: config.outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    ...(bundlePackages ? { external: EXTERNAL } : { packages: "external" as const }),
    sourcemap: (config.sourcemap ?? true) ? "linked" : false,
    // Sources are not embedded: the map names the .ts files (relative to dist/) and lines, which is
    // what a stack trace needs. build() then keeps only the mappings into the agent's own files.
    sourcesContent: false,
    logLevel: "warning",
    // Inlined CommonJS packages call require(): give the ESM bundle one, resolving from dist/.
    banner: {
      js: 'import { createRequire as __kioskCreateRequire } from "node:module";\nconst require = __kioskCreateRequire(import.meta.url);',
    },
    plugins: [relocatableImportMetaUrl(dirname(config.outfile))],
  };
}

/**
 * Builds with esbuild (a devDependency); returns the output file. Each output file replaces the old
 * one by a rename, the map first: a process starting meanwhile reads the old bundle or the new one,
 * never half of one.
 */
export async function build(config: BuildConfig): Promise<string> {
  const esbuild = await import("esbuild");
  const result = await esbuild.build({ ...buildOptions(config), write: false });
  const files = [...result.outputFiles].sort(
    (a, b) => Number(b.path.endsWith(".map")) - Number(a.path.endsWith(".map")),
  );
  mkdirSync(dirname(config.outfile), { recursive: true });
  for (const file of files) {
    const temp = `${file.path}.${process.pid}.tmp`;
    writeFileSync(
      temp,
      file.path.endsWith(".map") ? JSON.stringify(ownSourcesOnly(JSON.parse(file.text))) : file.contents,
    );
    renameSync(temp, file.path);
  }
  return config.outfile;
}

interface SourceMapV3 {
  version: 3;
  sources: string[];
  names: string[];
  mappings: string;
  [key: string]: unknown;
}

/**
 * The map without the mappings into node_modules: stack frames in the agent, drivers and simulator
 * name their .ts files; frames inside an inlined package keep the bundle's line (each package's code
 * sits under a `// node_modules/…` comment there). Why: Node decodes the whole map the first time a
 * stack through the bundle is formatted (a blocking ~145 ms for all 292 sources, most of it the
 * packages'); the agent's own files are a fraction of that.
 */
export function ownSourcesOnly(map: SourceMapV3): SourceMapV3 {
  const keep = map.sources.map((source) => !/(^|\/)node_modules\//.test(source));
  const newIndex: number[] = [];
  const sources: string[] = [];
  map.sources.forEach((source, i) => {
    if (!keep[i]) return;
    newIndex[i] = sources.length;
    sources.push(source);
  });
  // VLQ fields are deltas: source index, line, column and name run on across the whole file, the
  // generated column restarts on every line. Decode to absolute values, keep, re-encode the deltas.
  const at = [0, 0, 0, 0]; // source, line, column, name as read
  const written = [0, 0, 0, 0]; // the same as last written
  // Whether the last segment written maps somewhere: a position after it, in a package's code, would
  // otherwise be looked up as that mapping (Node takes the nearest mapping before a position).
  let mapped = false;
  const lines = map.mappings.split(";").map((line) => {
    let column = 0;
    let writtenColumn = 0;
    const out: string[] = [];
    for (const segment of line.split(",")) {
      if (segment === "") continue;
      const [columnDelta = 0, ...rest] = vlqDecode(segment);
      column += columnDelta;
      rest.forEach((delta, f) => {
        at[f] = (at[f] ?? 0) + delta;
      });
      const source = at[0] ?? 0;
      if (rest.length >= 3 && keep[source]) {
        const absolute = [newIndex[source] ?? 0, ...at.slice(1, rest.length)];
        const deltas = [column - writtenColumn];
        absolute.forEach((value, f) => {
          deltas.push(value - (written[f] ?? 0));
          written[f] = value;
        });
        out.push(vlqEncode(deltas));
        writtenColumn = column;
        mapped = true;
      } else if (mapped) {
        // From here on the code is not the agent's: a one-field segment ends the previous mapping.
        out.push(vlqEncode([column - writtenColumn]));
        writtenColumn = column;
        mapped = false;
      }
    }
    return out.join(",");
  });
  return { ...map, sources, mappings: lines.join(";") };
}

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

function vlqDecode(segment: string): number[] {
  const values: number[] = [];
  let value = 0;
  let shift = 0;
  for (const char of segment) {
    const digit = BASE64.indexOf(char);
    value += (digit & 31) << shift;
    if (digit & 32) {
      shift += 5;
      continue;
    }
    values.push(value & 1 ? -(value >>> 1) : value >>> 1);
    value = 0;
    shift = 0;
  }
  return values;
}

function vlqEncode(values: number[]): string {
  let text = "";
  for (const v of values) {
    let rest = v < 0 ? (-v << 1) | 1 : v << 1;
    do {
      let digit = rest & 31;
      rest >>>= 5;
      if (rest > 0) digit |= 32;
      text += BASE64[digit];
    } while (rest > 0);
  }
  return text;
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  const started = performance.now();
  const out = await build({ entry: ENTRY, outfile: OUTFILE });
  console.log(`build: ${relative(REPO, out)} in ${Math.round(performance.now() - started)} ms`);
}
