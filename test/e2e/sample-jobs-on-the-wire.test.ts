import { PNG } from "pngjs";
import { afterEach, describe, expect, it } from "vitest";
import { makeSampleJob } from "../../agent/jobs/sample-jobs.js";
import { inkBox, sameImage } from "../../drivers/printer/card-image.js";
import { CommandParser } from "../../drivers/printer/evolis/command-parser.js";
import { decompressKO } from "../../drivers/printer/evolis/ko-compression.js";
import { EVOLIS_PRINT_AREA, imageFromPanel } from "../../drivers/printer/evolis/panel.js";
import { dotsPerMm } from "../../drivers/printer/raster/geometry.js";
import { type PrintLine, renderCardImage } from "../../drivers/printer/raster/render.js";
import { previewCard } from "../../simulator/previews.js";
import { PRINTER_PATH, type Rig, STATION, startRig } from "../support/e2e.js";

/**
 * What the agent puts on the wire for every sample job is the card it rendered: each `Dbc` payload,
 * decoded by the same K/O decoder that draws the Windows driver's captures right (captures.test.ts),
 * is the rendered side dot for dot. And the preview puts the PAN where the job says, measured from
 * the card's top-left corner as the cardholder sees it.
 */
const SAMPLES = 12;
const DOTS_PER_MM = dotsPerMm(EVOLIS_PRINT_AREA.dpi);

describe("sample jobs on the wire", () => {
  let rig: Rig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  it(`the Dbc payloads of ${SAMPLES} sample jobs decode to exactly the sides the agent rendered`, async () => {
    rig = await startRig({ recordWire: true });
    const jobs = Array.from({ length: SAMPLES }, (_, i) =>
      makeSampleJob(i, { station: STATION, runId: "wire" }),
    );
    for (const job of jobs) await rig.emulator.push(job, { station: STATION });
    await rig.emulator.waitFor(
      () => jobs.every((j) => rig!.emulator.latest(j.operationId)?.details.status === "CARD_PROD_DONE"),
      30_000,
    );

    const panels = new CommandParser()
      .push(rig.binding.takeRecording(PRINTER_PATH))
      .flatMap((c) => (c.kind === "command" && c.name === "Dbc" && c.binary ? [c.binary] : []));
    expect(panels).toHaveLength(SAMPLES * 2);
    jobs.forEach((job, i) => {
      const print = job.productionData.print!;
      const front = renderCardImage(print.front as PrintLine[], EVOLIS_PRINT_AREA);
      const back = renderCardImage(print.back as PrintLine[], EVOLIS_PRINT_AREA);
      expect(sameImage(imageFromPanel(decompressKO(panels[2 * i]!)), front), `job ${i} front`).toBe(true);
      expect(sameImage(imageFromPanel(decompressKO(panels[2 * i + 1]!)), back), `job ${i} back`).toBe(true);
      // And the simulated Evolis printed that too.
      expect(sameImage(rig!.printer.record[i]!.front!, front)).toBe(true);
    });
  });

  it("the preview puts the PAN line where xMm / yMm say, from the top-left corner as the cardholder sees it", async () => {
    rig = await startRig();
    const job = makeSampleJob(3, { station: STATION, runId: "preview" });
    await rig.emulator.push(job, { station: STATION });
    await rig.emulator.waitFor(
      () => rig!.emulator.latest(job.operationId)?.details.status === "CARD_PROD_DONE",
      10_000,
    );
    const card = rig.printer.record[0]!;
    const lines = job.productionData.print!;
    const preview = previewCard(card, { front: lines.front, back: lines.back }, { unmasked: true });
    const pan = lines.front[0]!;
    for (const png of [preview.unmasked!.front!, preview.masked.front!]) {
      const image = PNG.sync.read(png);
      // Ink (pure black) in the band of the PAN line: its left edge and its baseline.
      const top = Math.floor((pan.yMm - 5) * DOTS_PER_MM);
      const bottom = Math.ceil((pan.yMm + 0.5) * DOTS_PER_MM);
      let left = image.width;
      let baseline = 0;
      for (let y = top; y <= bottom; y++) {
        for (let x = 0; x < image.width; x++) {
          if (image.data[(y * image.width + x) * 4] !== 0) continue;
          left = Math.min(left, x);
          baseline = Math.max(baseline, y + 1);
        }
      }
      expect(Math.abs(left / DOTS_PER_MM - pan.xMm)).toBeLessThan(1);
      expect(left / DOTS_PER_MM).toBeGreaterThanOrEqual(pan.xMm);
      expect(Math.abs(baseline / DOTS_PER_MM - pan.yMm)).toBeLessThan(0.5);
    }
    // The same holds for the side the simulator decoded from the wire.
    const box = inkBox(card.front!)!;
    expect(box.x0 / DOTS_PER_MM).toBeGreaterThanOrEqual(pan.xMm);
    expect(box.x0 / DOTS_PER_MM - pan.xMm).toBeLessThan(1);
  });
});
