import { readFileSync } from "node:fs";

/** The agent version D1 sees in hello: package.json's, read once. */
export const AGENT_VERSION: string = (
  JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }
).version;
