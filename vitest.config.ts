import { defineConfig } from "vitest/config";

/**
 * One run, two projects, one closing "N passed, N failed" line for CI:
 * - unit: every test/**\/*.test.ts (codecs, drivers, store, and the whole product on loopback);
 * - browser: the console in real headless Chromium (global-setup installs Debian's chromium if missing).
 */
export default defineConfig({
  test: {
    reporters: ["default", "./test/support/summary-reporter.ts"],
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/**/*.test.ts"],
          // Every test drives real sockets, sqlite files and serial streams on loopback; a hung one
          // must fail, not stall CI.
          testTimeout: 20_000,
          hookTimeout: 20_000,
          pool: "forks",
        },
      },
      {
        test: {
          name: "browser",
          include: ["test/browser/**/*.browser.ts"],
          globalSetup: ["test/browser/global-setup.ts"],
          // A cold Chromium start on a slow CI machine takes seconds; the waits inside are event-driven.
          testTimeout: 90_000,
          hookTimeout: 90_000,
          pool: "forks",
        },
      },
    ],
  },
});
