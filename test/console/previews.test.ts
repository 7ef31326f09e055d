import { once } from "node:events";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PNG } from "pngjs";
import { afterEach, describe, expect, it } from "vitest";
import { runDemo } from "../../agent/cli/demo.js";
import { getPixel, inkBox } from "../../drivers/printer/card-image.js";
import { EVOLIS_PRINT_AREA } from "../../drivers/printer/evolis/panel.js";
import { mmToDots as mmToDotsAt } from "../../drivers/printer/raster/geometry.js";
import { type PrintLine, renderCardImage } from "../../drivers/printer/raster/render.js";
import {
  type CardPreview,
  maskSensitiveText,
  PreviewRecorder,
  previewCard,
  previewFileName,
  printLinesFromStore,
  type SensitivePrintLine,
  writePreviewFiles,
} from "../../simulator/previews.js";
import { job, type Rig, STATION, startRig } from "../support/e2e.js";

type Box = { x0: number; y0: number; x1: number; y1: number };

const LANDSCAPE_WIDTH = EVOLIS_PRINT_AREA.width;
const LANDSCAPE_HEIGHT = EVOLIS_PRINT_AREA.height;
const mmToDots = (mm: number) => mmToDotsAt(mm, EVOLIS_PRINT_AREA.dpi);
const renderLandscape = (lines: PrintLine[]) => renderCardImage(lines, EVOLIS_PRINT_AREA);

function decode(png: Buffer | undefined): PNG {
  expect(png).toBeDefined();
  const image = PNG.sync.read(png!);
  expect([image.width, image.height]).toEqual([LANDSCAPE_WIDTH, LANDSCAPE_HEIGHT]);
  return image;
}

const isInk = (png: PNG, x: number, y: number) => png.data[(y * png.width + x) * 4] === 0;

/** Ink pixels of a decoded preview inside a box. */
function inkIn(png: PNG, box: Box): number {
  let n = 0;
  for (let y = box.y0; y <= box.y1; y++) for (let x = box.x0; x <= box.x1; x++) if (isInk(png, x, y)) n++;
  return n;
}

/** The ink box of a preview: where its text really is. */
function pngInkBox(png: PNG, within: Box): Box | undefined {
  let b: Box | undefined;
  for (let y = within.y0; y <= within.y1; y++)
    for (let x = within.x0; x <= within.x1; x++) {
      if (!isInk(png, x, y)) continue;
      b = b
        ? { x0: Math.min(b.x0, x), y0: Math.min(b.y0, y), x1: Math.max(b.x1, x), y1: Math.max(b.y1, y) }
        : { x0: x, y0: y, x1: x, y1: y };
    }
  return b;
}

/** Where a print line's text must start (left edge) and sit (baseline), in dots. */
function anchor(line: PrintLine): { x: number; baseline: number; sizeDots: number } {
  return { x: mmToDots(line.xMm), baseline: mmToDots(line.yMm), sizeDots: (line.sizePt * 300) / 72 };
}

describe("sensitive text masking", () => {
  it("keeps a PAN's first 6 and last 4 digits and its grouping, and stars anything else", () => {
    expect(maskSensitiveText("5266 0922 0141 6174")).toBe("5266 09** **** 6174");
    expect(maskSensitiveText("5266092201416174")).toBe("526609******6174");
    expect(maskSensitiveText("123")).toBe("***");
    expect(maskSensitiveText("JOHN YATES")).toBe("**** *****");
  });
});

describe("card previews from what the virtual printer received", () => {
  let rig: Rig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  async function produce(options: { unmasked?: boolean; lines?: "unknown" } = {}) {
    rig = await startRig({ takeAfterMs: 0 });
    const recorder = new PreviewRecorder({
      printer: rig.printer,
      pipeline: rig.agent.pipeline,
      printLinesOf: options.lines === "unknown" ? () => undefined : printLinesFromStore(rig.agent.store),
      unmasked: options.unmasked ?? false,
    });
    const j = job();
    const made = once(recorder, "preview") as Promise<[CardPreview]>;
    await rig.emulator.push(j, { station: STATION });
    const [preview] = await made;
    recorder.close();
    const print = (j.productionData as { print: { front: SensitivePrintLine[]; back: SensitivePrintLine[] } })
      .print;
    return { preview, print, card: rig.printer.record[0]!, job: j };
  }

  it("puts every line where the job put it, the PAN masked as first 6 / last 4 and the CSC as ***", async () => {
    const { preview, print } = await produce();
    expect(preview).toMatchObject({ serial: 1, outcome: "taken" });
    expect(preview.unmasked).toBeUndefined();
    const front = decode(preview.masked.front);
    const back = decode(preview.masked.back);

    for (const [png, lines] of [
      [front, print.front],
      [back, print.back],
    ] as const) {
      for (const line of lines) {
        const a = anchor(line);
        const shown = line.sensitive ? maskSensitiveText(line.text) : line.text;
        // Independently of the renderer: the text's ink starts at xMm (a glyph's side bearing allows
        // a few dots) and lies within one font size above the baseline at yMm.
        const search = {
          x0: Math.max(0, Math.floor(a.x) - 10),
          y0: Math.max(0, Math.floor(a.baseline - a.sizeDots)),
          x1: LANDSCAPE_WIDTH - 1,
          y1: Math.min(LANDSCAPE_HEIGHT - 1, Math.ceil(a.baseline + 3)),
        };
        const box = pngInkBox(png, search);
        expect(box, shown).toBeDefined();
        expect(Math.abs(box!.x0 - a.x), `${shown} left edge`).toBeLessThanOrEqual(8);
        if (/[0-9A-Z]/.test(shown)) {
          // Digits and capitals rest on the baseline and stand at least half the font size tall.
          expect(Math.abs(box!.y1 - a.baseline), `${shown} baseline`).toBeLessThanOrEqual(4);
          expect(a.baseline - box!.y0, `${shown} height`).toBeGreaterThan(a.sizeDots * 0.5);
        }
        // And exactly where the renderer puts that text on its own.
        expect(box, `${shown} box`).toEqual(inkBox(renderLandscape([{ ...line, text: shown }])));
      }
    }

    // The masked PAN is exactly the masked text rendered in the PAN's place: no printed digit of
    // the middle survives.
    const pan = print.front[0]!;
    expect(pan.sensitive).toBe(true);
    const original = inkBox(renderLandscape([pan]))!;
    const expected = renderLandscape([{ ...pan, text: maskSensitiveText(pan.text) }]);
    let differing = 0;
    for (let y = original.y0; y <= original.y1; y++)
      for (let x = original.x0; x <= original.x1; x++)
        if (isInk(front, x, y) !== getPixel(expected, x, y)) differing++;
    expect(differing).toBe(0);

    // Non-sensitive lines are the printer's pixels, untouched.
    const name = print.front[1]!;
    const nameBox = inkBox(renderLandscape([name]))!;
    const nameRender = renderLandscape([name]);
    let nameInk = 0;
    for (let y = nameBox.y0; y <= nameBox.y1; y++)
      for (let x = nameBox.x0; x <= nameBox.x1; x++) {
        expect(isInk(front, x, y)).toBe(getPixel(nameRender, x, y));
        if (isInk(front, x, y)) nameInk++;
      }
    expect(nameInk).toBeGreaterThan(100);
    // Nothing printed far from any line (top-right corner of the front).
    expect(inkIn(front, { x0: 700, y0: 10, x1: 1000, y1: 200 })).toBe(0);
  });

  it("unmasked previews are the received panels exactly; the masked ones differ only where the PAN is", async () => {
    const { preview, card, print } = await produce({ unmasked: true });
    const raw = decode(preview.unmasked!.front);
    const masked = decode(preview.masked.front);
    const expectedRaw = renderLandscape(print.front);
    let mismatches = 0;
    let outsideDiff = 0;
    const panBox = inkBox(renderLandscape([print.front[0]!]))!;
    for (let y = 0; y < LANDSCAPE_HEIGHT; y++)
      for (let x = 0; x < LANDSCAPE_WIDTH; x++) {
        if (isInk(raw, x, y) !== getPixel(expectedRaw, x, y)) mismatches++;
        const inPan = x >= panBox.x0 - 4 && x <= panBox.x1 + 4 && y >= panBox.y0 - 4 && y <= panBox.y1 + 4;
        if (!inPan && isInk(raw, x, y) !== isInk(masked, x, y)) outsideDiff++;
      }
    expect(card.front).toBeDefined();
    expect(mismatches).toBe(0);
    expect(outsideDiff).toBe(0);
    expect(inkIn(raw, panBox)).not.toBe(inkIn(masked, panBox));
  });

  it("withholds the masked picture when the job's lines are unknown (never falls back to unmasked)", async () => {
    const { preview } = await produce({ lines: "unknown" });
    expect(preview.masked).toEqual({});
    expect(preview.withheld).toMatch(/unknown/);
    const dir = mkdtempSync(join(tmpdir(), "previews-"));
    expect(writePreviewFiles(dir, preview)).toEqual([]);
  });

  it("a card with nothing printed (jammed at the feeder) gets no picture", () => {
    const preview = previewCard(
      {
        serial: 4,
        insertedAt: 0,
        frontInkDots: 0,
        backInkDots: 0,
        tracks: [],
        feeder: "1",
        outcome: "rejected",
      },
      { front: [], back: [] },
    );
    expect(preview).toMatchObject({ serial: 4, outcome: "rejected", masked: {} });
    expect(preview.withheld).toBeUndefined();
  });
});

describe("npm run demo -- --jobs 2 --previews DIR", () => {
  it("leaves one valid PNG per printed side, named by card number and side", async () => {
    const dir = mkdtempSync(join(tmpdir(), "demo-previews-"));
    const log = console.log;
    const printed: string[] = [];
    console.log = (...args: unknown[]) => printed.push(args.join(" "));
    let code: number;
    try {
      code = await runDemo({
        jobs: 2,
        station: STATION,
        takeAfterMs: 0,
        timeoutSec: 60,
        logLevel: "warn",
        dataDir: mkdtempSync(join(tmpdir(), "demo-data-")),
        previews: dir,
      });
    } finally {
      console.log = log;
    }
    expect(code).toBe(0);
    const files = readdirSync(dir).sort();
    expect(files).toEqual([
      previewFileName(1, "back"),
      previewFileName(1, "front"),
      previewFileName(2, "back"),
      previewFileName(2, "front"),
    ]);
    expect(files[1]).toBe("card-001-front.png");
    for (const f of files) {
      const png = decode(readFileSync(join(dir, f)));
      expect(inkIn(png, { x0: 0, y0: 0, x1: 1009, y1: 636 })).toBeGreaterThan(50);
    }
    const text = printed.join("\n");
    expect(text).toMatch(/console: http:\/\/127\.0\.0\.1:\d+\/\?token=\S+/);
    expect(text).toMatch(
      /status: +node bin\/kiosk-agent\.mjs status --url http:\/\/127\.0\.0\.1:\d+ --token \S+/,
    );
    expect(text).toContain("previews: 4 file(s)");
  });
});
