import { describe, expect, it } from "vitest";
import { JOB_STATES, TERMINAL_STATES, TRANSITIONS, transitionEvent } from "../../agent/jobs/state-machine.js";

describe("job state machine", () => {
  it("terminal states have no way out", () => {
    for (const s of TERMINAL_STATES) expect(Object.keys(TRANSITIONS[s])).toEqual([]);
  });

  it("every state is reachable from NEW", () => {
    const seen = new Set<string>(["NEW"]);
    const queue = ["NEW"];
    while (queue.length) {
      for (const to of Object.keys(TRANSITIONS[queue.shift() as keyof typeof TRANSITIONS])) {
        if (!seen.has(to)) {
          seen.add(to);
          queue.push(to);
        }
      }
    }
    for (const s of JOB_STATES) expect(seen.has(s)).toBe(true);
  });

  it("emits D1 statuses only where D1 must hear them", () => {
    expect(transitionEvent("NEW", "READY")).toBe("CARD_PROD_READY");
    expect(transitionEvent("READY", "PRODUCING")).toBeNull();
    expect(transitionEvent("PRESENTED", "DONE")).toBe("CARD_PROD_DONE");
    expect(transitionEvent("PRESENTED", "FAILED")).toBe("CARD_PROD_EXCEPTION");
    expect(transitionEvent("DONE", "FAILED")).toBeUndefined();
    expect(transitionEvent("PRESENTED", "CANCELED")).toBeUndefined();
  });
});
