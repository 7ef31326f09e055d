import { describe, expect, it } from "vitest";
import { Backoff } from "../../agent/d1/backoff.js";

describe("Backoff", () => {
  it("doubles to a cap with full jitter, and resets", () => {
    const b = new Backoff({ initialMs: 500, maxMs: 4000, random: () => 1 });
    expect([1, 2, 3, 4, 5].map(() => b.next().delayMs)).toEqual([500, 1000, 2000, 4000, 4000]);
    b.reset();
    expect(b.next().delayMs).toBe(500);
    const jittered = new Backoff({ initialMs: 500, maxMs: 4000, random: () => 0.25 });
    expect(jittered.next().delayMs).toBe(125);
  });
});
