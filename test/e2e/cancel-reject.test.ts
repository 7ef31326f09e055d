import { afterEach, describe, expect, it } from "vitest";
import type { CancelResultMessage } from "../../agent/d1/messages.js";
import type { OutboxEvent } from "../../agent/store/job-store.js";
import { ManualClock } from "../../agent/util/clock.js";
import { blankImage } from "../../drivers/printer/card-image.js";
import { job, type Rig, STATION, startRig, statusesAtD1, until } from "../support/e2e.js";
import { FakePrinter, settle } from "../support/fake-printer.js";
import { pipelineRig } from "../support/pipeline-rig.js";

/**
 * Issue 14, finding 10b (docs/protocol.md, cancel): a cancel in production is answered `canceled`
 * only once the card is in the reject box, and D1 is never told CARD_PROD_CANCELED while the card is
 * still in the printer. If the reject fails, the answer and the job say so.
 */
describe("cancel in production: the card is rejected before CANCELED", () => {
  let rig: Rig;
  afterEach(async () => {
    await rig.close();
  });

  const pushOne = async () => {
    const j = job();
    expect(await rig.emulator.push(j, { station: STATION })).toMatchObject({ result: "accepted" });
    return j.operationId as string;
  };
  /** Where the card of the first job is, as the printer's own record says. */
  const firstCard = () => rig.printer.record[0]?.outcome;

  it("CARD_PROD_CANCELED and the `canceled` answer leave after the card reached the reject box", async () => {
    // Each printer command takes a while, so the reject is seen to take time too.
    rig = await startRig({ latency: { commandMs: 25, printMs: 50 } });
    const cardWhenCanceledEvent: Array<string | undefined> = [];
    rig.emulator.on("operation", (op) => {
      if (op.details.status === "CARD_PROD_CANCELED") cardWhenCanceledEvent.push(firstCard());
    });
    let cardWhenAnswered: string | undefined;
    const answered = new Promise<CancelResultMessage>((resolve) => {
      rig.printer.once("card-inserted", () => {
        void rig.emulator.cancel(id).then((answer) => {
          cardWhenAnswered = firstCard();
          resolve(answer);
        });
      });
    });
    const id = await pushOne();
    const answer = await answered;
    expect(answer).toMatchObject({
      result: "canceled",
      operation: { details: { status: "CARD_PROD_CANCELED" } },
    });
    expect(cardWhenAnswered).toBe("rejected");
    await rig.emulator.waitFor(() => rig.emulator.terminalCount(id) === 1, 10_000);
    expect(cardWhenCanceledEvent).toEqual(["rejected"]);
    expect(statusesAtD1(rig.emulator, id)).toEqual(["CARD_PROD_READY", "CARD_PROD_CANCELED"]);
    expect(rig.agent.store.get(id)).toMatchObject({ state: "CANCELED", reason: "ISSUER_CANCEL" });
  });

  it("the link drops while the card is being rejected: no answer on the new session, the status tells D1", async () => {
    rig = await startRig({ latency: { commandMs: 40, printMs: 80 } });
    const cancelSent = new Promise<void>((resolve) => {
      rig.printer.once("card-inserted", () => {
        // D1 stops waiting when the link goes: the cancel's promise rejects, and that is all.
        rig.emulator.cancel(id).catch(() => undefined);
        resolve();
      });
    });
    const id = await pushOne();
    await cancelSent;
    await rig.emulator.dropLink(STATION);
    await rig.emulator.waitForConnection(STATION, 10_000);
    await rig.emulator.waitFor(() => rig.emulator.terminalCount(id) === 1, 10_000);
    expect(statusesAtD1(rig.emulator, id)).toEqual(["CARD_PROD_READY", "CARD_PROD_CANCELED"]);
    // The answer to a requestId of the old session would be a protocol violation on the new one.
    expect(rig.emulator.violations).toEqual([]);
  });

  it("a reject that fails: answered refused / CARD_NOT_REJECTED, the job FAILED with the printer's reason, never CANCELED", async () => {
    rig = await startRig({ latency: { commandMs: 5, printMs: 50 } });
    const answered = new Promise<CancelResultMessage>((resolve) => {
      rig.printer.once("card-inserted", () => {
        // The reject box refuses the card once (`Ser` → HOPPER FULL).
        rig.printer.injectFault("hopper-full");
        void rig.emulator.cancel(id).then(resolve);
      });
    });
    const id = await pushOne();
    const answer = await answered;
    expect(answer).toMatchObject({
      result: "refused",
      reason: "CARD_NOT_REJECTED",
      operation: {
        status: "FAILED",
        details: { status: "CARD_PROD_EXCEPTION", reason: "REJECT_BOX_FULL" },
        errorCode: "REJECT_BOX_FULL",
      },
    });
    await rig.emulator.waitFor(() => rig.emulator.terminalCount(id) === 1, 10_000);
    expect(statusesAtD1(rig.emulator, id)).toEqual(["CARD_PROD_READY", "CARD_PROD_EXCEPTION"]);
    expect(rig.agent.store.get(id)).toMatchObject({ state: "FAILED", reason: "REJECT_BOX_FULL" });
    // The printer stopped on it; its recovery rejects the card once the box takes it, and the next
    // job is produced.
    await until(() => firstCard() === "rejected", 10_000, "the card rejected by the recovery");
    const next = await pushOne();
    await rig.emulator.waitFor(() => rig.emulator.terminalCount(next) === 1, 10_000);
    expect(rig.emulator.latest(next)?.details.status).toBe("CARD_PROD_DONE");
    // A repeated cancel is told the job finished; D1 never got a CANCELED for it.
    expect(await rig.emulator.cancel(id)).toMatchObject({ result: "refused", reason: "ALREADY_FINISHED" });
    expect(statusesAtD1(rig.emulator, id)).not.toContain("CARD_PROD_CANCELED");
  });
});

describe("cancel in PRODUCING before the insert (the panels still rendering)", () => {
  const cleanups: Array<() => void> = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });
  const { openStore, acceptJob, startedSupervisor, pipelineFor } = pipelineRig(cleanups);

  it("no card was taken: CANCELED at once, nothing to reject, the printer is free for the next job", async () => {
    const clock = new ManualClock();
    const store = openStore(clock);
    const printer = new FakePrinter();
    const supervisor = await startedSupervisor(printer, clock);
    const events: OutboxEvent[] = [];
    let release: (() => void) | undefined;
    let calls = 0;
    const pipeline = pipelineFor(store, printer, supervisor, clock, events, {
      render: async (_lines, area) => {
        // The first job's panels take until the test says so: the job is PRODUCING meanwhile.
        if (++calls === 1) {
          await new Promise<void>((r) => {
            release = r;
          });
        }
        return blankImage(area);
      },
    });
    const printing = { print: { front: [{ text: "JANE DOE", xMm: 8, yMm: 42, sizePt: 10 }] } };
    acceptJob(store, "op-cancel", printing);
    acceptJob(store, "op-next", printing);
    const ended = new Map<string, string>();
    const both = new Promise<void>((resolve) =>
      pipeline.on("finished", (id, state) => {
        ended.set(id, state);
        if (ended.size === 2) resolve();
      }),
    );
    pipeline.start();
    while (store.get("op-cancel")?.state !== "PRODUCING" || release === undefined) await settle();
    const outcome = pipeline.requestCancel("op-cancel");
    release();
    expect(await outcome).toEqual({ canceled: true, state: "CANCELED" });
    await both;
    await pipeline.stop();
    expect(ended.get("op-next")).toBe("DONE");
    expect(store.get("op-cancel")).toMatchObject({ state: "CANCELED", reason: "ISSUER_CANCEL" });
    expect(printer.commands.filter((c) => c === "insertCard")).toHaveLength(1);
    expect(printer.commands).not.toContain("rejectCard");
  });
});
