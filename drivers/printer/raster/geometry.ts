/**
 * Panel geometry shared by the renderer, the codec, the driver and the simulator.
 *
 * The card is ISO/IEC 7810 ID-1, 85.6 × 54 mm, printed at 300 dpi. The print head spans the card's
 * short edge and the card travels along its long edge, so the printer thinks in "lines" across the
 * short edge, stacked along the long edge:
 *
 *   line index L ∈ [0, 1016) = position along the 85.6 mm edge, L = 0 at the card's LEFT edge
 *   dot  index D ∈ [0, 648)  = position along the 54 mm edge,   D = 0 at the card's TOP edge
 *
 * "Left" and "top" are as the cardholder sees that side, landscape, upright. Both sides use this
 * same mapping: the `Db` payload of the back is in the back's own as-seen frame and the printer
 * compensates for its flipper (see docs/raster.md; `rotatePanel180` exists for units that do not).
 *
 * So the panel is the transpose of the landscape picture: landscape pixel (x, y) = panel (L = x,
 * D = y), and a dot's centre sits at ((L + 0.5) / 11.811 mm, (D + 0.5) / 11.811 mm) from the card's
 * top-left corner. The card itself covers lines 0..1010 and dots 0..637; the panel's last 5 lines and
 * 10 dots lie past the right and bottom edges (overprint margin, lost off the card).
 *
 * Line L occupies bytes [L * 81, L * 81 + 81); within it byte b holds dots 8b..8b+7, most significant
 * bit first; a set bit means ink.
 */

export const DOTS_PER_MM = 300 / 25.4;
export const MM_PER_PT = 25.4 / 72;

export const CARD_WIDTH_MM = 85.6;
export const CARD_HEIGHT_MM = 54;

export const DOTS_PER_LINE = 648;
export const BYTES_PER_LINE = 81;
export const LINES = 1016;
export const PANEL_BYTES = 82296;

/** Landscape picture size: x runs along the lines, y along the dots of a line. */
export const LANDSCAPE_WIDTH = LINES;
export const LANDSCAPE_HEIGHT = DOTS_PER_LINE;

export function mmToDots(mm: number): number {
  return mm * DOTS_PER_MM;
}

export function ptToDots(pt: number): number {
  return pt * MM_PER_PT * DOTS_PER_MM;
}

export function blankPanel(): Buffer {
  return Buffer.alloc(PANEL_BYTES);
}

/** Ink at landscape (x, y) = (line, dot); out-of-panel coordinates read as blank. */
export function getDot(panel: Buffer, line: number, dot: number): boolean {
  if (line < 0 || line >= LINES || dot < 0 || dot >= DOTS_PER_LINE) return false;
  const byte = panel[line * BYTES_PER_LINE + (dot >> 3)] ?? 0;
  return (byte & (0x80 >> (dot & 7))) !== 0;
}

/**
 * The same picture turned half a turn. A printer whose flipper turns the card about its long axis
 * without compensating in firmware needs the back sent this way to come out upright.
 */
export function rotatePanel180(panel: Buffer): Buffer {
  assertPanelSize(panel);
  const out = Buffer.alloc(PANEL_BYTES);
  for (let i = 0; i < PANEL_BYTES; i++) {
    // DOTS_PER_LINE is a multiple of 8, so reversing the byte order and each byte's bits reverses
    // both the line order and the dot order.
    out[PANEL_BYTES - 1 - i] = REVERSED_BITS[panel[i]!]!;
  }
  return out;
}

export function assertPanelSize(panel: Buffer): void {
  if (panel.length !== PANEL_BYTES) {
    throw new RangeError(`panel must be ${PANEL_BYTES} bytes, got ${panel.length}`);
  }
}

const REVERSED_BITS = (() => {
  const table = new Uint8Array(256);
  for (let v = 0; v < 256; v++) {
    let r = 0;
    for (let bit = 0; bit < 8; bit++) if (v & (1 << bit)) r |= 0x80 >> bit;
    table[v] = r;
  }
  return table;
})();
