/**
 * Card geometry shared by the renderer, the previews and every printer family.
 *
 * The card is ISO/IEC 7810 ID-1, 85.6 × 54 mm. Job coordinates are millimetres from the card's
 * top-left corner as the cardholder sees that side; a printer family's print area (its panel size
 * in dots and its resolution) comes from its adapter's capabilities, so nothing here assumes one
 * printer. An Evolis panel, for instance, is 1016 × 648 dots at 300 dpi (drivers/printer/evolis/panel.ts).
 */

export const MM_PER_INCH = 25.4;
export const MM_PER_PT = MM_PER_INCH / 72;

export const CARD_WIDTH_MM = 85.6;
export const CARD_HEIGHT_MM = 54;

export function dotsPerMm(dpi: number): number {
  return dpi / MM_PER_INCH;
}

export function mmToDots(mm: number, dpi: number): number {
  return mm * dotsPerMm(dpi);
}

export function ptToDots(pt: number, dpi: number): number {
  return pt * MM_PER_PT * dotsPerMm(dpi);
}
