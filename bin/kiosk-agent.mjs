#!/usr/bin/env node
// The `kiosk-agent` command in a checkout, and what a from-source install's unit starts (the Debian
// package has its own launcher, deploy/debian/kiosk-agent.mjs).
//
// What it runs:
//  - dist/kiosk-agent.mjs, the agent bundled by `npm run build` (scripts/build.ts), under plain node,
//    when that bundle is at least as new as every source it is built from (entry-freshness.mjs: a
//    stat walk of agent/, drivers/, simulator/ and the package files, about a millisecond). Why:
//    under the tsx loader a start takes ~0.9 s and ~30 MB more (the loader's own thread and V8
//    isolate, hundreds of files transformed and resolved); the bundle is ready in well under 0.5 s
//    (docs/performance.md, 5 and 7). Source maps are switched on first, so stack traces name the .ts.
//  - otherwise the TypeScript sources through the tsx loader, as before: a checkout edited or pulled
//    since its last build runs what is in the tree, never an out-of-date build. One line on stderr
//    says so (a deployed kiosk shows it in the journal). KIOSK_AGENT_FROM_SOURCE=1 picks the sources
//    without a word, e.g. while editing or debugging with the .ts under the debugger.
//
// The notice is left out under vitest (VITEST is set in its workers and the processes they spawn):
// tests spawn this file and require an empty stderr while the sources are being edited, i.e. while
// the bundle is stale or absent by design. Nothing else about the choice differs under test.
import { fileURLToPath } from "node:url";
import { bundleFreshness } from "./entry-freshness.mjs";

const fromSource = process.env.KIOSK_AGENT_FROM_SOURCE === "1";
const bundle = fromSource ? undefined : bundleFreshness(fileURLToPath(new URL("../", import.meta.url)));

if (bundle?.state === "fresh") {
  process.setSourceMapsEnabled(true);
  await import(new URL("../dist/kiosk-agent.mjs", import.meta.url).href);
} else {
  if (bundle && !process.env.VITEST) {
    process.stderr.write(
      `kiosk-agent: ${bundle.reason}; running the TypeScript sources under tsx (slower start, more memory). ` +
        "Run `npm run build`.\n",
    );
  }
  const { register } = await import("tsx/esm/api");
  register();
  await import("../agent/cli/main.ts");
}
