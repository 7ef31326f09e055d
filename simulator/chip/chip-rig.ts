import { readFileSync } from "node:fs";
import type { Logger } from "../../agent/log/logger.js";
import type { ApduTransport } from "../../drivers/chip/apdu-transport.js";
import { PcscApduTransport } from "../../drivers/chip/pcsc-transport.js";
import type { VirtualEvolisPrinter } from "../printer/virtual-evolis-printer.js";
import { type PcscStack, startPcscStack } from "./pcsc-stack.js";
import {
  type ChipCardFault,
  type ChipCardRecord,
  InProcessApduTransport,
  VirtualCard,
} from "./virtual-card.js";
import { VpcdCard } from "./vpcd-card.js";

/** `inproc`: the card model called directly. `pcsc`: pcsc-lite → pcscd → vpcd → the card over TCP. */
export type ChipMode = "inproc" | "pcsc";

/** The demo's `--fault` names for the chip, and the card-model fault each one arms. */
export const CHIP_FAULTS: Readonly<Record<string, ChipCardFault>> = {
  "chip-sw": "wrong-sw",
  "chip-removed": "removed",
  "chip-no-atr": "no-atr",
  "chip-slow": "slow",
};

export interface ChipRigOptions {
  mode: ChipMode;
  /** The card model to play (default: a new `VirtualCard()`). */
  card?: VirtualCard;
  /** pcsc mode: pcscd's log goes here (when the rig starts pcscd). */
  logDir: string;
  /** Arms this fault on the first `faultCount` cards (every card when faultCount is undefined). */
  fault?: ChipCardFault | undefined;
  faultCount?: number | undefined;
  /** pcsc mode: how long the agent waits for a card in the reader. Default 3000. */
  cardTimeoutMs?: number;
  /** For the PC/SC transport's and the virtual card's own log lines (never APDU bytes). */
  logger?: Logger;
  onProgress?: (line: string) => void;
}

export interface ChipRig {
  mode: ChipMode;
  card: VirtualCard;
  /** The agent's `chip` dependency. */
  transport: ApduTransport;
  stack: PcscStack | undefined;
  vpcd: VpcdCard | undefined;
  /** pcsc mode: every card the printer feeds is inserted into the vpcd reader, removed when it leaves. */
  followPrinter(printer: VirtualEvolisPrinter): void;
  /** One line per chip card: APDU count and status words (never command bytes). */
  summary(): string[];
  close(): Promise<void>;
}

/** The chip side of the demo and of the PC/SC end-to-end test: card model, reader path, faults. */
export async function startChipRig(options: ChipRigOptions): Promise<ChipRig> {
  const card = options.card ?? new VirtualCard();
  if (options.fault && options.faultCount !== 0)
    card.armFault(options.fault, { cards: options.faultCount ?? Number.MAX_SAFE_INTEGER });
  if (options.mode === "inproc") {
    return {
      mode: "inproc",
      card,
      transport: new InProcessApduTransport(card),
      stack: undefined,
      vpcd: undefined,
      followPrinter: () => undefined,
      summary: () => describeCards(card.records),
      close: async () => undefined,
    };
  }

  const stack = await startPcscStack({
    logDir: options.logDir,
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  const vpcd = new VpcdCard({
    card,
    port: stack.vpcdPort,
    ...(options.logger ? { logger: options.logger } : {}),
  });
  vpcd.on("insert-failed", (err) =>
    options.onProgress?.(`pcsc: virtual card could not connect: ${err.message}`),
  );
  const transport = new PcscApduTransport({
    reader: stack.readerName,
    cardTimeoutMs: options.cardTimeoutMs ?? 3000,
    ...(options.logger ? { logger: options.logger } : {}),
  });
  const detach: Array<() => void> = [];
  return {
    mode: "pcsc",
    card,
    transport,
    stack,
    vpcd,
    followPrinter: (printer) => {
      detach.push(vpcd.followPrinter(printer));
    },
    summary: () => {
      const lines = describeCards(card.records);
      if (stack.pcscdLog) {
        lines.push(`pcscd log ${stack.pcscdLog}: ${countTransmits(stack.pcscdLog)} TRANSMIT requests`);
      }
      return lines;
    },
    close: async () => {
      for (const d of detach) d();
      // The card leaves (pcscd records it) and the reader goes quiet before the transport closes
      // its reader monitors: the addon's close() can block the process for good when a reader
      // changes state while it runs (docs/chip.md).
      await vpcd.remove().catch(() => undefined);
      await vpcd.close().catch(() => undefined);
      await new Promise((r) => setTimeout(r, 200));
      await transport.close().catch(() => undefined);
      await stack.stop();
    },
  };
}

export function describeCards(records: readonly ChipCardRecord[]): string[] {
  return records.map((r) => {
    const sws = r.statusWords.length ? r.statusWords.join(" ") : "-";
    const notes = [r.fault ? `fault ${r.fault}` : "", r.removedMidScript ? "removed mid-script" : ""]
      .filter(Boolean)
      .join(", ");
    return `chip card ${r.serial}: ${r.apdus} APDU${r.apdus === 1 ? "" : "s"}, SW ${sws}${notes ? ` (${notes})` : ""}`;
  });
}

function countTransmits(logFile: string): number {
  try {
    return readFileSync(logFile, "utf8").match(/Received command: TRANSMIT/g)?.length ?? 0;
  } catch {
    return 0;
  }
}
