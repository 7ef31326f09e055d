/**
 * An Evolis monochrome panel and how it maps onto the card as the cardholder sees it.
 *
 * Programming Guide A5013 Rev E §2 and `Db` (p.14): a panel is 1016 lines × 648 dots at 300 dpi;
 * `Db;k;2` sends it raw, 1 bit a dot, 8 dots a byte, 81 bytes a line. Which corner is which the
 * guide does not say; the eight captures of Evolis's own Windows driver do (shared/evolis/README.md,
 * verified dot for dot in test/drivers/printer/evolis/captures.test.ts):
 *
 *   line L ∈ [0, 1016) runs along the card's long edge, L = 0 at the card's LEFT edge;
 *   dot  D ∈ [0, 648)  runs along the short edge,       D = 0 at the card's BOTTOM edge;
 *   dot D of line L is bit (0x80 >> (D & 7)) of byte 81·L + (D >> 3).
 *
 * So the pixel the cardholder sees at column x, row y (row 0 at the top) is line x, dot 647 − y.
 * Drawn with dot 0 at the top instead, a card comes out upside-down and mirrored.
 */
import type { CardImage, PrintArea } from "../card-image.js";

export const LINES = 1016;
export const DOTS_PER_LINE = 648;
export const BYTES_PER_LINE = 81;
export const PANEL_BYTES = LINES * BYTES_PER_LINE;

/** The card side an Evolis panel covers, as a neutral print area (the renderer's canvas). */
export const EVOLIS_PRINT_AREA: PrintArea = { width: LINES, height: DOTS_PER_LINE, dpi: 300 };

/** Module-local copies for the bit loops: test and dev loaders turn imported bindings into property reads. */
const STRIDE: number = BYTES_PER_LINE;
const HEIGHT: number = DOTS_PER_LINE;
const WIDTH: number = LINES;

export function assertPanelSize(panel: Buffer): void {
  if (panel.length !== PANEL_BYTES) {
    throw new RangeError(`an Evolis panel is ${PANEL_BYTES} bytes, got ${panel.length}`);
  }
}

/** The raw panel (`Db` layout) that prints `image` the right way up. */
export function panelFromImage(image: CardImage): Buffer {
  if (image.width !== WIDTH || image.height !== HEIGHT) {
    throw new RangeError(
      `an Evolis panel prints a ${WIDTH}×${HEIGHT} image, got ${image.width}×${image.height}`,
    );
  }
  const panel = Buffer.alloc(PANEL_BYTES);
  const { bits, rowBytes } = image;
  for (let y = 0; y < HEIGHT; y++) {
    const dot = HEIGHT - 1 - y;
    const dotByte = dot >> 3;
    const dotBit = 0x80 >> (dot & 7);
    const row = y * rowBytes;
    for (let b = 0; b < rowBytes; b++) {
      const byte = bits[row + b]!;
      if (byte === 0) continue;
      for (let k = 0; k < 8; k++) {
        if ((byte & (0x80 >> k)) === 0) continue;
        const x = b * 8 + k;
        if (x < WIDTH) panel[x * STRIDE + dotByte]! |= dotBit;
      }
    }
  }
  return panel;
}

/** The card side a raw panel prints, as the cardholder sees it. */
export function imageFromPanel(panel: Buffer): CardImage {
  assertPanelSize(panel);
  const rowBytes = Math.ceil(WIDTH / 8);
  const bits = Buffer.alloc(rowBytes * HEIGHT);
  for (let x = 0; x < WIDTH; x++) {
    const line = x * STRIDE;
    const xByte = x >> 3;
    const xBit = 0x80 >> (x & 7);
    for (let b = 0; b < STRIDE; b++) {
      const byte = panel[line + b]!;
      if (byte === 0) continue;
      for (let k = 0; k < 8; k++) {
        if ((byte & (0x80 >> k)) === 0) continue;
        const y = HEIGHT - 1 - (b * 8 + k);
        bits[y * rowBytes + xByte]! |= xBit;
      }
    }
  }
  return { width: WIDTH, height: HEIGHT, dpi: EVOLIS_PRINT_AREA.dpi, rowBytes, bits };
}
