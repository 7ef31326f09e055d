import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

/**
 * `npm run test:browser`: the console in real headless Chromium (Debian's, through playwright-core).
 * Kept out of the unit run (which takes every *.test.ts under test/) because it needs the browser,
 * which global-setup.ts installs with apt when it is missing.
 */
export default defineConfig({
  root: fileURLToPath(new URL("../..", import.meta.url)),
  test: {
    include: ["test/browser/**/*.browser.ts"],
    globalSetup: ["test/browser/global-setup.ts"],
    // A cold Chromium start on a slow CI machine takes seconds; the waits inside are event-driven.
    testTimeout: 90_000,
    hookTimeout: 90_000,
    pool: "forks",
    reporters: ["default", "./test/support/summary-reporter.ts"],
  },
});
