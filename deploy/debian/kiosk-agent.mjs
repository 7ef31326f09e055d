#!/usr/bin/node
// The `kiosk-agent` command as the Debian package installs it: /usr/lib/kiosk-agent/bin/kiosk-agent.mjs,
// /usr/bin/kiosk-agent links here, and the unit starts it (deploy/kiosk-agent.service). Copied into
// every package by scripts/package/stage.mjs, whichever ref the agent itself was built from.
//
// Unlike the checkout's bin/kiosk-agent.mjs it never looks at sources and has no tsx fallback: the
// package holds the bundle dist/kiosk-agent.mjs and the runtime node_modules, nothing else.
//  - `--version` prints the package's version and the git commit it was built from (build-info.json,
//    written at packaging time), without loading the agent;
//  - `run`, when the packaged agent has no schema check of its own (build-info.json schemaGuard
//    "launcher", e.g. 0.1.0), first refuses a store written by a newer agent (store-schema.mjs): on a
//    downgrade the older code would otherwise open it and write to it.
import { readFileSync } from "node:fs";

const root = new URL("../", import.meta.url);
const info = JSON.parse(readFileSync(new URL("build-info.json", root), "utf8"));
const [command, ...rest] = process.argv.slice(2);

let refused = false;
if (command === "--version" || command === "-V") {
  const built = info.dirty ? `${info.commit}, with uncommitted changes` : info.commit;
  process.stdout.write(`kiosk-agent ${info.version} (git ${built})\n`);
} else {
  if (command === "run" && info.schemaGuard === "launcher") {
    const { newerStoreRefusal } = await import("./store-schema.mjs");
    const refusal = newerStoreRefusal(rest, info);
    if (refusal) {
      process.stderr.write(`${refusal}\n`);
      process.exitCode = 1;
      refused = true;
    }
  }
  if (!refused) {
    process.setSourceMapsEnabled(true);
    await import(new URL("dist/kiosk-agent.mjs", root).href);
  }
}
