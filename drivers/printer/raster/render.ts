/**
 * Job print lines → 1-bit printer panel, through an SVG <text> rendered by resvg.
 *
 * The SVG canvas is the landscape card at one user unit per dot, so job millimetres convert with a
 * single scale and resvg's output only needs thresholding and a transpose into printer lines.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Resvg, type ResvgRenderOptions, renderAsync } from "@resvg/resvg-js";
import { CodedError } from "../../../agent/util/errors.js";
import {
  BYTES_PER_LINE,
  LANDSCAPE_HEIGHT,
  LANDSCAPE_WIDTH,
  mmToDots,
  PANEL_BYTES,
  ptToDots,
} from "./geometry.js";

export interface PrintLine {
  text: string;
  /** From the card's left edge, as the cardholder sees this side. */
  xMm: number;
  /** From the card's top edge to the text baseline. */
  yMm: number;
  sizePt: number;
}

/** Landscape picture, row-major, one byte per pixel (1 = ink), `width` = LINES, `height` = dots. */
export interface LandscapeBitmap {
  width: number;
  height: number;
  ink: Uint8Array;
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

/**
 * Module-local copies for the pixel loops: vitest and tsx rewrite imported bindings into property
 * reads, which made the transpose ~10× slower.
 */
const WIDTH: number = LANDSCAPE_WIDTH;
const HEIGHT: number = LANDSCAPE_HEIGHT;
const STRIDE: number = BYTES_PER_LINE;

let fontChecked = false;

/**
 * Only the band of dots the text can reach is rendered, straight into the panel: resvg's cost is per
 * pixel of canvas and a card's text covers about a fifth of it (19–24 → 6–7 ms a panel,
 * docs/performance.md). The band is cut at whole dots so resvg samples exactly as on the full canvas:
 * the panel is dot-for-dot the one `landscapeToPanel(renderLandscape(lines))` gives (tested).
 */
export function renderPanel(lines: ReadonlyArray<PrintLine>): Buffer {
  const band = planBand(lines);
  return band ? bandToPanel(rasterize(band.svg, band.height), band) : Buffer.alloc(PANEL_BYTES);
}

/**
 * The same panel, rasterised on libuv's thread pool: the event loop keeps serving D1 meanwhile, and
 * a card's two sides render in parallel. Bad print lines throw at once, before anything is scheduled,
 * so a job that cannot print fails before it waits for the printer.
 */
export function renderPanelAsync(lines: ReadonlyArray<PrintLine>): Promise<Buffer> {
  const band = planBand(lines);
  if (!band) return Promise.resolve(Buffer.alloc(PANEL_BYTES));
  return rasterizeAsync(band.svg, band.height).then((pixels) => bandToPanel(pixels, band));
}

interface Band {
  /** The panel's SVG with its canvas cut to rows [top, top + height). */
  svg: string;
  top: number;
  height: number;
}

/** Validates the lines (BAD_PRINT_LINE) and cuts the canvas; `undefined` when nothing would be drawn. */
function planBand(lines: ReadonlyArray<PrintLine>): Band | undefined {
  const svg = buildSvg(lines);
  if (svg === undefined) return undefined;
  const band = inkBand(lines);
  if (band === undefined) return undefined;
  return { svg: svg.replace(FULL_CANVAS, canvas(band.top, band.height)), ...band };
}

function bandToPanel(pixels: Buffer, { top, height }: Band): Buffer {
  const panel = Buffer.alloc(PANEL_BYTES);
  for (let r = 0; r < height; r++) {
    const y = top + r;
    const bit = 0x80 >> (y & 7);
    let p = r * WIDTH * 4 + 3;
    for (let x = 0, o = y >> 3; x < WIDTH; x++, o += STRIDE, p += 4) {
      if (pixels[p]! >= INK_ALPHA) panel[o]! |= bit;
    }
  }
  return panel;
}

export function renderLandscape(lines: ReadonlyArray<PrintLine>): LandscapeBitmap {
  const bitmap: LandscapeBitmap = {
    width: LANDSCAPE_WIDTH,
    height: LANDSCAPE_HEIGHT,
    ink: new Uint8Array(LANDSCAPE_WIDTH * LANDSCAPE_HEIGHT),
  };
  const svg = buildSvg(lines);
  if (svg === undefined) return bitmap;
  const pixels = rasterize(svg, HEIGHT);
  const { ink } = bitmap;
  for (let i = 0, p = 3; i < ink.length; i++, p += 4) {
    if (pixels[p]! >= INK_ALPHA) ink[i] = 1;
  }
  return bitmap;
}

/**
 * Rows [top, top + height) of the canvas that hold every glyph of the lines. The font's global
 * bounding box is 1.23 em above and 0.46 em below the baseline (DejaVuSans.ttf `head`): 1.5 / 0.6 em
 * leave room for anti-aliasing. `undefined` when the band is off the card.
 */
function inkBand(lines: ReadonlyArray<PrintLine>): { top: number; height: number } | undefined {
  let top = Number.POSITIVE_INFINITY;
  let bottom = Number.NEGATIVE_INFINITY;
  for (const line of lines) {
    if (line.text.trim() === "") continue;
    const size = ptToDots(line.sizePt);
    const baseline = mmToDots(line.yMm);
    top = Math.min(top, baseline - 1.5 * size);
    bottom = Math.max(bottom, baseline + 0.6 * size);
  }
  const from = Math.max(0, Math.floor(top));
  const to = Math.min(HEIGHT, Math.ceil(bottom));
  return to > from ? { top: from, height: to - from } : undefined;
}

function canvas(top: number, height: number): string {
  return `width="${LANDSCAPE_WIDTH}" height="${height}" viewBox="0 ${top} ${LANDSCAPE_WIDTH} ${height}"`;
}

const FULL_CANVAS = canvas(0, LANDSCAPE_HEIGHT);

/** RGBA pixels of an SVG whose canvas is the card's width and `height` rows. */
function rasterize(svg: string, height: number): Buffer {
  checkFont();
  try {
    return checkedPixels(new Resvg(svg, RESVG_OPTIONS).render(), height);
  } catch (err) {
    throw new RenderError("RENDER_FAILED", "resvg could not render the panel", { cause: err });
  }
}

async function rasterizeAsync(svg: string, height: number): Promise<Buffer> {
  checkFont();
  try {
    return checkedPixels(await renderAsync(svg, RESVG_OPTIONS), height);
  } catch (err) {
    throw new RenderError("RENDER_FAILED", "resvg could not render the panel", { cause: err });
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

function checkedPixels(image: { width: number; height: number; pixels: Buffer }, height: number): Buffer {
  if (image.width !== LANDSCAPE_WIDTH || image.height !== height) {
    throw new Error(`unexpected raster size ${image.width}x${image.height}`);
  }
  return image.pixels;
}

export function landscapeToPanel(bitmap: LandscapeBitmap): Buffer {
  if (bitmap.width !== LANDSCAPE_WIDTH || bitmap.height !== LANDSCAPE_HEIGHT) {
    throw new RangeError(`landscape bitmap must be ${LANDSCAPE_WIDTH}x${LANDSCAPE_HEIGHT}`);
  }
  const panel = Buffer.alloc(PANEL_BYTES);
  const { ink } = bitmap;
  for (let y = 0; y < HEIGHT; y++) {
    const bit = 0x80 >> (y & 7);
    const row = y * WIDTH;
    for (let x = 0, o = y >> 3; x < WIDTH; x++, o += STRIDE) {
      if (ink[row + x] !== 0) panel[o]! |= bit;
    }
  }
  return panel;
}

export function panelToLandscape(raw: Buffer): LandscapeBitmap {
  if (raw.length !== PANEL_BYTES) throw new RangeError(`panel must be ${PANEL_BYTES} bytes`);
  const ink = new Uint8Array(WIDTH * HEIGHT);
  for (let x = 0; x < WIDTH; x++) {
    const line = x * STRIDE;
    for (let b = 0; b < STRIDE; b++) {
      const byte = raw[line + b]!;
      if (byte === 0) continue;
      for (let bit = 0; bit < 8; bit++) {
        if (byte & (0x80 >> bit)) ink[(b * 8 + bit) * WIDTH + x] = 1;
      }
    }
  }
  return { width: LANDSCAPE_WIDTH, height: LANDSCAPE_HEIGHT, ink };
}

/** `undefined` when nothing would be drawn, so blank panels skip resvg entirely. */
function buildSvg(lines: ReadonlyArray<PrintLine>): string | undefined {
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
      `<text x="${num(mmToDots(line.xMm))}" y="${num(mmToDots(line.yMm))}" ` +
        `font-size="${num(ptToDots(line.sizePt))}">${escapeXml(line.text)}</text>`,
    );
  });
  if (texts.length === 0) return undefined;
  // xml:space="preserve" keeps runs of spaces as given (PAN grouping, aligned columns).
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" ${FULL_CANVAS} xml:space="preserve">` +
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
