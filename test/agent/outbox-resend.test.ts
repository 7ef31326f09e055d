import { EventEmitter } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import type { D1Link } from "../../agent/d1/link.js";
import type { AgentToD1 } from "../../agent/d1/messages.js";
import { silentLogger } from "../../agent/log/logger.js";
import { OutboxSender } from "../../agent/outbox/sender.js";
import { ManualClock } from "../../agent/util/clock.js";
import { pipelineRig } from "../support/pipeline-rig.js";

/**
 * Issue 14, finding 10a (docs/protocol.md, section 4): an unacknowledged event is re-sent
 * `resendAfterMs` after its OWN send. The outside D1 saw a DONE re-sent 59 s after it was sent with a
 * 30 s setting: the timer was armed for the READY sent a second earlier and, when it fired, the DONE
 * was not due yet, so it waited for the next period.
 */
describe("outbox resend timing", () => {
  const cleanups: Array<() => void> = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });
  const { openStore, acceptJob } = pipelineRig(cleanups);

  const RESEND_MS = 30_000;

  function rig() {
    const clock = new ManualClock();
    const store = openStore(clock);
    let elapsed = 0;
    const link = Object.assign(new EventEmitter(), {
      isUp: true,
      sent: [] as Array<{ at: number; eventIds: string[] }>,
      send(message: AgentToD1): boolean {
        if (message.type === "notify") link.sent.push({ at: elapsed, eventIds: message.eventIds });
        return true;
      },
    });
    const sender = new OutboxSender({
      store,
      link: link as unknown as D1Link,
      clock,
      logger: silentLogger,
      resendAfterMs: RESEND_MS,
    });
    cleanups.push(() => sender.stop());
    /** Advances in 1 s steps, so every send is seen at the second it happens. */
    const wait = (ms: number) => {
      for (let t = 0; t < ms; t += 1_000) {
        elapsed += 1_000;
        clock.advance(1_000);
      }
    };
    /** When each event was sent, in seconds since the start. */
    const sendsOf = (eventId: string) =>
      link.sent.filter((s) => s.eventIds.includes(eventId)).map((s) => s.at / 1_000);
    return { clock, store, link, sender, wait, sendsOf };
  }

  it("an event sent 1 s after another is re-sent 30 s after its own send, not 59 s", () => {
    const { store, link, sender, wait, sendsOf } = rig();
    acceptJob(store, "op-ready");
    sender.flush();
    wait(1_000);
    acceptJob(store, "op-done");
    sender.flush();
    const [ready, done] = link.sent.map((s) => s.eventIds[0]!);
    wait(65_000);
    expect(sendsOf(ready!)).toEqual([0, 30, 60]);
    expect(sendsOf(done!)).toEqual([1, 31, 61]);
  });

  it("each of several events spread over a period goes again exactly resendAfterMs after its send", () => {
    const { store, link, sender, wait, sendsOf } = rig();
    const sentAt = [0, 7, 18, 29];
    let last = 0;
    for (const [i, at] of sentAt.entries()) {
      wait((at - last) * 1_000);
      last = at;
      acceptJob(store, `op-${i}`);
      sender.flush();
    }
    const ids = link.sent.map((s) => s.eventIds[0]!);
    wait((89 - last) * 1_000);
    for (const [i, at] of sentAt.entries()) {
      expect(sendsOf(ids[i]!), `event sent at ${at} s`).toEqual([at, at + 30, at + 60]);
    }
  });

  it("an ack of the oldest event leaves the others on their own schedule; all acked, nothing more", () => {
    const { store, link, sender, wait, sendsOf } = rig();
    acceptJob(store, "op-a");
    sender.flush();
    wait(10_000);
    acceptJob(store, "op-b");
    sender.flush();
    const [a, b] = link.sent.map((s) => s.eventIds[0]!);
    wait(5_000);
    sender.onAck([a!]);
    wait(40_000);
    expect(sendsOf(a!)).toEqual([0]);
    expect(sendsOf(b!)).toEqual([10, 40]);
    sender.onAck([b!]);
    const before = link.sent.length;
    wait(120_000);
    expect(link.sent.length).toBe(before);
  });

  it("a reconnect re-sends at once, and the resend runs from that send", () => {
    const { store, link, sender, wait, sendsOf } = rig();
    acceptJob(store, "op-a");
    sender.flush();
    const [a] = link.sent.map((s) => s.eventIds[0]!);
    wait(20_000);
    link.isUp = false;
    link.emit("down", "closed (1006)");
    wait(5_000);
    link.isUp = true;
    link.emit("up");
    wait(40_000);
    expect(sendsOf(a!)).toEqual([0, 25, 55]);
  });
});
