import {
  type ArmedFaultOf,
  armFaultFrom,
  type FaultArming,
  type FaultRuleOf,
  fireArmedFaults,
} from "../common/fault-arming.js";

/**
 * What each injectable printer fault does, on one screen. A fault is armed for a number of firings
 * (or persistently) and fires when the printer reaches the step it hits. Every default step occurs
 * once per card, so `count: N` means the next N cards.
 */

export type PrinterFaultName =
  | "feeder-empty"
  | "ribbon-out"
  | "cover-open"
  | "card-jam"
  | "mag-write"
  | "mag-verify"
  | "not-taken"
  | "timeout"
  | "garbage"
  | "unplug"
  | "slow";

/**
 * A step is a command name, except `print`: the `Se` that ends a print sequence (outside a sequence
 * `Se` is an eject, step `Se`). `*` matches every command.
 */
export type PrinterStep = string;

export type FaultEffect =
  /** The command is refused with this reply and changes nothing, except a jam, which takes a card. */
  | { kind: "refuse"; reply: string }
  | { kind: "jam"; reply: string }
  /** `Smr` answers data that differs from what was written. */
  | { kind: "corrupt-read-back" }
  /** `Seb` works but the cardholder never takes the card. */
  | { kind: "card-not-taken" }
  /** No reply at all; the command is not executed. */
  | { kind: "swallow" }
  /**
   * Line noise ending in CR where the reply should be: the command ran but its answer was lost in
   * the noise. With `thenReply` the real reply follows the noise (a glitch the driver rides out).
   */
  | { kind: "noise" }
  /** The port vanishes instead of answering; the command is not executed. */
  | { kind: "unplug" }
  /** The reply comes `factor` times later than configured. */
  | { kind: "slow" };

export type FaultRule = FaultRuleOf<FaultEffect>;

export const FAULT_RULES: Readonly<Record<PrinterFaultName, FaultRule>> = {
  "feeder-empty": { hits: ["Si"], effect: { kind: "refuse", reply: "FEEDER EMPTY" } },
  "card-jam": { hits: ["Si"], effect: { kind: "jam", reply: "CARD JAM" } },
  "ribbon-out": { hits: ["print"], effect: { kind: "refuse", reply: "ERR RIBBON" } },
  "cover-open": { hits: ["print"], effect: { kind: "refuse", reply: "COVER OPEN" } },
  "mag-write": { hits: ["Smw"], effect: { kind: "refuse", reply: "ERR WRITE" } },
  "mag-verify": { hits: ["Smr"], effect: { kind: "corrupt-read-back" } },
  "not-taken": { hits: ["Seb"], effect: { kind: "card-not-taken" } },
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
}

export type ArmedFault = ArmedFaultOf<PrinterFaultName, FaultEffect, FaultOptions>;

export function armFault(name: PrinterFaultName, options: FaultOptions = {}): ArmedFault {
  return armFaultFrom(name, FAULT_RULES[name], options);
}

/** The faults that fire at `step`, each consuming one firing. */
export function fireFaults(armed: ArmedFault[], step: PrinterStep): ArmedFault[] {
  return fireArmedFaults(armed, step);
}
