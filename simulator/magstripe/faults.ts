import type { TrackNumber } from "../../drivers/magstripe/iso7813.js";
import {
  type ArmedFaultOf,
  armFaultFrom,
  type FaultArming,
  type FaultRuleOf,
  fireArmedFaults,
} from "../common/fault-arming.js";

/**
 * What each injectable MSR206 fault does, on one screen. Same model as the printer's
 * (`simulator/printer/faults.ts`): a fault is armed for a number of firings (or persistently) and
 * fires when the encoder reaches the step it hits. A card is encoded with one write, so `count: N`
 * on a write-step fault means the next N cards.
 */

export type Msr206FaultName = "mag-write" | "mag-verify" | "bad-track" | "timeout" | "garbage" | "unplug";

/** A step is a command (`Msr206Command["kind"]`: `writeIso`, `readIso`, `test`, …) or `*` for any. */
export type Msr206Step = string;

export type Msr206FaultEffect =
  /** The write is answered status `1` (read/write error) and nothing is written. */
  | { kind: "write-error" }
  /** The write answers `0` but puts different data on the stripe (valid LRC): the read-back differs. */
  | { kind: "corrupt-write" }
  /** The write answers `0` but one track gets a wrong LRC: reads answer `ESC *` (bad) for it from now on. */
  | { kind: "damage-track" }
  /** No answer at all; the command is not executed. */
  | { kind: "swallow" }
  /** Random bytes (never ESC) before the answer; over HID also an orphan report before the message. */
  | { kind: "noise" }
  /** The device vanishes instead of answering; back after `replugAfterMs`. */
  | { kind: "unplug" };

export type Msr206FaultRule = FaultRuleOf<Msr206FaultEffect>;

export const MSR206_FAULT_RULES: Readonly<Record<Msr206FaultName, Msr206FaultRule>> = {
  "mag-write": { hits: ["writeIso"], effect: { kind: "write-error" } },
  "mag-verify": { hits: ["writeIso"], effect: { kind: "corrupt-write" } },
  "bad-track": { hits: ["writeIso"], effect: { kind: "damage-track" } },
  timeout: { hits: ["writeIso"], effect: { kind: "swallow" } },
  garbage: { hits: ["readIso"], effect: { kind: "noise" } },
  unplug: { hits: ["writeIso"], effect: { kind: "unplug" } },
};

export interface Msr206FaultOptions extends FaultArming {
  /** `unplug`: the device comes back after this long (simulator clock). Default 1000 ms. */
  replugAfterMs?: number;
  /**
   * `bad-track`: the track to damage. Default the first track the write puts on the stripe; a track
   * the write does not touch stays as it is.
   */
  track?: TrackNumber;
}

export type ArmedMsr206Fault = ArmedFaultOf<Msr206FaultName, Msr206FaultEffect, Msr206FaultOptions>;

export function armMsr206Fault(name: Msr206FaultName, options: Msr206FaultOptions = {}): ArmedMsr206Fault {
  return armFaultFrom(name, MSR206_FAULT_RULES[name], options);
}

/** The faults that fire at `step`, each consuming one firing. */
export function fireMsr206Faults(armed: ArmedMsr206Fault[], step: Msr206Step): ArmedMsr206Fault[] {
  return fireArmedFaults(armed, step);
}
