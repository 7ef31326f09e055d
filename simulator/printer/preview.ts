/**
 * PNG previews of printed card sides, for technicians looking at the simulator: what the head put
 * on the card, landscape and upright as the cardholder sees each side (the simulator decodes the
 * panels it receives in the printer's real orientation, drivers/printer/evolis/panel.ts).
 */
import { PNG } from "pngjs";
import type { CardImage } from "../../drivers/printer/card-image.js";

/** Between the stacked sides, in pixels (dots). */
export const PREVIEW_GAP = 24;
const GAP_GREY = 0xc8;

/** One side, black ink on white. */
export function imageToPng(image: CardImage): Buffer {
  const png = new PNG({ width: image.width, height: image.height });
  png.data.fill(0xff);
  paint(png, image, 0);
  return PNG.sync.write(png);
}

/**
 * Front above back. A side that was not printed is drawn blank so the picture always has the same
 * size and the back never moves up into the front's place.
 */
export function cardPreviewPng(
  size: { width: number; height: number },
  front?: CardImage,
  back?: CardImage,
): Buffer {
  const { width, height } = size;
  const png = new PNG({ width, height: height * 2 + PREVIEW_GAP });
  png.data.fill(0xff);
  // A grey gap makes the two white cards readable as two cards.
  for (let p = height * width * 4; p < (height + PREVIEW_GAP) * width * 4; p += 4) {
    png.data[p] = GAP_GREY;
    png.data[p + 1] = GAP_GREY;
    png.data[p + 2] = GAP_GREY;
  }
  if (front) paint(png, front, 0);
  if (back) paint(png, back, height + PREVIEW_GAP);
  return PNG.sync.write(png);
}

/** The image a black-on-white PNG shows (dark pixels are ink): the reverse of imageToPng. */
export function pngToImage(pngBytes: Buffer, dpi: number): CardImage {
  const png = PNG.sync.read(pngBytes);
  const rowBytes = Math.ceil(png.width / 8);
  const bits = Buffer.alloc(rowBytes * png.height);
  for (let y = 0; y < png.height; y++) {
    for (let x = 0; x < png.width; x++) {
      const p = (y * png.width + x) * 4;
      const luma = (png.data[p]! + png.data[p + 1]! + png.data[p + 2]!) / 3;
      if (luma < 128) bits[y * rowBytes + (x >> 3)]! |= 0x80 >> (x & 7);
    }
  }
  return { width: png.width, height: png.height, dpi, rowBytes, bits };
}

function paint(png: PNG, image: CardImage, top: number): void {
  const { bits, rowBytes, width, height } = image;
  for (let y = 0; y < height; y++) {
    for (let b = 0; b < rowBytes; b++) {
      const byte = bits[y * rowBytes + b]!;
      if (byte === 0) continue;
      for (let k = 0; k < 8; k++) {
        if ((byte & (0x80 >> k)) === 0) continue;
        const x = b * 8 + k;
        if (x >= width) continue;
        const p = ((top + y) * png.width + x) * 4;
        png.data[p] = 0;
        png.data[p + 1] = 0;
        png.data[p + 2] = 0;
      }
    }
  }
}
