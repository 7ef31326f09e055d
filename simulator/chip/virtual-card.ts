import type { ApduTransport } from "../../drivers/chip/apdu-transport.js";

export interface VirtualCardOptions {
  /** ATR the card answers with; the default is a typical EMV T=1 contact card. */
  atr?: Buffer;
  /** AIDs (hex) the card knows; SELECT of any other answers 6A82. */
  aids?: string[];
}

/**
 * A small EMV-ish card model: SELECT by AID, then any command answers 9000. It records APDU counts
 * per session (not bytes: they may be keys). The same model backs the in-process transport here and
 * the PC/SC virtual card of the simulator.
 */
export class VirtualCard {
  readonly atr: Buffer;
  private readonly aids: Set<string>;
  private selected: string | undefined;
  /** Status word forced on the next N commands (fault `chip-sw`). */
  private forcedSw: { sw: string; remaining: number } | undefined;
  readonly stats = { sessions: 0, apdus: 0 };

  constructor(options: VirtualCardOptions = {}) {
    this.atr = options.atr ?? Buffer.from("3B8F8001804F0CA000000306030001000000006A", "hex");
    this.aids = new Set((options.aids ?? ["A0000000031010", "A0000000041010"]).map((a) => a.toUpperCase()));
  }

  forceStatusWord(sw: string, count = 1): void {
    this.forcedSw = { sw, remaining: count };
  }

  reset(): Buffer {
    this.selected = undefined;
    this.stats.sessions++;
    return this.atr;
  }

  process(command: Buffer): Buffer {
    this.stats.apdus++;
    if (this.forcedSw && this.forcedSw.remaining > 0) {
      this.forcedSw.remaining--;
      return Buffer.from(this.forcedSw.sw, "hex");
    }
    if (command.length < 4) return Buffer.from("6700", "hex");
    const [cla, ins, p1] = command;
    if (cla === 0x00 && ins === 0xa4 && p1 === 0x04) {
      const lc = command[4] ?? 0;
      const aid = command
        .subarray(5, 5 + lc)
        .toString("hex")
        .toUpperCase();
      if (!this.aids.has(aid)) return Buffer.from("6A82", "hex");
      this.selected = aid;
      return Buffer.from("9000", "hex");
    }
    if (!this.selected) return Buffer.from("6985", "hex");
    return Buffer.from("9000", "hex");
  }
}

/** The virtual card wired straight into the chip step, for the demo and fast tests. */
export class InProcessApduTransport implements ApduTransport {
  constructor(private readonly card: VirtualCard) {}

  async connect(): Promise<{ atr: Buffer }> {
    return { atr: this.card.reset() };
  }

  async transmit(command: Buffer): Promise<Buffer> {
    return this.card.process(command);
  }

  async disconnect(): Promise<void> {}
}
