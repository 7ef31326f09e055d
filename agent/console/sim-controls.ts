/**
 * Simulator mode of the console: the fault buttons, the sample-job button and the card preview,
 * wired to the demo's VirtualEvolisPrinter, D1 emulator and PreviewRecorder. Only the demo (and tests)
 * import this file; the service never does.
 */
import { randomBytes } from "node:crypto";
import type { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import type { CardPreview, PreviewRecorder } from "../../simulator/previews.js";
import { FAULT_RULES, type PrinterFaultName } from "../../simulator/printer/faults.js";
import type { VirtualEvolisPrinter } from "../../simulator/printer/virtual-evolis-printer.js";
import { makeSampleJob } from "../jobs/sample-jobs.js";
import type { ConsolePreview, SimulatorControls } from "./types.js";

export const PRINTER_FAULTS = Object.keys(FAULT_RULES) as PrinterFaultName[];

export interface SimulatorControlsOptions {
  printer: VirtualEvolisPrinter;
  emulator: D1Emulator;
  station: string;
  /** Can also be attached later (the recorder needs the agent's pipeline, made after these controls). */
  previews?: PreviewRecorder;
  /** Makes the job the sample button pushes; default: makeSampleJob with a fresh index. */
  makeJob?: () => unknown;
  now?: () => number;
}

const PRINTER_EVENTS = [
  "card-inserted",
  "card-presented",
  "card-taken",
  "card-captured",
  "card-rejected",
  "card-ejected",
] as const;

export function simulatorControls(
  options: SimulatorControlsOptions,
): SimulatorControls & { attachPreviews(recorder: PreviewRecorder): void } {
  const { printer, emulator, station } = options;
  let previews: PreviewRecorder | undefined;
  const now = options.now ?? Date.now;
  const injected: Array<{ name: string; at: number }> = [];
  const listeners = new Set<() => void>();
  const changed = (): void => {
    for (const l of [...listeners]) l();
  };
  const runId = randomBytes(4).toString("hex");
  let next = 0;
  const makeJob = options.makeJob ?? (() => makeSampleJob(next++, { station, runId }));

  for (const event of PRINTER_EVENTS) printer.on(event, changed);
  const attachPreviews = (recorder: PreviewRecorder): void => {
    previews?.off("preview", changed);
    previews = recorder;
    recorder.on("preview", changed);
  };
  if (options.previews) attachPreviews(options.previews);

  const toConsole = (p: CardPreview | undefined): ConsolePreview | undefined =>
    p && {
      serial: p.serial,
      outcome: p.outcome,
      at: p.at,
      // The masked set only: the console never serves what --previews-unmasked writes to files.
      sides: { ...p.masked },
      ...(p.operationId !== undefined ? { operationId: p.operationId } : {}),
      ...(p.withheld !== undefined ? { withheld: p.withheld } : {}),
    };

  return {
    attachPreviews,
    faults: PRINTER_FAULTS,
    injectFault(name) {
      if (!(PRINTER_FAULTS as string[]).includes(name))
        throw new RangeError(`unknown printer fault '${name}'`);
      printer.injectFault(name as PrinterFaultName);
      injected.push({ name, at: now() });
      if (injected.length > 20) injected.shift();
      changed();
    },
    clearFaults() {
      printer.clearFaults();
      injected.length = 0;
      changed();
    },
    takeCard() {
      const taken = printer.takeCardNow();
      if (taken) changed();
      return taken;
    },
    async pushSampleJob() {
      const answer = await emulator.push(makeJob(), { station });
      return {
        result: answer.result,
        ...(answer.operationId !== undefined ? { operationId: answer.operationId } : {}),
        ...(answer.errorCode !== undefined ? { errorCode: answer.errorCode } : {}),
      };
    },
    injected: () => [...injected],
    printerState: () => ({ ...printer.state }),
    // The newest card with a picture: a card jammed at the feeder printed nothing worth showing.
    latestPreview: () =>
      toConsole(
        [...(previews?.all() ?? [])]
          .reverse()
          .find((p) => p.withheld !== undefined || Object.keys(p.masked).length > 0),
      ),
    preview: (serial) => toConsole(previews?.bySerial(serial)),
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
