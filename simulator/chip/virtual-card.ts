import type { ApduTransport } from "../../drivers/chip/apdu-transport.js";

export interface VirtualCardOptions {
  /** ATR the card answers with; the default is a typical EMV T=1 contact card. */
  atr?: Buffer;
  /** AIDs (hex) the card knows; SELECT of any other answers 6A82. */
  aids?: string[];
  /**
   * Answers as a T=0 card does: a SELECT with Le gets `61xx` (xx = FCI length), the FCI comes with
   * GET RESPONSE (`00 C0 00 00 xx`); a GET RESPONSE with another Le gets `6Cxx`. Default false.
   */
  t0Responses?: boolean;
}

/** Faults a card can be armed with (the demo's `--fault chip-*`). */
export type ChipCardFault = "wrong-sw" | "removed" | "no-atr" | "slow";

export interface ChipFaultOptions {
  /** How many cards, starting with the next one inserted, get the fault. Default 1. */
  cards?: number;
  /**
   * `wrong-sw` and `removed`: the command (0-based, counted by the card, GET RESPONSE included) at
   * which the fault strikes. Default 1: the first command after the SELECT.
   */
  atCommand?: number;
  /** `wrong-sw`: the status word answered instead. Default 6A80 (incorrect data). */
  sw?: string;
  /** `slow`: added before every answer, ms. Default 300. */
  delayMs?: number;
}

/** What the simulator keeps of one card: counts and status words, never command or response data. */
export interface ChipCardRecord {
  serial: number;
  /** Command APDUs the card received (GET RESPONSE and re-sent commands included). */
  apdus: number;
  /** The status word of every answer, in order. */
  statusWords: string[];
  fault?: ChipCardFault;
  /** The card left the reader in the middle of a command (`removed` fault). */
  removedMidScript?: boolean;
}

/** Thrown by `process()` when the `removed` fault strikes: the card is gone, nothing is answered. */
export class CardRemovedError extends Error {
  constructor() {
    super("the card left the reader");
    this.name = "CardRemovedError";
  }
}

interface ArmedChipFault {
  fault: ChipCardFault;
  remaining: number;
  options: ChipFaultOptions;
}

/**
 * A small EMV-ish card model: SELECT by AID, then any command answers 9000. It records APDU counts
 * per session (not bytes: they may be keys). The same model backs the in-process transport here and
 * the PC/SC virtual card of the simulator.
 *
 * One physical card is one `insert()` (the in-process transport's `reset()` inserts one per
 * connect; the vpcd card one per TCP connection). Armed faults apply per card, in arming order.
 */
export class VirtualCard {
  readonly atr: Buffer;
  private readonly aids: Set<string>;
  private readonly t0Responses: boolean;
  private selected: string | undefined;
  /** Data waiting for GET RESPONSE after a `61xx`. */
  private pendingResponse: Buffer | undefined;
  /** Status word forced on the next N commands (fault `chip-sw`). */
  private forcedSw: { sw: string; remaining: number } | undefined;
  private readonly armed: ArmedChipFault[] = [];
  private current: { record: ChipCardRecord; fault?: ArmedChipFault } | undefined;
  private nextSerial = 1;
  readonly stats = { sessions: 0, apdus: 0 };
  /** One entry per card inserted, oldest first. */
  readonly records: ChipCardRecord[] = [];

  constructor(options: VirtualCardOptions = {}) {
    this.atr = options.atr ?? Buffer.from("3B8F8001804F0CA000000306030001000000006A", "hex");
    this.aids = new Set((options.aids ?? ["A0000000031010", "A0000000041010"]).map((a) => a.toUpperCase()));
    this.t0Responses = options.t0Responses ?? false;
  }

  forceStatusWord(sw: string, count = 1): void {
    this.forcedSw = { sw, remaining: count };
  }

  /** Arms `fault` for the next `options.cards` cards (default 1). */
  armFault(fault: ChipCardFault, options: ChipFaultOptions = {}): void {
    const cards = options.cards ?? 1;
    if (!Number.isInteger(cards) || cards < 1) throw new RangeError("a chip fault needs cards >= 1");
    this.armed.push({ fault, remaining: cards, options });
  }

  /** A new physical card arrives in the reader: fresh state, the next armed fault (if any). */
  insert(): ChipCardRecord {
    this.selected = undefined;
    this.pendingResponse = undefined;
    this.stats.sessions++;
    const armed = this.armed.find((a) => a.remaining > 0);
    if (armed) armed.remaining--;
    const record: ChipCardRecord = {
      serial: this.nextSerial++,
      apdus: 0,
      statusWords: [],
      ...(armed ? { fault: armed.fault } : {}),
    };
    this.records.push(record);
    this.current = armed ? { record, fault: armed } : { record };
    return record;
  }

  /** The card in the reader, if any was inserted. */
  get currentCard(): ChipCardRecord | undefined {
    return this.current?.record;
  }

  /** The ATR, or undefined when the card is mute (`no-atr` fault). Changes no state (vpcd polls it). */
  get currentAtr(): Buffer | undefined {
    return this.current?.fault?.fault === "no-atr" ? undefined : this.atr;
  }

  /** Power on, warm reset or power off: the card forgets its selected application. */
  powerCycle(): void {
    this.selected = undefined;
    this.pendingResponse = undefined;
  }

  /** Delay before each answer of the card in the reader (`slow` fault), ms. */
  get answerDelayMs(): number {
    const f = this.current?.fault;
    return f?.fault === "slow" ? (f.options.delayMs ?? 300) : 0;
  }

  /** Inserts a new card and answers its reset: the in-process transport's connect. Empty when mute. */
  reset(): Buffer {
    this.insert();
    return this.currentAtr ?? Buffer.alloc(0);
  }

  /**
   * Answers one command APDU. Throws CardRemovedError when the `removed` fault strikes (the reader
   * then sees no answer and no card).
   */
  process(command: Buffer): Buffer {
    const record = this.current?.record;
    const index = record ? record.apdus : this.stats.apdus;
    this.stats.apdus++;
    if (record) record.apdus++;
    const fault = this.current?.fault;
    if (fault && (fault.options.atCommand ?? 1) === index) {
      if (fault.fault === "removed") {
        if (record) record.removedMidScript = true;
        throw new CardRemovedError();
      }
      if (fault.fault === "wrong-sw") return this.answered(Buffer.from(fault.options.sw ?? "6A80", "hex"));
    }
    return this.answered(this.respond(command));
  }

  private answered(response: Buffer): Buffer {
    this.current?.record.statusWords.push(
      response
        .subarray(response.length - 2)
        .toString("hex")
        .toUpperCase(),
    );
    return response;
  }

  private respond(command: Buffer): Buffer {
    if (this.forcedSw && this.forcedSw.remaining > 0) {
      this.forcedSw.remaining--;
      return Buffer.from(this.forcedSw.sw, "hex");
    }
    if (command.length < 4) return Buffer.from("6700", "hex");
    if (this.t0Responses && command[0] === 0x00 && command[1] === 0xc0) {
      const pending = this.pendingResponse;
      if (!pending) return Buffer.from("6985", "hex");
      const le = command.length === 5 ? command[4]! : -1;
      if (le !== pending.length) return Buffer.from([0x6c, pending.length]);
      this.pendingResponse = undefined;
      return Buffer.concat([pending, Buffer.from("9000", "hex")]);
    }
    this.pendingResponse = undefined;
    const [cla, ins, p1] = command;
    if (cla === 0x00 && ins === 0xa4 && p1 === 0x04) {
      const lc = command[4] ?? 0;
      const aid = command
        .subarray(5, 5 + lc)
        .toString("hex")
        .toUpperCase();
      if (!this.aids.has(aid)) return Buffer.from("6A82", "hex");
      this.selected = aid;
      if (this.t0Responses && command.length > 5 + lc) {
        this.pendingResponse = fciFor(aid);
        return Buffer.from([0x61, this.pendingResponse.length]);
      }
      return Buffer.from("9000", "hex");
    }
    if (!this.selected) return Buffer.from("6985", "hex");
    return Buffer.from("9000", "hex");
  }
}

/** FCI template of a SELECT answer: `6F { 84 AID, A5 { 50 "DEBIT" } }`. */
function fciFor(aidHex: string): Buffer {
  const aid = Buffer.from(aidHex, "hex");
  const label = Buffer.from("DEBIT", "ascii");
  const a5 = Buffer.concat([Buffer.from([0x50, label.length]), label]);
  const body = Buffer.concat([Buffer.from([0x84, aid.length]), aid, Buffer.from([0xa5, a5.length]), a5]);
  return Buffer.concat([Buffer.from([0x6f, body.length]), body]);
}

/** The virtual card wired straight into the chip step, for the demo and fast tests. */
export class InProcessApduTransport implements ApduTransport {
  constructor(private readonly card: VirtualCard) {}

  async connect(): Promise<{ atr: Buffer }> {
    return { atr: this.card.reset() };
  }

  async transmit(command: Buffer): Promise<Buffer> {
    const delayMs = this.card.answerDelayMs;
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    try {
      return this.card.process(command);
    } catch (err) {
      // What a PC/SC reader reports when the card leaves mid-command.
      if (err instanceof CardRemovedError) throw new Error("the card was removed");
      throw err;
    }
  }

  async disconnect(): Promise<void> {}
}
