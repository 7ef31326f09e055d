import { describe, expect, it } from "vitest";
import { SENSITIVE_PATHS } from "../../agent/log/logger.js";
import { maskPan, redactText } from "../../agent/log/mask.js";
import { watchedLogger } from "./rig.js";

const PAN = "5266090000000009"; // Luhn-valid test PAN
const PAN19 = "6262090000000000001"; // 19 digits, Luhn-valid
// Not Luhn-valid, and no 13–19 digit window of it is either (5266090000000008 fails the first test but
// holds the Luhn-valid 13-digit 2660900000000, so it is now masked: every window is checked).
const NOT_LUHN = "5266012000000008";
const TRACK2 = `${PAN}=29012010000000000000`;
const TRACK1 = `B${PAN}^DOE/JOHN^2901201000000000000000`;

/** One log call, its JSON line as text. */
function logged(call: (log: ReturnType<typeof watchedLogger>["logger"]) => void): string {
  const w = watchedLogger("trace");
  call(w.logger);
  w.logger.flush();
  expect(w.lines).toHaveLength(1);
  return w.text();
}

describe("log redaction: the last line of defence", () => {
  it("masks a Luhn-valid 13–19 digit run in any field, at any depth, as first 6 / last 4", () => {
    const line = logged((l) =>
      l.info(
        {
          note: `card ${PAN} seen`,
          deep: { a: { b: { c: [`x${PAN}y`, { s: PAN19 }] } } },
          grouped: "5266 0900 0000 0009",
          dashed: "5266-0900-0000-0009",
          short13: "4222222222222",
        },
        "fields",
      ),
    );
    expect(line).not.toContain(PAN);
    expect(line).not.toContain(PAN19);
    expect(line).not.toContain("5266 0900 0000 0009");
    expect(line).not.toContain("5266-0900-0000-0009");
    expect(line).not.toContain("4222222222222");
    expect(line).toContain(`card ${maskPan(PAN)} seen`);
    expect(line).toContain(maskPan(PAN19));
    expect(maskPan(PAN)).toBe("526609******0009");
  });

  it("leaves digit runs that are not card numbers alone", () => {
    const line = logged((l) =>
      l.info({ ref: NOT_LUHN, phone: "0049 30 1234567", epochMs: "1795441046380" }, "ids"),
    );
    expect(line).toContain(NOT_LUHN);
    expect(line).toContain("0049 30 1234567");
  });

  it("masks track-like strings, with or without sentinels, in fields and in the message", () => {
    const line = logged((l) =>
      l.warn({ raw: `;${TRACK2}?`, t1: `%${TRACK1}?`, bare: TRACK2 }, `read back ${TRACK2} and ${TRACK1}`),
    );
    for (const secret of [PAN, TRACK2, TRACK1, "DOE/JOHN^2901"]) expect(line).not.toContain(secret);
    expect(line).toContain('"raw":"[TRACK2]"');
    expect(line).toContain('"t1":"[TRACK1]"');
    expect(line).toContain('"msg":"read back [TRACK2] and [TRACK1]"');
    expect(redactText(`x ${TRACK2.slice(0, 21)} y`)).toBe("x [TRACK2] y");
  });

  it("masks errors: message, cause and an Error logged without a message", () => {
    const line = logged((l) => l.error(new Error(`declined ${PAN}`)));
    expect(line).not.toContain(PAN);
    expect(line).toContain(`"msg":"declined ${maskPan(PAN)}"`);
    const withErr = logged((l) => l.error({ err: new Error(`bad track ${TRACK2}`) }, "failed"));
    expect(withErr).not.toContain(PAN);
    expect(withErr).toContain("[TRACK2]");
  });

  it("masks printf-style arguments and child bindings", () => {
    expect(logged((l) => l.info("pan %s, obj %o", PAN, { t: TRACK2 }))).not.toContain(PAN);
    const w = watchedLogger();
    w.logger.child({ context: `job for ${PAN}` }).info("bound");
    expect(w.text()).not.toContain(PAN);
    expect(w.text()).toContain(maskPan(PAN));
  });

  it("censors sensitive field names wherever they are, in any case", () => {
    const line = logged((l) =>
      l.info(
        {
          pan: PAN,
          csc: "123",
          job: { productionData: { print: [{ text: "123" }] } },
          deep: {
            er: { still: { csc: "456", apdus: [{ command: "00A4040007A000000004101000" }], Token: "t0k3n" } },
          },
          Authorization: "Bearer s3cr3t",
          headers: { authorization: "Bearer s3cr3t" },
        },
        "names",
      ),
    );
    for (const secret of [PAN, '"123"', '"456"', "00A4040007A000000004101000", "t0k3n", "s3cr3t"]) {
      expect(line).not.toContain(secret);
    }
    expect(line).toContain('"csc":"[REDACTED]"');
    expect(line).toContain('"Authorization":"[REDACTED]"');
  });

  it("keeps the fields operations need: masked PAN, ids, reasons, states", () => {
    const line = logged((l) =>
      l.info(
        {
          operationId: "3be028af-253c-8021-8afe-406b9057fead",
          maskedPan: "526609******0009",
          reason: "MAG_VERIFY",
          state: "idle",
        },
        "useful",
      ),
    );
    expect(JSON.parse(line)).toMatchObject({
      operationId: "3be028af-253c-8021-8afe-406b9057fead",
      maskedPan: "526609******0009",
      reason: "MAG_VERIFY",
      state: "idle",
    });
  });

  it("SENSITIVE_PATHS: `data` is censored wholesale at depth 1–2 (raw frames and bytes); no agent log call uses it", () => {
    expect(SENSITIVE_PATHS).toEqual(
      expect.arrayContaining(["data", "*.data", "productionData", "*.productionData"]),
    );
    expect(logged((l) => l.info({ data: { state: "idle" } }, "x"))).toContain('"data":"[REDACTED]"');
  });
});
