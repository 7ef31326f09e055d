/**
 * How every simulated device arms and fires its faults (printer, MSR206, …): a fault is armed for a
 * number of firings, or persistently, and fires when the device reaches a step it hits. Each device
 * keeps its own table of names → steps and effects; this is the bookkeeping they share.
 */
export interface FaultArming {
  /** Fires on the next N matching steps. Default 1 unless `persistent`. */
  count?: number;
  /** Fires every time until the device's faults are cleared. */
  persistent?: boolean;
  /** Overrides the steps the fault hits; `*` is every step. */
  at?: string;
}

export interface FaultRuleOf<Effect> {
  /** Steps it hits by default; `at` in the options overrides it. */
  hits: readonly string[];
  effect: Effect;
}

export interface ArmedFaultOf<Name extends string, Effect, Options extends FaultArming> {
  name: Name;
  effect: Effect;
  steps: readonly string[];
  remaining: number;
  persistent: boolean;
  options: Options;
}

export function armFaultFrom<Name extends string, Effect, Options extends FaultArming>(
  name: Name,
  rule: FaultRuleOf<Effect>,
  options: Options,
): ArmedFaultOf<Name, Effect, Options> {
  return {
    name,
    effect: rule.effect,
    steps: options.at === undefined ? rule.hits : [options.at],
    remaining: options.persistent ? Number.POSITIVE_INFINITY : (options.count ?? 1),
    persistent: options.persistent ?? false,
    options,
  };
}

/** The faults that fire at `step`, each consuming one firing. */
export function fireArmedFaults<A extends { remaining: number; steps: readonly string[] }>(
  armed: A[],
  step: string,
): A[] {
  const fired: A[] = [];
  for (const fault of armed) {
    if (fault.remaining <= 0) continue;
    if (!fault.steps.includes(step) && !fault.steps.includes("*")) continue;
    fault.remaining--;
    fired.push(fault);
  }
  return fired;
}
