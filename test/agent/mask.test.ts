import { describe, expect, it } from "vitest";
import { luhnValid, maskPan, redactDeep, redactText } from "../../agent/log/mask.js";
import { captureLogs } from "../support/log-capture.js";

describe("PAN masking", () => {
  it("keeps first 6 and last 4", () => {
    expect(maskPan("5266092201416174")).toBe("526609******6174");
    expect(maskPan("5266 0922 0141 6174")).toBe("526609******6174");
  });

  it("checks Luhn", () => {
    expect(luhnValid("5266092201416174")).toBe(true);
    expect(luhnValid("5266092201416175")).toBe(false);
  });

  it("masks Luhn-valid runs and tracks anywhere in free text, leaves other numbers", () => {
    const text =
      "pan 5266092201416174 grouped 5266 0922 0141 6174 t2 ;5266092201416174=28042010000? t1 B5266092201416174^FATEHI/SUALEH^2804201000 order 1234567890123";
    const out = redactText(text);
    expect(out).not.toContain("5266092201416174");
    expect(out).not.toContain("5266 0922 0141 6174");
    expect(out).not.toContain("FATEHI/SUALEH");
    expect(out).toContain("526609******6174");
    expect(out).toContain("1234567890123"); // not Luhn-valid: an order number stays readable
  });

  it("never masks the digit groups of a UUID (operationIds must stay readable in logs)", () => {
    // 5562-6839-8560-8835-51 is 18 digits and passes Luhn: inside a UUID it is not a PAN.
    expect(luhnValid("556268398560883551")).toBe(true);
    const id = "0ece5562-6839-8560-8835-51c5e95a5e8a";
    expect(redactText(`operationId ${id}`)).toBe(`operationId ${id}`);
    expect(redactText("a 24-digit reference 000000005266092201416174 hides a PAN")).not.toContain(
      "5266092201416174",
    );
  });

  it("redacts deep inside objects and errors", () => {
    const out = JSON.stringify(
      redactDeep({ a: [{ b: "x 4111111111111111 y" }], e: new Error("pan 4111111111111111") }),
    );
    expect(out).not.toContain("4111111111111111");
  });

  it("the logger removes sensitive fields and masks card data in messages", () => {
    const { logger, text } = captureLogs();
    logger.info(
      { track2: "5266092201416174=2804201", nested: { pan: "5266092201416174" } },
      "card 5266092201416174",
    );
    logger.error({ err: new Error("bad 4111111111111111") }, "failed");
    expect(text()).not.toContain("5266092201416174");
    expect(text()).not.toContain("4111111111111111");
    expect(text()).toContain("[REDACTED]");
  });
});
