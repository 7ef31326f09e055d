import { describe, expect, it } from "vitest";
import { makeSampleJob } from "../../../../agent/jobs/sample-jobs.js";
import {
  BYTES_PER_LINE,
  DOTS_PER_LINE,
  DOTS_PER_MM,
  getDot,
  LINES,
  PANEL_BYTES,
  rotatePanel180,
} from "../../../../drivers/printer/raster/geometry.js";
import {
  escapeXml,
  landscapeToPanel,
  type PrintLine,
  panelToLandscape,
  RenderError,
  renderLandscape,
  renderPanel,
  renderPanelAsync,
} from "../../../../drivers/printer/raster/render.js";
import { inkBox, randomPanel, setDot, TYPICAL_FRONT } from "./fixtures.js";

const MM_TOLERANCE = 1;

describe("panel geometry", () => {
  it("has the printer's panel size", () => {
    expect(BYTES_PER_LINE * 8).toBe(DOTS_PER_LINE);
    expect(BYTES_PER_LINE * LINES).toBe(PANEL_BYTES);
    expect(DOTS_PER_MM).toBeCloseTo(11.811, 3);
  });

  it("turns a panel half a turn", () => {
    const panel = Buffer.alloc(PANEL_BYTES);
    setDot(panel, 3, 10);
    const turned = rotatePanel180(panel);
    expect(getDot(turned, LINES - 1 - 3, DOTS_PER_LINE - 1 - 10)).toBe(true);
    expect(inkBox(turned)).toEqual({ minLine: 1012, maxLine: 1012, minDot: 637, maxDot: 637 });
    const random = randomPanel(5, 0.3);
    expect(rotatePanel180(rotatePanel180(random)).equals(random)).toBe(true);
  });
});

describe("renderPanel", () => {
  it("puts a line's ink where the job says, in card millimetres", () => {
    // "H" has a flat foot on the baseline and a stem near its origin, so its box measures both.
    for (const probe of [
      { text: "HHHH", xMm: 10, yMm: 20, sizePt: 14 },
      { text: "H", xMm: 70, yMm: 45, sizePt: 8 },
      { text: "HE", xMm: 3, yMm: 8, sizePt: 10 },
    ]) {
      const panel = renderPanel([probe]);
      expect(panel.length).toBe(PANEL_BYTES);
      const box = inkBox(panel);
      expect(box).not.toBeNull();
      // Lines run along the long edge from the left, dots along the short edge from the top.
      const leftMm = box!.minLine / DOTS_PER_MM;
      const baselineMm = (box!.maxDot + 1) / DOTS_PER_MM;
      const capTopMm = box!.minDot / DOTS_PER_MM;
      expect(Math.abs(leftMm - probe.xMm)).toBeLessThan(MM_TOLERANCE);
      expect(leftMm).toBeGreaterThanOrEqual(probe.xMm);
      expect(Math.abs(baselineMm - probe.yMm)).toBeLessThan(MM_TOLERANCE);
      // DejaVu's cap height is 0.73 em.
      const capMm = probe.sizePt * (25.4 / 72) * 0.73;
      expect(Math.abs(baselineMm - capTopMm - capMm)).toBeLessThan(0.3);
    }
  });

  it("is deterministic", () => {
    expect(renderPanel(TYPICAL_FRONT).equals(renderPanel(TYPICAL_FRONT))).toBe(true);
  });

  it("returns a blank panel for no lines or blank text", () => {
    expect(renderPanel([]).equals(Buffer.alloc(PANEL_BYTES))).toBe(true);
    expect(renderPanel([{ text: "   ", xMm: 5, yMm: 5, sizePt: 10 }]).equals(Buffer.alloc(PANEL_BYTES))).toBe(
      true,
    );
  });

  it("escapes XML so that markup in a line is printed, not parsed", () => {
    expect(escapeXml(`<a href="x">&'</a>`)).toBe("&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;");
    const panel = renderPanel([
      { text: `</text><rect width="1016" height="648"/>&`, xMm: 5, yMm: 20, sizePt: 6 },
    ]);
    const box = inkBox(panel);
    expect(box).not.toBeNull();
    // An injected full-card rect would have inked the top-left corner.
    expect(getDot(panel, 0, 0)).toBe(false);
    expect(box!.minDot / DOTS_PER_MM).toBeGreaterThan(10);
  });

  it("keeps runs of spaces as given", () => {
    const one = inkBox(renderPanel([{ text: "H H", xMm: 5, yMm: 20, sizePt: 10 }]))!;
    const three = inkBox(renderPanel([{ text: "H   H", xMm: 5, yMm: 20, sizePt: 10 }]))!;
    expect(three.maxLine - one.maxLine).toBeGreaterThan(20);
  });

  it("refuses bad lines with a coded error that does not echo the text", () => {
    const secret = "5266092201416174";
    const bad = [
      { text: secret, xMm: Number.NaN, yMm: 5, sizePt: 10 },
      { text: secret, xMm: 5, yMm: Number.POSITIVE_INFINITY, sizePt: 10 },
      { text: secret, xMm: 5, yMm: 5, sizePt: 0 },
      { text: `${secret}\u0001`, xMm: 5, yMm: 5, sizePt: 10 },
      { text: `${secret}\uD800`, xMm: 5, yMm: 5, sizePt: 10 },
    ];
    for (const line of bad) {
      let caught: unknown;
      try {
        renderPanel([TYPICAL_FRONT[1]!, line]);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(RenderError);
      expect((caught as RenderError).code).toBe("BAD_PRINT_LINE");
      expect((caught as RenderError).message).toContain("print line 1");
      expect((caught as RenderError).message).not.toContain(secret);
    }
  });

  it("renders only the text band yet gives the full canvas's panel dot for dot", async () => {
    // Sample jobs both sides, plus lines at the card's edges, accents above caps, descenders, and
    // sizes from tiny to headline: the band cut must never clip a glyph or move resvg's sampling.
    const cases: PrintLine[][] = [];
    for (let i = 0; i < 12; i++) {
      const job = makeSampleJob(i);
      const print = job.productionData.print!;
      cases.push([...print.front], [...print.back]);
    }
    cases.push(
      [{ text: "ÂÊÎÔÛ ÅÇ gjpqy", xMm: 4.3, yMm: 3.1, sizePt: 18 }],
      [{ text: "gjpqy ÉÑ", xMm: 80.7, yMm: 53.9, sizePt: 12 }],
      [{ text: "Ǻǻ ŚŹ ʘ ∫ √ ¶ § ₣ ₤", xMm: 10, yMm: 30, sizePt: 5.5 }],
      [
        { text: "TOP", xMm: 2, yMm: 6.25, sizePt: 7 },
        { text: "BOTTOM", xMm: 50, yMm: 50.123, sizePt: 16.5 },
      ],
    );
    for (const lines of cases) {
      const full = landscapeToPanel(renderLandscape(lines));
      expect(renderPanel(lines).equals(full)).toBe(true);
      expect((await renderPanelAsync(lines)).equals(full)).toBe(true);
    }
  });

  it("off the event loop: refuses bad lines before scheduling anything, renders blank for no text", async () => {
    expect(() => renderPanelAsync([{ text: "x", xMm: 5, yMm: 5, sizePt: -1 }])).toThrow(
      expect.objectContaining({ code: "BAD_PRINT_LINE" }),
    );
    expect((await renderPanelAsync([])).equals(Buffer.alloc(PANEL_BYTES))).toBe(true);
  });

  it("draws characters outside ASCII that the card font has", () => {
    expect(inkBox(renderPanel([{ text: "ÉÑØ €", xMm: 5, yMm: 20, sizePt: 10 }]))).not.toBeNull();
  });
});

describe("landscape conversion", () => {
  it("is the transpose of the panel", () => {
    const panel = Buffer.alloc(PANEL_BYTES);
    setDot(panel, 100, 7);
    setDot(panel, 1015, 647);
    const land = panelToLandscape(panel);
    expect(land.width).toBe(LINES);
    expect(land.height).toBe(DOTS_PER_LINE);
    expect(land.ink.reduce((a, b) => a + b, 0)).toBe(2);
    expect(land.ink[7 * LINES + 100]).toBe(1);
    expect(land.ink[647 * LINES + 1015]).toBe(1);
  });

  it("round-trips panel → landscape → panel", () => {
    const panel = randomPanel(11, 0.4);
    expect(landscapeToPanel(panelToLandscape(panel)).equals(panel)).toBe(true);
    const land = renderLandscape(TYPICAL_FRONT);
    expect(Buffer.from(panelToLandscape(landscapeToPanel(land)).ink).equals(land.ink)).toBe(true);
  });
});
