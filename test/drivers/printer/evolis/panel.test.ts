import { describe, expect, it } from "vitest";
import { blankImage, getPixel, sameImage, setPixel } from "../../../../drivers/printer/card-image.js";
import {
  EVOLIS_PRINT_AREA,
  imageFromPanel,
  PANEL_BYTES,
  panelFromImage,
} from "../../../../drivers/printer/evolis/panel.js";
import { randomBytes } from "../raster/fixtures.js";

/** Written from the documented mapping (line x, dot 647 − y), independently of the code under test. */
function dot(panel: Buffer, line: number, d: number): boolean {
  return (panel[line * 81 + (d >> 3)]! & (0x80 >> (d & 7))) !== 0;
}

describe("Evolis panel orientation (verified on the Windows driver's captures)", () => {
  it("line 0 is the card's left edge, dot 0 its bottom edge", () => {
    const image = blankImage(EVOLIS_PRINT_AREA);
    setPixel(image, 0, 0); // top-left corner as the cardholder sees it
    setPixel(image, 1015, 647); // bottom-right corner
    setPixel(image, 100, 7);
    const panel = panelFromImage(image);
    expect(panel.length).toBe(PANEL_BYTES);
    expect(dot(panel, 0, 647)).toBe(true);
    expect(dot(panel, 1015, 0)).toBe(true);
    expect(dot(panel, 100, 640)).toBe(true);
    expect(panel.reduce((n, b) => n + (b ? 1 : 0), 0)).toBe(3);
  });

  it("round-trips image → panel → image and panel → image → panel", () => {
    const panel = randomBytes(PANEL_BYTES, 7, 0.3);
    expect(panelFromImage(imageFromPanel(panel)).equals(panel)).toBe(true);
    const image = imageFromPanel(panel);
    expect(sameImage(imageFromPanel(panelFromImage(image)), image)).toBe(true);
    expect(getPixel(image, 3, 647)).toBe(dot(panel, 3, 0));
  });

  it("refuses an image of another size", () => {
    expect(() => panelFromImage(blankImage({ width: 1012, height: 636, dpi: 300 }))).toThrow(RangeError);
  });
});
