import { PNG } from "pngjs";
import { describe, expect, it } from "vitest";
import { blankImage, sameImage, setPixel } from "../../../../drivers/printer/card-image.js";
import { EVOLIS_PRINT_AREA } from "../../../../drivers/printer/evolis/panel.js";
import { renderCardImage } from "../../../../drivers/printer/raster/render.js";
import {
  cardPreviewPng,
  imageToPng,
  PREVIEW_GAP,
  pngToImage,
} from "../../../../simulator/printer/preview.js";
import { TYPICAL_BACK, TYPICAL_FRONT } from "./fixtures.js";

function pixel(png: PNG, x: number, y: number): [number, number, number, number] {
  const p = (y * png.width + x) * 4;
  return [png.data[p]!, png.data[p + 1]!, png.data[p + 2]!, png.data[p + 3]!];
}

const BLACK = [0, 0, 0, 255];
const WHITE = [255, 255, 255, 255];
const AREA = EVOLIS_PRINT_AREA;

describe("preview PNGs", () => {
  it("draws a side as the cardholder sees it, black ink on white", () => {
    const image = blankImage(AREA);
    setPixel(image, 40, 600); // near the bottom-left of the card
    const png = PNG.sync.read(imageToPng(image));
    expect([png.width, png.height]).toEqual([1016, 648]);
    expect(pixel(png, 40, 600)).toEqual(BLACK);
    expect(pixel(png, 600, 40)).toEqual(WHITE);
    expect(pixel(png, 0, 0)).toEqual(WHITE);
    expect(sameImage(pngToImage(imageToPng(image), 300), image)).toBe(true);
  });

  it("stacks front over back with a gap", () => {
    const front = blankImage(AREA);
    const back = blankImage(AREA);
    setPixel(front, 10, 20);
    setPixel(back, 30, 40);
    const png = PNG.sync.read(cardPreviewPng(AREA, front, back));
    expect(png.width).toBe(1016);
    expect(png.height).toBe(2 * 648 + PREVIEW_GAP);
    expect(pixel(png, 10, 20)).toEqual(BLACK);
    expect(pixel(png, 30, 648 + PREVIEW_GAP + 40)).toEqual(BLACK);
    expect(pixel(png, 30, 40)).toEqual(WHITE);
    expect(pixel(png, 500, 648 + PREVIEW_GAP / 2)).not.toEqual(WHITE);
  });

  it("draws a missing side blank and renders a real card", () => {
    const empty = PNG.sync.read(cardPreviewPng(AREA));
    expect(empty.height).toBe(2 * 648 + PREVIEW_GAP);
    const card = PNG.sync.read(
      cardPreviewPng(AREA, renderCardImage(TYPICAL_FRONT, AREA), renderCardImage(TYPICAL_BACK, AREA)),
    );
    let black = 0;
    for (let i = 0; i < card.data.length; i += 4) if (card.data[i] === 0) black++;
    expect(black).toBeGreaterThan(1000);
  });
});
