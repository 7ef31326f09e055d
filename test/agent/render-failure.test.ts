import { afterEach, describe, expect, it } from "vitest";
import type { OutboxEvent } from "../../agent/store/job-store.js";
import { ManualClock } from "../../agent/util/clock.js";
import { blankImage } from "../../drivers/printer/card-image.js";
import { RenderError } from "../../drivers/printer/raster/render.js";
import { FakePrinter, settle } from "../support/fake-printer.js";
import { pipelineRig } from "../support/pipeline-rig.js";

/**
 * Panels are rendered off the event loop while the pipeline waits for the printer and commits
 * PRODUCING; they are awaited before the insert. Either way a render failure ends the job
 * RENDER_ERROR with no card taken (docs/reasons.md), and the printer serves the next job.
 */
describe("a job whose panels cannot be rendered", () => {
  const cleanups: Array<() => void> = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });
  const { openStore, acceptJob, startedSupervisor, pipelineFor } = pipelineRig(cleanups);
  const printing = { print: { front: [{ text: "JANE DOE", xMm: 8, yMm: 42, sizePt: 10 }] } };

  it("print lines the renderer refuses fail the job at once, even while the printer is stopped", async () => {
    const clock = new ManualClock();
    const store = openStore(clock);
    const printer = new FakePrinter({ stopReasons: ["FEEDER_EMPTY"] });
    const supervisor = await startedSupervisor(printer, clock);
    const events: OutboxEvent[] = [];
    const pipeline = pipelineFor(store, printer, supervisor, clock, events, {
      render: () => {
        throw new RenderError("BAD_PRINT_LINE", "print line 0: sizePt must be > 0");
      },
    });
    acceptJob(store, "op-bad-lines", printing);
    const finished = new Promise<string>((resolve) =>
      pipeline.once("finished", (_id, state) => resolve(state)),
    );
    pipeline.start();
    expect(await finished).toBe("FAILED");
    await pipeline.stop();
    expect(store.get("op-bad-lines")).toMatchObject({
      state: "FAILED",
      reason: "RENDER_ERROR",
      error: "render",
    });
    expect(events.map((e) => e.d1Status)).toEqual(["CARD_PROD_EXCEPTION"]);
    expect(printer.commands).toEqual([]);
  });

  it("a renderer that fails off the event loop ends the job before the insert; the next job is produced", async () => {
    const clock = new ManualClock();
    const store = openStore(clock);
    const printer = new FakePrinter();
    const supervisor = await startedSupervisor(printer, clock);
    const events: OutboxEvent[] = [];
    let calls = 0;
    const pipeline = pipelineFor(store, printer, supervisor, clock, events, {
      render: async (_lines, area) => {
        calls++;
        await settle();
        if (calls === 1) throw new RenderError("RENDER_FAILED", "resvg could not render the card side");
        return blankImage(area);
      },
    });
    acceptJob(store, "op-render-fails", printing);
    acceptJob(store, "op-next", printing);
    const ended = new Map<string, string>();
    const both = new Promise<void>((resolve) =>
      pipeline.on("finished", (id, state) => {
        ended.set(id, state);
        if (ended.size === 2) resolve();
      }),
    );
    pipeline.start();
    await both;
    await pipeline.stop();
    expect(store.get("op-render-fails")).toMatchObject({ state: "FAILED", reason: "RENDER_ERROR" });
    expect(ended.get("op-next")).toBe("DONE");
    // One card only, for the next job: the failed one never reached the insert.
    expect(printer.commands.filter((c) => c === "insertCard")).toHaveLength(1);
    expect(events.map((e) => e.d1Status)).toEqual(["CARD_PROD_EXCEPTION", "CARD_PROD_DONE"]);
  });
});
