/**
 * Card previews for technicians: one PNG per printed side of every card the virtual printer
 * produced, built from the panels the printer *received* (the decoded `Dbc` bitmaps in its record).
 *
 * Masking. The received panel is pixels: the PAN and the CSC are already ink in it, and no bitmap
 * operation can tell which dots are "the PAN". So a masked preview is made like this, for each side:
 *   1. start from the received panel, dot for dot;
 *   2. for every print line of the job marked `sensitive`, and every other line holding a PAN-looking
 *      run of digits (13 or more, separators allowed), render that line alone (same renderer,
 *      font, position and size the agent used) to find the box its ink covers, and erase that box
 *      (plus a small margin) from the picture;
 *   3. render the masked text (PAN as first 6 / last 4, anything else as `*`; in a line not marked
 *      sensitive only the PAN-looking run is masked) at the same position and size, and draw it in.
 * Everything that is not sensitive stays exactly what the printer got; the sensitive text is shown
 * masked where the job put it. Ink of another line that overlaps a sensitive line's box is erased
 * with it (the job's layout decides; sample cards do not overlap).
 *
 * Without the job's print lines (a card whose job is unknown) a masked preview cannot be made, and
 * none is: it is withheld, never drawn unmasked by default. `unmasked: true` (the demo's
 * `--previews-unmasked`) adds the raw received panels.
 */
import { EventEmitter } from "node:events";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PNG } from "pngjs";
import type { ProductionStep } from "../agent/pipeline/pipeline.js";
import { type CardImage, cloneImage, inkBox, setPixel } from "../drivers/printer/card-image.js";
import { CARD_HEIGHT_MM, CARD_WIDTH_MM, mmToDots } from "../drivers/printer/raster/geometry.js";
import { type PrintLine, renderCardImage } from "../drivers/printer/raster/render.js";
import type { CardOutcome, CardRecord, VirtualEvolisPrinter } from "./printer/virtual-evolis-printer.js";

export type CardSide = "front" | "back";

export interface SensitivePrintLine extends PrintLine {
  sensitive?: boolean;
}

export interface JobPrintLines {
  front?: ReadonlyArray<SensitivePrintLine>;
  back?: ReadonlyArray<SensitivePrintLine>;
}

/** PNG bytes per side; a side the printer did not print is absent. */
export type SidePngs = Partial<Record<CardSide, Buffer>>;

export interface CardPreview {
  /** The printer's card serial (1, 2, …). */
  serial: number;
  operationId?: string;
  outcome: CardOutcome;
  /** Clock time (ms) the preview was made. */
  at: number;
  /** Sensitive print lines masked. Empty when the card has no printed side or the job is unknown. */
  masked: SidePngs;
  /** The panels exactly as received; only when the recorder was asked for them. */
  unmasked?: SidePngs;
  /** Why no masked picture exists although the card was printed. */
  withheld?: string;
}

/** Margin around a sensitive line's ink that is erased with it, in dots (1 dot ≈ 0.085 mm). */
const ERASE_MARGIN = 4;

/**
 * The text a preview shows for a sensitive line: a 13–19 digit number (a PAN, grouped or not) keeps
 * its first 6 and last 4 digits and its grouping; anything else becomes one `*` per character.
 */
export function maskSensitiveText(text: string): string {
  const digits = text.replace(/[^0-9]/g, "");
  if (/^[0-9 -]+$/.test(text) && digits.length >= 13 && digits.length <= 19) {
    let seen = 0;
    return text.replace(/[0-9]/g, (d) => {
      const i = seen++;
      return i < 6 || i >= digits.length - 4 ? d : "*";
    });
  }
  return text.replace(/\S/gu, "*");
}

/**
 * A run of 13 or more digits (any script's decimal digits), single or double separators (space, tab,
 * `-`, `.`, `/`, `_`) allowed between them: what a PAN looks like on a card or in a mistyped layout.
 */
const PAN_LIKE = /\p{Nd}(?:[ \t\-./_]{0,2}\p{Nd}){12,}/gu;

/**
 * Any PAN-looking run in `text` masked, the rest as it is: a run of 13–19 digits keeps its first 6
 * and last 4 (and its separators), a longer one (a PAN with more digits around it) loses every digit.
 * Luhn or not: a preview never needs those digits, and a job may not flag its PAN line sensitive.
 */
export function maskPanLikeText(text: string): string {
  return text.replace(PAN_LIKE, (run) => {
    const count = run.match(/\p{Nd}/gu)?.length ?? 0;
    let seen = 0;
    return run.replace(/\p{Nd}/gu, (d) => {
      const i = seen++;
      return count <= 19 && (i < 6 || i >= count - 4) ? d : "*";
    });
  });
}

/**
 * What a preview shows for a line: the masked text of a sensitive line, a line with a PAN-looking run
 * with that run masked (flagged sensitive or not), or undefined when it is shown as printed.
 */
function previewText(line: SensitivePrintLine): string | undefined {
  if (line.sensitive === true) return maskSensitiveText(line.text);
  const masked = maskPanLikeText(line.text);
  return masked === line.text ? undefined : masked;
}

/** The job's lines with every sensitive or PAN-looking text masked (positions and sizes unchanged). */
export function maskPrintLines(lines: ReadonlyArray<SensitivePrintLine>): PrintLine[] {
  return lines.map((line) => ({
    text: previewText(line) ?? line.text,
    xMm: line.xMm,
    yMm: line.yMm,
    sizePt: line.sizePt,
  }));
}

/**
 * The received side with each sensitive line replaced by its masked text (see the file comment).
 * The lines are rendered on the received image's own print area, as the agent rendered them.
 */
export function maskImage(received: CardImage, lines: ReadonlyArray<SensitivePrintLine>): CardImage {
  // Flagged sensitive, or showing a PAN-looking number although not flagged.
  const sensitive = lines.filter((l) => previewText(l) !== undefined);
  if (sensitive.length === 0) return received;
  const area = { width: received.width, height: received.height, dpi: received.dpi };
  const picture = cloneImage(received);
  for (const line of sensitive) {
    const box = inkBox(renderCardImage([line], area));
    if (!box) continue;
    const xa = Math.max(0, box.x0 - ERASE_MARGIN);
    const xb = Math.min(area.width - 1, box.x1 + ERASE_MARGIN);
    const ya = Math.max(0, box.y0 - ERASE_MARGIN);
    const yb = Math.min(area.height - 1, box.y1 + ERASE_MARGIN);
    for (let y = ya; y <= yb; y++) for (let x = xa; x <= xb; x++) setPixel(picture, x, y, false);
  }
  const masked = renderCardImage(maskPrintLines(sensitive), area);
  for (let i = 0; i < picture.bits.length; i++) picture.bits[i]! |= masked.bits[i] ?? 0;
  return picture;
}

const EDGE_GREY = 0x99;
const OFF_CARD_GREY = 0xe4;

/**
 * One side as a PNG, landscape and upright as the cardholder sees it, one pixel per printer dot:
 * black ink on the white card, the card's edge in grey and the overprint margin past it shaded.
 * The card's top-left corner is the image's (the Windows driver's "fit" captures draw the card
 * there, leaving the margin at the right and bottom: docs/raster.md).
 */
export function sidePng(image: CardImage): Buffer {
  const { width, height } = image;
  const right = Math.round(mmToDots(CARD_WIDTH_MM, image.dpi));
  const bottom = Math.round(mmToDots(CARD_HEIGHT_MM, image.dpi));
  const png = new PNG({ width, height });
  const data = png.data;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = (y * width + x) * 4;
      let v = 0xff;
      if (x >= right || y >= bottom) v = OFF_CARD_GREY;
      if ((x === right - 1 || y === bottom - 1 || x === 0 || y === 0) && x < right && y < bottom)
        v = EDGE_GREY;
      if ((image.bits[y * image.rowBytes + (x >> 3)]! & (0x80 >> (x & 7))) !== 0) v = 0;
      data[p] = v;
      data[p + 1] = v;
      data[p + 2] = v;
      data[p + 3] = 0xff;
    }
  }
  return PNG.sync.write(png);
}

/** Preview PNGs of one card record. `lines` undefined: the job is unknown, the masked set is withheld. */
export function previewCard(
  card: CardRecord,
  lines: JobPrintLines | undefined,
  options: { unmasked?: boolean; at?: number; operationId?: string } = {},
): CardPreview {
  const sides = (["front", "back"] as const).filter((s) => card[s] !== undefined);
  const masked: SidePngs = {};
  let withheld: string | undefined;
  if (sides.length > 0 && lines === undefined) withheld = "the job's print lines are unknown";
  else for (const s of sides) masked[s] = sidePng(maskImage(card[s]!, lines?.[s] ?? []));
  const preview: CardPreview = {
    serial: card.serial,
    outcome: card.outcome,
    at: options.at ?? Date.now(),
    masked,
    ...(options.operationId !== undefined ? { operationId: options.operationId } : {}),
    ...(withheld !== undefined ? { withheld } : {}),
  };
  if (options.unmasked) {
    preview.unmasked = {};
    for (const s of sides) preview.unmasked[s] = sidePng(card[s]!);
  }
  return preview;
}

/** `card-007-front.png`. */
export function previewFileName(serial: number, side: CardSide): string {
  return `card-${String(serial).padStart(3, "0")}-${side}.png`;
}

/** Writes one PNG per printed side into `dir`; returns the paths written. */
export function writePreviewFiles(dir: string, preview: CardPreview, unmasked = false): string[] {
  const pngs = unmasked ? preview.unmasked : preview.masked;
  if (!pngs) throw new Error("unmasked previews were not recorded (PreviewRecorder option unmasked)");
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  for (const side of ["front", "back"] as const) {
    const png = pngs[side];
    if (!png) continue;
    const path = join(dir, previewFileName(preview.serial, side));
    writeFileSync(path, png);
    written.push(path);
  }
  return written;
}

/** What the recorder needs of the agent's pipeline: its events and the job in hand. */
export interface PipelineLike {
  on(event: "step", listener: (operationId: string, step: ProductionStep) => void): unknown;
  on(event: "finished", listener: (operationId: string, state: string) => void): unknown;
  off(event: "step", listener: (operationId: string, step: ProductionStep) => void): unknown;
  off(event: "finished", listener: (operationId: string, state: string) => void): unknown;
  readonly current: { operationId: string; step: ProductionStep } | undefined;
}

export interface PreviewRecorderOptions {
  printer: VirtualEvolisPrinter;
  pipeline: PipelineLike;
  /**
   * The print lines of a job, asked for when its production starts (the job is still in the store
   * then: it is purged when it ends). Undefined or a throw: the job is unknown.
   */
  printLinesOf: (operationId: string) => JobPrintLines | undefined;
  /** Also keep the unmasked PNGs (files only; the console never serves them). */
  unmasked?: boolean;
  /** Previews kept in memory, newest last. Default 20. */
  keep?: number;
  now?: () => number;
}

export interface PreviewRecorderEvents {
  preview: [CardPreview];
  error: [Error];
}

/**
 * Follows the agent's pipeline and the virtual printer and makes a preview of every card when its
 * job ends. A card is tied to the job the pipeline had in hand when the printer fed it (one job is
 * on the printer at a time). Rendering is deferred off the pipeline's event; `idle()` waits for it.
 */
export class PreviewRecorder extends EventEmitter<PreviewRecorderEvents> {
  private readonly lines = new Map<string, JobPrintLines | undefined>();
  private readonly cardOf = new Map<string, CardRecord>();
  private readonly kept: CardPreview[] = [];
  private readonly pending = new Set<Promise<void>>();
  private readonly keep: number;
  private readonly now: () => number;

  private readonly onStep = (operationId: string, step: ProductionStep): void => {
    if (step !== "render") return;
    let lines: JobPrintLines | undefined;
    try {
      lines = this.options.printLinesOf(operationId);
    } catch {
      lines = undefined;
    }
    this.lines.set(operationId, lines);
  };

  private readonly onInserted = (card: CardRecord): void => {
    const id = this.options.pipeline.current?.operationId;
    if (id !== undefined) this.cardOf.set(id, card);
  };

  private readonly onFinished = (operationId: string): void => {
    const card = this.cardOf.get(operationId);
    const lines = this.lines.get(operationId);
    this.cardOf.delete(operationId);
    this.lines.delete(operationId);
    if (!card) return;
    const work = new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      try {
        const preview = previewCard(card, lines, {
          unmasked: this.options.unmasked ?? false,
          at: this.now(),
          operationId,
        });
        this.kept.push(preview);
        if (this.kept.length > this.keep) this.kept.shift();
        this.emit("preview", preview);
      } catch (err) {
        if (this.listenerCount("error") > 0) this.emit("error", err as Error);
      }
    });
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
  };

  constructor(private readonly options: PreviewRecorderOptions) {
    super();
    this.keep = options.keep ?? 20;
    this.now = options.now ?? Date.now;
    options.pipeline.on("step", this.onStep);
    options.pipeline.on("finished", this.onFinished);
    options.printer.on("card-inserted", this.onInserted);
  }

  /** The newest preview, if any card has ended yet. */
  latest(): CardPreview | undefined {
    return this.kept[this.kept.length - 1];
  }

  bySerial(serial: number): CardPreview | undefined {
    return this.kept.find((p) => p.serial === serial);
  }

  all(): readonly CardPreview[] {
    return [...this.kept];
  }

  /** Resolves once every preview started so far is made. */
  async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  close(): void {
    this.options.pipeline.off("step", this.onStep);
    this.options.pipeline.off("finished", this.onFinished);
    this.options.printer.off("card-inserted", this.onInserted);
    this.lines.clear();
    this.cardOf.clear();
  }
}

/** `printLinesOf` for an agent's store: reads the sealed job while it is still there. */
export function printLinesFromStore(store: {
  loadJobJson(operationId: string): string;
}): (operationId: string) => JobPrintLines | undefined {
  return (operationId) => {
    const job = JSON.parse(store.loadJobJson(operationId)) as {
      productionData?: { print?: JobPrintLines };
    };
    return job.productionData?.print ?? { front: [], back: [] };
  };
}
