import { describe, expect, it } from "vitest";
import { EVOLIS_PRINT_AREA } from "../../drivers/printer/evolis/panel.js";
import { renderCardImage } from "../../drivers/printer/raster/render.js";
import {
  maskImage,
  maskPanLikeText,
  maskPrintLines,
  previewCard,
  type SensitivePrintLine,
} from "../../simulator/previews.js";

/**
 * Issue 14, finding 9: previews mask any PAN-looking text, flagged `sensitive` or not. A job that puts
 * the PAN (or a PAN inside a reference) on a line it forgot to flag must not show it in a preview.
 */
const render = (lines: SensitivePrintLine[]) => renderCardImage(lines, EVOLIS_PRINT_AREA);
const same = (a: { bits: Uint8Array }, b: { bits: Uint8Array }) =>
  Buffer.compare(Buffer.from(a.bits), Buffer.from(b.bits)) === 0;

describe("previews: PAN-looking text in lines not flagged sensitive", () => {
  it("masks 13 or more digits, any separators, Luhn or not; leaves ordinary text alone", () => {
    expect(maskPanLikeText("5266 0922 0141 6174")).toBe("5266 09** **** 6174");
    expect(maskPanLikeText("REF 5266-0922-0141-6174 OK")).toBe("REF 5266-09**-****-6174 OK");
    expect(maskPanLikeText("5266.0922.0141.6175")).toBe("5266.09**.****.6175");
    expect(maskPanLikeText("1234567890123")).toBe("123456***0123");
    // Full-width digits, and a PAN inside a longer run: every digit goes.
    expect(maskPanLikeText("５２６６０９２２０１４１６１７４")).toBe("５２６６０９******６１７４");
    expect(maskPanLikeText("99952660922014161740001")).toBe("***********************");
    // Dates, amounts, short ids and names are not PANs.
    for (const text of [
      "VALID THRU 04/28",
      "JOHN YATES",
      "MEMBER SINCE 2019",
      "ID 123456789012",
      "+49 30 1234 5678",
    ]) {
      expect(maskPanLikeText(text)).toBe(text);
    }
  });

  it("the preview of a card whose PAN line is not flagged shows it masked, the other lines as printed", () => {
    const lines: SensitivePrintLine[] = [
      { text: "5266 0922 0141 6174", xMm: 6, yMm: 30, sizePt: 14 },
      { text: "JOHN YATES", xMm: 6, yMm: 40, sizePt: 10 },
    ];
    const received = render(lines);
    const masked = maskImage(received, lines);
    expect(same(masked, received)).toBe(false);
    // Exactly what a card printed with the masked text looks like.
    expect(maskPrintLines(lines).map((l) => l.text)).toEqual(["5266 09** **** 6174", "JOHN YATES"]);
    expect(same(masked, render(maskPrintLines(lines)))).toBe(true);
    // A card without PAN-looking text is shown exactly as received.
    const plain = [lines[1]!];
    const printed = render(plain);
    expect(maskImage(printed, plain)).toBe(printed);
  });

  it("previewCard masks it in the PNG it makes", () => {
    const lines: SensitivePrintLine[] = [{ text: "5266092201416174", xMm: 6, yMm: 30, sizePt: 14 }];
    const card = {
      serial: 1,
      insertedAt: 0,
      frontInkDots: 1,
      backInkDots: 0,
      tracks: [],
      feeder: "1",
      outcome: "taken" as const,
      front: render(lines),
    };
    const asMasked = previewCard(
      { ...card, front: render([{ ...lines[0]!, text: "526609******6174" }]) },
      { front: [] },
    );
    const preview = previewCard(card, { front: lines });
    expect(preview.masked.front!.equals(asMasked.masked.front!)).toBe(true);
  });
});
