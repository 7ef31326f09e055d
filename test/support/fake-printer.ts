import type { PrinterDriver, PrinterStatus } from "../../drivers/printer/driver.js";

/**
 * A PrinterDriver stand-in for the supervisor and the pipeline without a serial line: status reads
 * answer `status` at once, and every card-moving command is recorded (a test that must not move a
 * card asserts `commands` stays empty).
 */
export class FakePrinter {
  readonly status: PrinterStatus = {
    feederEmpty: false,
    ribbonOut: false,
    coverOpen: false,
    cardPosition: "NONE",
  };
  readonly commands: string[] = [];
  isOpen = false;

  constructor(status: Partial<PrinterStatus> = {}) {
    Object.assign(this.status, status);
  }

  get driver(): PrinterDriver {
    return this as unknown as PrinterDriver;
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
    return { ...this.status };
  }

  insertCard = this.recorded("insertCard");
  moveToContactStation = this.recorded("moveToContactStation");
  printPanels = this.recorded("printPanels");
  presentCard = this.recorded("presentCard");
  rejectCard = this.recorded("rejectCard");
  retractToCaptureBin = this.recorded("retractToCaptureBin");
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
