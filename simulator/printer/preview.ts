/**
 * PNG previews of printed panels, for technicians looking at the simulator: what the head would have
 * put on the card, landscape and upright as the cardholder sees each side.
 */
import { PNG } from "pngjs";
import { LANDSCAPE_HEIGHT, LANDSCAPE_WIDTH } from "../../drivers/printer/raster/geometry.js";
import { type LandscapeBitmap, panelToLandscape } from "../../drivers/printer/raster/render.js";

/** Between the stacked sides, in pixels (dots). */
export const PREVIEW_GAP = 24;
const GAP_GREY = 0xc8;

export function panelToPng(raw: Buffer): Buffer {
  const png = new PNG({ width: LANDSCAPE_WIDTH, height: LANDSCAPE_HEIGHT });
  png.data.fill(0xff);
  paint(png, panelToLandscape(raw), 0);
  return PNG.sync.write(png);
}

/**
 * Front above back. A side that was not printed is drawn blank so the picture always has the same
 * size and the back never moves up into the front's place.
 */
export function cardPreviewPng(front?: Buffer, back?: Buffer): Buffer {
  const height = LANDSCAPE_HEIGHT * 2 + PREVIEW_GAP;
  const png = new PNG({ width: LANDSCAPE_WIDTH, height });
  png.data.fill(0xff);
  // A grey gap makes the two white cards readable as two cards.
  for (
    let p = LANDSCAPE_HEIGHT * LANDSCAPE_WIDTH * 4;
    p < (LANDSCAPE_HEIGHT + PREVIEW_GAP) * LANDSCAPE_WIDTH * 4;
    p += 4
  ) {
    png.data[p] = GAP_GREY;
    png.data[p + 1] = GAP_GREY;
    png.data[p + 2] = GAP_GREY;
  }
  if (front) paint(png, panelToLandscape(front), 0);
  if (back) paint(png, panelToLandscape(back), LANDSCAPE_HEIGHT + PREVIEW_GAP);
  return PNG.sync.write(png);
}

function paint(png: PNG, bitmap: LandscapeBitmap, top: number): void {
  const { ink } = bitmap;
  const base = top * png.width * 4;
  for (let i = 0; i < ink.length; i++) {
    if (!ink[i]) continue;
    const p = base + i * 4;
    png.data[p] = 0;
    png.data[p + 1] = 0;
    png.data[p + 2] = 0;
  }
}
