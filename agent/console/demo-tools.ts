/**
 * The technician tools a demo run adds around the agent: the console's simulator controls, card
 * previews (files and the console's "last card"), and the lines that tell a technician where to
 * look. Kept here so agent/cli/demo.ts only wires it in.
 */
import { randomBytes } from "node:crypto";
import { relative } from "node:path";
import type { D1Emulator } from "../../simulator/d1-emulator/emulator.js";
import { PreviewRecorder, printLinesFromStore, writePreviewFiles } from "../../simulator/previews.js";
import type { VirtualEvolisPrinter } from "../../simulator/printer/virtual-evolis-printer.js";
import type { KioskAgent } from "../agent.js";
import { simulatorControls } from "./sim-controls.js";
import type { SimulatorControls } from "./types.js";

export interface DemoToolsOptions {
  printer: VirtualEvolisPrinter;
  emulator: D1Emulator;
  station: string;
  /** Write one PNG per printed card side here. */
  previewsDir?: string;
  /** Files show the card as printed, sensitive lines included. */
  previewsUnmasked?: boolean;
}

export interface DemoTools {
  /** For the agent's dependencies: puts the console in simulator mode. */
  readonly simulator: SimulatorControls;
  /** For the agent's `console` config section: loopback, the given port, a fresh token. */
  consoleConfig(port: number): { enabled: true; host: string; port: number; token: string };
  /** Starts following the agent's pipeline for previews. Call once the agent exists. */
  attach(agent: KioskAgent): void;
  /** Lines telling a technician how to reach the console and run `status` (after agent.start()). */
  announce(agent: KioskAgent): Promise<string[]>;
  /** Waits for previews still being drawn; returns the files written so far. */
  finish(): Promise<string[]>;
  /** Resolves on SIGINT / SIGTERM. */
  hold(): Promise<void>;
  close(): void;
}

export function demoTools(options: DemoToolsOptions): DemoTools {
  const token = randomBytes(18).toString("base64url");
  const controls = simulatorControls({
    printer: options.printer,
    emulator: options.emulator,
    station: options.station,
  });
  const files: string[] = [];
  let recorder: PreviewRecorder | undefined;

  return {
    simulator: controls,
    consoleConfig: (port) => ({ enabled: true, host: "127.0.0.1", port, token }),
    attach(agent) {
      recorder = new PreviewRecorder({
        printer: options.printer,
        pipeline: agent.pipeline,
        printLinesOf: printLinesFromStore(agent.store),
        unmasked: options.previewsUnmasked ?? false,
      });
      const dir = options.previewsDir;
      if (dir) {
        recorder.on("preview", (p) => {
          files.push(...writePreviewFiles(dir, p, options.previewsUnmasked ?? false));
        });
      }
      recorder.on("error", () => undefined);
      controls.attachPreviews(recorder);
    },
    async announce(agent) {
      if (!agent.console) return [];
      const { url } = await agent.console.start();
      return [
        `  console: ${url}/?token=${token}`,
        `  status:  node bin/kiosk-agent.mjs status --url ${url} --token ${token}`,
      ];
    },
    async finish() {
      await recorder?.idle();
      return files.map((f) => {
        const rel = relative(process.cwd(), f);
        return rel.startsWith("..") ? f : rel;
      });
    },
    hold() {
      return new Promise<void>((resolve) => {
        const done = (): void => {
          process.off("SIGINT", done);
          process.off("SIGTERM", done);
          resolve();
        };
        process.once("SIGINT", done);
        process.once("SIGTERM", done);
      });
    },
    close() {
      recorder?.close();
    },
  };
}
