import type {
  CardPrinter,
  PrinterCapabilities,
  PrinterCounters,
  PrinterLinkStats,
  PrinterStatus,
} from "../../drivers/printer/card-printer.js";
import { EVOLIS_PRINT_AREA } from "../../drivers/printer/evolis/panel.js";

/**
 * A CardPrinter stand-in for the supervisor and the pipeline without a link: status reads answer
 * `status` at once, and every card-moving operation is recorded (a test that must not move a card
 * asserts `commands` stays empty).
 */
export class FakePrinter implements CardPrinter {
  readonly capabilities: PrinterCapabilities & { feeders: readonly string[] } = {
    family: "fake",
    printArea: EVOLIS_PRINT_AREA,
    feeders: ["1"],
    sides: ["front", "back"],
    magstripeEncoder: true,
    contactStation: true,
    capturedCardsGoTo: "reject-box",
  };
  readonly identity = undefined;
  readonly stats: PrinterLinkStats = { commands: 0, droppedFrames: 0, unexpectedReplies: 0, bytesWritten: 0 };
  readonly status: PrinterStatus = {
    cardPosition: "NONE",
    stopReasons: [],
    warnings: [],
    feeders: [{ id: "1", empty: false, nearEmpty: false }],
    cleaning: "none",
  };
  readonly commands: string[] = [];
  /** What readCounters() answers. */
  counters: PrinterCounters = {};
  isOpen = false;

  constructor(status: Partial<PrinterStatus> = {}, options: { feeders?: string[] } = {}) {
    Object.assign(this.status, status);
    if (options.feeders) {
      this.capabilities.feeders = options.feeders;
      if (!status.feeders)
        this.status.feeders = options.feeders.map((id) => ({ id, empty: false, nearEmpty: false }));
    }
  }

  /** Kept for the tests written against the driver type: the fake is the printer itself. */
  get driver(): CardPrinter {
    return this;
  }

  onDisconnect(): () => void {
    return () => undefined;
  }

  async open(): Promise<void> {
    this.isOpen = true;
  }

  async close(): Promise<void> {
    this.isOpen = false;
  }

  async readStatus(): Promise<PrinterStatus> {
    return {
      ...this.status,
      stopReasons: [...this.status.stopReasons],
      warnings: [...this.status.warnings],
      feeders: this.status.feeders.map((f) => ({ ...f })),
    };
  }

  async readCounters(): Promise<PrinterCounters> {
    return { ...this.counters };
  }

  insertCard = this.recorded("insertCard");
  moveToContactStation = this.recorded("moveToContactStation");
  printSides = this.recorded("printSides");
  encodeMagstripe = this.recorded("encodeMagstripe");
  presentCard = this.recorded("presentCard");
  rejectCard = this.recorded("rejectCard");
  captureCard = this.recorded("captureCard");
  runCleaning = this.recorded("runCleaning");
  resetPrinter = this.recorded("resetPrinter");
  printTestCard = this.recorded("printTestCard");
  ejectCard = this.recorded("ejectCard");

  async waitForCardTaken(): Promise<boolean> {
    this.commands.push("waitForCardTaken");
    return true;
  }

  private recorded(name: string): () => Promise<void> {
    return async () => {
      this.commands.push(name);
    };
  }
}

/** Lets every promise callback queued so far (and the ones they queue) run. */
export async function settle(turns = 20): Promise<void> {
  for (let i = 0; i < turns; i++) await Promise.resolve();
}
