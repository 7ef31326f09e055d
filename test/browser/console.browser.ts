import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Page } from "playwright-core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CONSOLE_TOKEN, type ConsoleRig, startConsoleRig } from "../console/support.js";
import { job } from "../support/e2e.js";
import { findSecrets, secretsOf } from "../support/log-capture.js";
import { launchChromium } from "./chromium.js";

const ARTIFACTS = fileURLToPath(new URL("../../artifacts/", import.meta.url));

describe("the local console in headless Chromium", () => {
  let c: ConsoleRig;
  let browser: Awaited<ReturnType<typeof launchChromium>>;
  let page: Page;
  const problems: string[] = [];

  beforeEach(async () => {
    c = await startConsoleRig({ makeJob: () => job() });
    browser = await launchChromium();
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    // A CSP violation or a script error shows up here; the page must run clean.
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console: ${m.text()}`);
    });
    page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  });
  afterEach(async () => {
    await browser?.close();
    await c?.close();
  });

  const simLog = (text: string) => page.locator("#sim-log li", { hasText: text }).first().waitFor();
  const jobRow = (operationId: string, d1Status: string) =>
    page.locator(`#jobs tr[data-operation-id="${operationId}"][data-d1-status="${d1Status}"]`);

  it("inject card-jam, push a job, watch it end CARD_PROD_EXCEPTION live; screenshot", async () => {
    await c.rig.agent.ready();
    await page.goto(`${c.url}/?token=${CONSOLE_TOKEN}`);
    // The token went into an HttpOnly cookie and out of the address bar.
    expect(page.url()).toBe(`${c.url}/`);
    await page.locator('#live[data-state="connected"]').waitFor();
    let navigations = 0;
    page.on("framenavigated", () => navigations++);

    await expect.poll(() => page.locator("#station").textContent()).toBe("KIOSK-PS-101");
    await page.locator('#d1-state:text-is("up")').waitFor();

    // A good card first, so the page has a preview to show.
    await page.locator("#push-sample").click();
    await simLog("accepted");
    const good = c.sampleJobs[0] as { operationId: string };
    await jobRow(good.operationId, "CARD_PROD_DONE").waitFor();
    const front = page.locator("#preview-front");
    await front.waitFor({ state: "visible" });
    await page.waitForFunction(() => {
      const img = document.getElementById("preview-front") as HTMLImageElement | null;
      return img?.complete === true && img.naturalWidth === 1016;
    });

    // Inject the fault with the page's button, then push a job with the page's button.
    await page.locator('button[data-fault="card-jam"]').click();
    await simLog("fault card-jam: ok");
    expect(c.controls.injected().map((f) => f.name)).toEqual(["card-jam"]);
    await page.locator("#push-sample").click();
    await expect.poll(() => c.sampleJobs.length).toBe(2);
    const jammed = c.sampleJobs[1] as { operationId: string };

    const row = jobRow(jammed.operationId, "CARD_PROD_EXCEPTION");
    await row.waitFor();
    const rowText = (await row.textContent()) ?? "";
    expect(rowText).toContain("FAILED");
    expect(rowText).toContain("CARD_JAM");
    expect(rowText).toMatch(/\d{6}\*{6}\d{4}/);
    await page.locator("#errors tr", { hasText: "CARD_JAM" }).first().waitFor();
    // The printer shows the fault it last saw.
    await page.locator("#printer-details dd", { hasText: "CARD_JAM" }).first().waitFor();

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: `${ARTIFACTS}console-card-jam.png`, fullPage: true });

    expect(navigations).toBe(0); // every update arrived live, no reload
    const html = await page.content();
    const secrets = c.sampleJobs.flatMap((j) => secretsOf(j));
    expect(secrets.length).toBeGreaterThan(0);
    expect(findSecrets(html, secrets)).toEqual([]);
    expect(problems).toEqual([]);
  });

  it("without the token the page is refused", async () => {
    const answer = await page.goto(`${c.url}/`);
    expect(answer?.status()).toBe(401);
    expect(await page.content()).toContain("needs its token");
  });
});

describe("the console shows supplies and the day's card stock", () => {
  let c: ConsoleRig | undefined;
  let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
  afterEach(async () => {
    await browser?.close();
    await c?.close();
  });

  it("ribbon low, one stock's feeder empty, cleaning due: each a warning line; feeders and the stock report as tables", async () => {
    c = await startConsoleRig({
      makeJob: () => job(),
      rig: {
        config: {
          printer: {
            feeders: [
              { id: "1", stock: "DEBIT-CLASSIC" },
              { id: "2", stock: "CREDIT-GOLD" },
            ],
          },
        } as never,
        printer: { feeders: { "1": 50, "2": 0 }, ribbonPanels: 15, cleaningAdvisedAfterCards: 0 },
      },
    });
    await c.rig.agent.ready();
    c.rig.agent.store.stock.record({
      feeder: "1",
      stock: "DEBIT-CLASSIC",
      kind: "loaded",
      quantity: 50,
      operator: "t",
    });
    browser = await launchChromium();
    const page = browser.context.pages()[0] ?? (await browser.context.newPage());
    await page.goto(`${c.url}/?token=${CONSOLE_TOKEN}`);
    await page.locator('#live[data-state="connected"]').waitFor();
    // A card, so the page gets a fresh snapshot with the load and the issued card in it.
    await page.locator("#push-sample").click();
    await page.locator('#supply-warnings li[data-keyword="RIBBON_LOW"]').waitFor();
    await page.locator('#supply-warnings li[data-keyword="FEEDER_EMPTY"][data-feeder="2"]').waitFor();
    await page.locator('#supply-warnings li[data-keyword="CLEANING_ADVISED"]').waitFor();
    await page.locator('#feeder-rows tr[data-feeder="2"][data-empty="true"]').waitFor();
    const stockRow = page.locator("#stock-rows tr", { hasText: "DEBIT-CLASSIC" });
    await expect.poll(async () => (await stockRow.textContent()) ?? "").toMatch(/DEBIT-CLASSIC0501–0049/);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: `${ARTIFACTS}console-supplies.png`, fullPage: true });
  });
});
