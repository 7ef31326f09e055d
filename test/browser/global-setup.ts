import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

/** Installs Debian's chromium with apt if it is missing (scripts/browser/ensure-chromium.sh). */
export default function setup(): void {
  const script = fileURLToPath(new URL("../../scripts/browser/ensure-chromium.sh", import.meta.url));
  execFileSync("bash", [script], { stdio: "inherit" });
}
