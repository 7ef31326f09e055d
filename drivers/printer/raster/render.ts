/**
 * Job print lines → one card side as the cardholder sees it (`CardImage`), through an SVG <text>
 * rendered by resvg.
 *
 * The SVG canvas is the printer's print area at one user unit per dot, so job millimetres convert
 * with a single scale and resvg's output only needs thresholding into 1-bit rows. Which way a
 * printer family wants the dots (an Evolis head runs along the long edge from the card's bottom) is
 * its adapter's business, not the renderer's.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Resvg, type ResvgRenderOptions, renderAsync } from "@resvg/resvg-js";
import { CodedError } from "../../../agent/util/errors.js";
import { blankImage, type CardImage, type PrintArea } from "../card-image.js";
import { mmToDots, ptToDots } from "./geometry.js";

export interface PrintLine {
  text: string;
  /** From the card's left edge, as the cardholder sees this side. */
  xMm: number;
  /** From the card's top edge to the text baseline. */
  yMm: number;
  sizePt: number;
}

export class RenderError extends CodedError<"BAD_PRINT_LINE" | "RENDER_FAILED"> {}

/**
 * Shipped with the repo and loaded alone (no system fonts) so that a card renders dot-for-dot the
 * same on every kiosk, CI runner and developer machine.
 */
export const FONT_FILE = fileURLToPath(new URL("../../../assets/fonts/DejaVuSans.ttf", import.meta.url));
const FONT_FAMILY = "DejaVu Sans";

/** resvg anti-aliases; keeping pixels at least half covered gives strokes their geometric weight. */
const INK_ALPHA = 128;

let fontChecked = false;

/**
 * Only the band of rows the text can reach is rendered: resvg's cost is per pixel of canvas and a
 * card's text covers about a fifth of it (docs/performance.md). The band is cut at whole dots so
 * resvg samples exactly as on the full canvas: the image is dot-for-dot the one the full canvas
 * gives (tested).
 */
export function renderCardImage(lines: ReadonlyArray<PrintLine>, area: PrintArea): CardImage {
  const band = planBand(lines, area);
  return band ? bandToImage(rasterize(band.svg, area, band.height), band, area) : blankImage(area);
}

/**
 * The same image, rasterised on libuv's thread pool: the event loop keeps serving D1 meanwhile, and
 * a card's two sides render in parallel. Bad print lines throw at once, before anything is scheduled,
 * so a job that cannot print fails before it waits for the printer.
 */
export function renderCardImageAsync(lines: ReadonlyArray<PrintLine>, area: PrintArea): Promise<CardImage> {
  const band = planBand(lines, area);
  if (!band) return Promise.resolve(blankImage(area));
  return rasterizeAsync(band.svg, area, band.height).then((pixels) => bandToImage(pixels, band, area));
}

/** The whole canvas rendered at once: the reference the band cut is tested against. */
export function renderCardImageFullCanvas(lines: ReadonlyArray<PrintLine>, area: PrintArea): CardImage {
  const svg = buildSvg(lines, area);
  if (svg === undefined) return blankImage(area);
  return bandToImage(rasterize(svg, area, area.height), { svg, top: 0, height: area.height }, area);
}

interface Band {
  /** The side's SVG with its canvas cut to rows [top, top + height). */
  svg: string;
  top: number;
  height: number;
}

/** Validates the lines (BAD_PRINT_LINE) and cuts the canvas; `undefined` when nothing would be drawn. */
function planBand(lines: ReadonlyArray<PrintLine>, area: PrintArea): Band | undefined {
  const svg = buildSvg(lines, area);
  if (svg === undefined) return undefined;
  const band = inkBand(lines, area);
  if (band === undefined) return undefined;
  return { svg: svg.replace(canvas(area, 0, area.height), canvas(area, band.top, band.height)), ...band };
}

function bandToImage(pixels: Buffer, { top, height }: Band, area: PrintArea): CardImage {
  const image = blankImage(area);
  const { bits, rowBytes } = image;
  const width = area.width;
  for (let r = 0; r < height; r++) {
    const row = (top + r) * rowBytes;
    let p = r * width * 4 + 3;
    for (let x = 0; x < width; x++, p += 4) {
      if (pixels[p]! >= INK_ALPHA) bits[row + (x >> 3)]! |= 0x80 >> (x & 7);
    }
  }
  return image;
}

/**
 * Rows [top, top + height) of the canvas that hold every glyph of the lines. The font's global
 * bounding box is 1.23 em above and 0.46 em below the baseline (DejaVuSans.ttf `head`): 1.5 / 0.6 em
 * leave room for anti-aliasing. `undefined` when the band is off the card.
 */
function inkBand(
  lines: ReadonlyArray<PrintLine>,
  area: PrintArea,
): { top: number; height: number } | undefined {
  let top = Number.POSITIVE_INFINITY;
  let bottom = Number.NEGATIVE_INFINITY;
  for (const line of lines) {
    if (line.text.trim() === "") continue;
    const size = ptToDots(line.sizePt, area.dpi);
    const baseline = mmToDots(line.yMm, area.dpi);
    top = Math.min(top, baseline - 1.5 * size);
    bottom = Math.max(bottom, baseline + 0.6 * size);
  }
  const from = Math.max(0, Math.floor(top));
  const to = Math.min(area.height, Math.ceil(bottom));
  return to > from ? { top: from, height: to - from } : undefined;
}

function canvas(area: PrintArea, top: number, height: number): string {
  return `width="${area.width}" height="${height}" viewBox="0 ${top} ${area.width} ${height}"`;
}

/** RGBA pixels of an SVG whose canvas is the area's width and `height` rows. */
function rasterize(svg: string, area: PrintArea, height: number): Buffer {
  checkFont();
  try {
    return checkedPixels(new Resvg(svg, RESVG_OPTIONS).render(), area, height);
  } catch (err) {
    throw new RenderError("RENDER_FAILED", "resvg could not render the card side", { cause: err });
  }
}

async function rasterizeAsync(svg: string, area: PrintArea, height: number): Promise<Buffer> {
  checkFont();
  try {
    return checkedPixels(await renderAsync(svg, RESVG_OPTIONS), area, height);
  } catch (err) {
    throw new RenderError("RENDER_FAILED", "resvg could not render the card side", { cause: err });
  }
}

const RESVG_OPTIONS: ResvgRenderOptions = {
  font: {
    loadSystemFonts: false,
    fontFiles: [FONT_FILE],
    defaultFontFamily: FONT_FAMILY,
    sansSerifFamily: FONT_FAMILY,
  },
  logLevel: "off",
};

function checkFont(): void {
  if (fontChecked) return;
  // resvg draws nothing, without an error, when a font is missing: that would be a blank card.
  if (!existsSync(FONT_FILE)) throw new RenderError("RENDER_FAILED", "card font file is missing");
  fontChecked = true;
}

function checkedPixels(
  image: { width: number; height: number; pixels: Buffer },
  area: PrintArea,
  height: number,
): Buffer {
  if (image.width !== area.width || image.height !== height) {
    throw new Error(`unexpected raster size ${image.width}x${image.height}`);
  }
  return image.pixels;
}

/** `undefined` when nothing would be drawn, so blank panels skip resvg entirely. */
function buildSvg(lines: ReadonlyArray<PrintLine>, area: PrintArea): string | undefined {
  const texts: string[] = [];
  lines.forEach((line, index) => {
    // Messages name the line index only: print lines can hold the PAN.
    for (const key of ["xMm", "yMm", "sizePt"] as const) {
      if (typeof line[key] !== "number" || !Number.isFinite(line[key])) {
        throw new RenderError("BAD_PRINT_LINE", `print line ${index}: ${key} is not a finite number`);
      }
    }
    if (line.sizePt <= 0) throw new RenderError("BAD_PRINT_LINE", `print line ${index}: sizePt must be > 0`);
    if (typeof line.text !== "string") {
      throw new RenderError("BAD_PRINT_LINE", `print line ${index}: text is not a string`);
    }
    if (XML_FORBIDDEN.test(line.text)) {
      throw new RenderError("BAD_PRINT_LINE", `print line ${index}: text has characters XML cannot carry`);
    }
    if (line.text.trim() === "") return;
    texts.push(
      `<text x="${num(mmToDots(line.xMm, area.dpi))}" y="${num(mmToDots(line.yMm, area.dpi))}" ` +
        `font-size="${num(ptToDots(line.sizePt, area.dpi))}">${escapeXml(line.text)}</text>`,
    );
  });
  if (texts.length === 0) return undefined;
  // xml:space="preserve" keeps runs of spaces as given (PAN grouping, aligned columns).
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" ${canvas(area, 0, area.height)} xml:space="preserve">` +
    `<g font-family="${FONT_FAMILY}" fill="#000">${texts.join("")}</g></svg>`
  );
}

/** C0 controls other than tab/LF/CR, lone surrogates and U+FFFE/U+FFFF are not XML 1.0 characters. */
const XML_FORBIDDEN =
  /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => XML_ENTITIES[c]!);
}

const XML_ENTITIES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&apos;",
};

function num(value: number): string {
  return value.toFixed(3);
}
