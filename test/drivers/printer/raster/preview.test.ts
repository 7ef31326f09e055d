import { PNG } from "pngjs";
import { describe, expect, it } from "vitest";
import { DOTS_PER_LINE, LINES, PANEL_BYTES } from "../../../../drivers/printer/raster/geometry.js";
import { renderPanel } from "../../../../drivers/printer/raster/render.js";
import { cardPreviewPng, PREVIEW_GAP, panelToPng } from "../../../../simulator/printer/preview.js";
import { setDot, TYPICAL_BACK, TYPICAL_FRONT } from "./fixtures.js";

function pixel(png: PNG, x: number, y: number): [number, number, number, number] {
  const p = (y * png.width + x) * 4;
  return [png.data[p]!, png.data[p + 1]!, png.data[p + 2]!, png.data[p + 3]!];
}

const BLACK = [0, 0, 0, 255];
const WHITE = [255, 255, 255, 255];

describe("preview PNGs", () => {
  it("draws a panel landscape, black ink on white", () => {
    const panel = Buffer.alloc(PANEL_BYTES);
    setDot(panel, 40, 600); // near the bottom-left of the card
    const png = PNG.sync.read(panelToPng(panel));
    expect(png.width).toBe(LINES);
    expect(png.height).toBe(DOTS_PER_LINE);
    expect(pixel(png, 40, 600)).toEqual(BLACK);
    expect(pixel(png, 600, 40)).toEqual(WHITE);
    expect(pixel(png, 0, 0)).toEqual(WHITE);
  });

  it("stacks front over back with a gap", () => {
    const front = Buffer.alloc(PANEL_BYTES);
    const back = Buffer.alloc(PANEL_BYTES);
    setDot(front, 10, 20);
    setDot(back, 30, 40);
    const png = PNG.sync.read(cardPreviewPng(front, back));
    expect(png.width).toBe(LINES);
    expect(png.height).toBe(2 * DOTS_PER_LINE + PREVIEW_GAP);
    expect(pixel(png, 10, 20)).toEqual(BLACK);
    expect(pixel(png, 30, DOTS_PER_LINE + PREVIEW_GAP + 40)).toEqual(BLACK);
    expect(pixel(png, 30, 40)).toEqual(WHITE);
    expect(pixel(png, 500, DOTS_PER_LINE + PREVIEW_GAP / 2)).not.toEqual(WHITE);
  });

  it("draws a missing side blank and renders a real card", () => {
    const empty = PNG.sync.read(cardPreviewPng());
    expect(empty.height).toBe(2 * DOTS_PER_LINE + PREVIEW_GAP);
    const card = PNG.sync.read(cardPreviewPng(renderPanel(TYPICAL_FRONT), renderPanel(TYPICAL_BACK)));
    let black = 0;
    for (let i = 0; i < card.data.length; i += 4) if (card.data[i] === 0) black++;
    expect(black).toBeGreaterThan(1000);
  });
});
