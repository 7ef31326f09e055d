import { describe, expect, it } from "vitest";
import { makeSampleJob } from "../../../../agent/jobs/sample-jobs.js";
import { blankImage, getPixel, inkBox, sameImage } from "../../../../drivers/printer/card-image.js";
import { EVOLIS_PRINT_AREA } from "../../../../drivers/printer/evolis/panel.js";
import { dotsPerMm } from "../../../../drivers/printer/raster/geometry.js";
import {
  escapeXml,
  type PrintLine,
  RenderError,
  renderCardImage,
  renderCardImageAsync,
  renderCardImageFullCanvas,
} from "../../../../drivers/printer/raster/render.js";
import { TYPICAL_FRONT } from "./fixtures.js";

const MM_TOLERANCE = 1;
const AREA = EVOLIS_PRINT_AREA;
const DOTS_PER_MM = dotsPerMm(AREA.dpi);
const render = (lines: PrintLine[]) => renderCardImage(lines, AREA);
const BLANK = blankImage(AREA);

describe("renderCardImage", () => {
  it("puts a line's ink where the job says, in millimetres from the card's top-left corner", () => {
    // "H" has a flat foot on the baseline and a stem near its origin, so its box measures both.
    for (const probe of [
      { text: "HHHH", xMm: 10, yMm: 20, sizePt: 14 },
      { text: "H", xMm: 70, yMm: 45, sizePt: 8 },
      { text: "HE", xMm: 3, yMm: 8, sizePt: 10 },
    ]) {
      const image = render([probe]);
      expect([image.width, image.height, image.dpi]).toEqual([1016, 648, 300]);
      const box = inkBox(image);
      expect(box).toBeDefined();
      const leftMm = box!.x0 / DOTS_PER_MM;
      const baselineMm = (box!.y1 + 1) / DOTS_PER_MM;
      const capTopMm = box!.y0 / DOTS_PER_MM;
      expect(Math.abs(leftMm - probe.xMm)).toBeLessThan(MM_TOLERANCE);
      expect(leftMm).toBeGreaterThanOrEqual(probe.xMm);
      expect(Math.abs(baselineMm - probe.yMm)).toBeLessThan(MM_TOLERANCE);
      // DejaVu's cap height is 0.73 em.
      const capMm = probe.sizePt * (25.4 / 72) * 0.73;
      expect(Math.abs(baselineMm - capTopMm - capMm)).toBeLessThan(0.3);
    }
  });

  it("is deterministic", () => {
    expect(sameImage(render(TYPICAL_FRONT), render(TYPICAL_FRONT))).toBe(true);
  });

  it("returns a blank image for no lines or blank text", () => {
    expect(sameImage(render([]), BLANK)).toBe(true);
    expect(sameImage(render([{ text: "   ", xMm: 5, yMm: 5, sizePt: 10 }]), BLANK)).toBe(true);
  });

  it("escapes XML so that markup in a line is printed, not parsed", () => {
    expect(escapeXml(`<a href="x">&'</a>`)).toBe("&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;");
    const image = render([{ text: `</text><rect width="1016" height="648"/>&`, xMm: 5, yMm: 20, sizePt: 6 }]);
    const box = inkBox(image);
    expect(box).toBeDefined();
    // An injected full-card rect would have inked the top-left corner.
    expect(getPixel(image, 0, 0)).toBe(false);
    expect(box!.y0 / DOTS_PER_MM).toBeGreaterThan(10);
  });

  it("keeps runs of spaces as given", () => {
    const one = inkBox(render([{ text: "H H", xMm: 5, yMm: 20, sizePt: 10 }]))!;
    const three = inkBox(render([{ text: "H   H", xMm: 5, yMm: 20, sizePt: 10 }]))!;
    expect(three.x1 - one.x1).toBeGreaterThan(20);
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
        render([TYPICAL_FRONT[1]!, line]);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(RenderError);
      expect((caught as RenderError).code).toBe("BAD_PRINT_LINE");
      expect((caught as RenderError).message).toContain("print line 1");
      expect((caught as RenderError).message).not.toContain(secret);
    }
  });

  it("renders only the text band yet gives the full canvas's image dot for dot", async () => {
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
      const full = renderCardImageFullCanvas(lines, AREA);
      expect(sameImage(render(lines), full)).toBe(true);
      expect(sameImage(await renderCardImageAsync(lines, AREA), full)).toBe(true);
    }
  });

  it("off the event loop: refuses bad lines before scheduling anything, renders blank for no text", async () => {
    expect(() => renderCardImageAsync([{ text: "x", xMm: 5, yMm: 5, sizePt: -1 }], AREA)).toThrow(
      expect.objectContaining({ code: "BAD_PRINT_LINE" }),
    );
    expect(sameImage(await renderCardImageAsync([], AREA), BLANK)).toBe(true);
  });

  it("draws characters outside ASCII that the card font has", () => {
    expect(inkBox(render([{ text: "ÉÑØ €", xMm: 5, yMm: 20, sizePt: 10 }]))).toBeDefined();
  });
});
