/**
 * One side of a card as the cardholder sees it, family-neutral: landscape, upright, row 0 at the
 * card's top edge, column 0 at its left edge. One bit a pixel, most significant bit first, 1 = ink.
 *
 * This is what the renderer produces and what previews show. How a printer family wants its panel
 * (line order, dot order, compression) is its adapter's business (drivers/printer/evolis/panel.ts):
 * nothing outside an adapter knows that an Evolis head runs along the long edge from the bottom.
 */
export interface CardImage {
  /** Pixels a row (along the card's long edge). */
  readonly width: number;
  /** Rows (along the short edge). */
  readonly height: number;
  /** Dots per inch of the printer the image was made for. */
  readonly dpi: number;
  /** Bytes a row: ceil(width / 8). */
  readonly rowBytes: number;
  /** height × rowBytes bytes. */
  readonly bits: Buffer;
}

/** The printable area of a printer family: the size its panels have, in dots. */
export interface PrintArea {
  width: number;
  height: number;
  dpi: number;
}

export function blankImage(area: PrintArea): CardImage {
  const rowBytes = Math.ceil(area.width / 8);
  return {
    width: area.width,
    height: area.height,
    dpi: area.dpi,
    rowBytes,
    bits: Buffer.alloc(rowBytes * area.height),
  };
}

/** Ink at (x, y); outside the image reads as blank. */
export function getPixel(image: CardImage, x: number, y: number): boolean {
  if (x < 0 || y < 0 || x >= image.width || y >= image.height) return false;
  return (image.bits[y * image.rowBytes + (x >> 3)]! & (0x80 >> (x & 7))) !== 0;
}

export function setPixel(image: CardImage, x: number, y: number, ink = true): void {
  if (x < 0 || y < 0 || x >= image.width || y >= image.height) return;
  const i = y * image.rowBytes + (x >> 3);
  const bit = 0x80 >> (x & 7);
  image.bits[i] = ink ? image.bits[i]! | bit : image.bits[i]! & ~bit;
}

/** Inked pixels. */
export function inkCount(image: CardImage): number {
  let n = 0;
  for (const byte of image.bits) n += POPCOUNT[byte]!;
  return n;
}

/** Smallest box holding every inked pixel (inclusive), or undefined for a blank image. */
export function inkBox(image: CardImage): { x0: number; y0: number; x1: number; y1: number } | undefined {
  let x0 = image.width;
  let y0 = image.height;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < image.height; y++) {
    const row = y * image.rowBytes;
    for (let b = 0; b < image.rowBytes; b++) {
      const byte = image.bits[row + b]!;
      if (byte === 0) continue;
      for (let bit = 0; bit < 8; bit++) {
        if ((byte & (0x80 >> bit)) === 0) continue;
        const x = b * 8 + bit;
        if (x >= image.width) continue;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  return x1 < 0 ? undefined : { x0, y0, x1, y1 };
}

export function sameImage(a: CardImage, b: CardImage): boolean {
  return a.width === b.width && a.height === b.height && a.bits.equals(b.bits);
}

export function cloneImage(image: CardImage): CardImage {
  return { ...image, bits: Buffer.from(image.bits) };
}

export const POPCOUNT = Uint8Array.from({ length: 256 }, (_, v) => {
  let n = 0;
  for (let b = v; b; b >>= 1) n += b & 1;
  return n;
});
