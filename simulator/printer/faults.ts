import {
  type ArmedFaultOf,
  armFaultFrom,
  type FaultArming,
  type FaultRuleOf,
  fireArmedFaults,
} from "../common/fault-arming.js";

/**
 * What each injectable fault of the simulated Evolis does, on one screen. A fault is armed for a
 * number of firings (or persistently) and fires when the printer reaches the step it hits. Every
 * default step occurs once per card, so `count: N` means the next N cards. Every reply text is one
 * the public record shows an Evolis sending (docs/devices.md, "Error replies").
 */

export type PrinterFaultName =
  | "feeder-empty"
  | "ribbon-out"
  | "cover-open"
  | "card-jam"
  | "mag-write"
  | "mag-verify"
  | "not-taken"
  | "needs-cleaning"
  | "hopper-full"
  | "unknown-error"
  | "spurious-ok"
  | "power-cycle"
  | "timeout"
  | "garbage"
  | "unplug"
  | "slow";

/**
 * A step is a command name, except `print` (the `Se` that ends a print sequence with panels loaded)
 * and `present` (an `Se` that ejects the card to the mouth). `*` matches every command.
 */
export type PrinterStep = string;

export type FaultEffect =
  /** The command is refused with this reply and changes nothing, except a jam, which takes a card. */
  | { kind: "refuse"; reply: string }
  | { kind: "jam"; reply: string }
  /** `Smr` / `Rmb` answer data that differs from what was written. */
  | { kind: "corrupt-read-back" }
  /** The card reaches the mouth but the cardholder never takes it. */
  | { kind: "card-not-taken" }
  /** The printer is switched off and on: every setting back to its power-on value, then the command runs. */
  | { kind: "power-cycle" }
  /** No reply at all; the command is not executed. */
  | { kind: "swallow" }
  /**
   * Line noise ending in a terminator where the reply should be: the command ran but its answer was
   * lost in the noise. With `thenReply` the real reply follows the noise (a glitch the driver rides out).
   */
  | { kind: "noise" }
  /** The link vanishes instead of answering; the command is not executed. */
  | { kind: "unplug" }
  /** The reply comes `factor` times later than configured. */
  | { kind: "slow" };

export type FaultRule = FaultRuleOf<FaultEffect>;

export const FAULT_RULES: Readonly<Record<PrinterFaultName, FaultRule>> = {
  "feeder-empty": { hits: ["Si"], effect: { kind: "refuse", reply: "FEEDER EMPTY" } },
  "card-jam": { hits: ["Si"], effect: { kind: "jam", reply: "CARD JAM" } },
  "ribbon-out": { hits: ["print"], effect: { kind: "refuse", reply: "ERROR RIBBON" } },
  "cover-open": { hits: ["print"], effect: { kind: "refuse", reply: "COVER OPEN" } },
  "mag-write": { hits: ["Smw"], effect: { kind: "refuse", reply: "ERROR MAGN DATA" } },
  "mag-verify": { hits: ["Smr"], effect: { kind: "corrupt-read-back" } },
  "not-taken": { hits: ["present"], effect: { kind: "card-not-taken" } },
  "needs-cleaning": { hits: ["print"], effect: { kind: "refuse", reply: "ERR NEED CLEANING" } },
  "hopper-full": { hits: ["Ser"], effect: { kind: "refuse", reply: "HOPPER FULL" } },
  // A real error text with no row in the driver's table (Evolis sample code, CPrinter.analyzeAnswer).
  "unknown-error": { hits: ["Si"], effect: { kind: "refuse", reply: "ERROR FLASH UNKNOW" } },
  "spurious-ok": { hits: ["Rrt"], effect: { kind: "refuse", reply: "OK" } },
  "power-cycle": { hits: ["Si"], effect: { kind: "power-cycle" } },
  timeout: { hits: ["Si"], effect: { kind: "swallow" } },
  garbage: { hits: ["Si"], effect: { kind: "noise" } },
  unplug: { hits: ["Si"], effect: { kind: "unplug" } },
  slow: { hits: ["*"], effect: { kind: "slow" } },
};

export interface FaultOptions extends FaultArming {
  /** `unplug`: the device comes back after this long. Default 1000 ms. */
  replugAfterMs?: number;
  /** `slow`: latency multiplier. Default 10. A zero latency stays zero: configure one to see it. */
  factor?: number;
  /** `garbage`: send the real reply after the noise instead of losing it. */
  thenReply?: boolean;
  /** `feeder-empty` persistent: only this feeder reads empty (default every feeder). */
  feeder?: string;
}

export type ArmedFault = ArmedFaultOf<PrinterFaultName, FaultEffect, FaultOptions>;

export function armFault(name: PrinterFaultName, options: FaultOptions = {}): ArmedFault {
  return armFaultFrom(name, FAULT_RULES[name], options);
}

/** The faults that fire at `step`, each consuming one firing. */
export function fireFaults(armed: ArmedFault[], step: PrinterStep): ArmedFault[] {
  return fireArmedFaults(armed, step);
}
