import { describe, expect, it } from "vitest";
import { ProductionJobSchema } from "../../agent/jobs/production-job.js";
import { makeSampleJob, makeSampleJobs, samplePan } from "../../agent/jobs/sample-jobs.js";
import { type JobValidation, validateJob } from "../../agent/jobs/validate.js";
import { luhnValid } from "../../agent/log/mask.js";

const STATION = "KIOSK-PS-101";

// shared/production-job.md, verbatim.
const EXAMPLE_JSON = `{
  "operationId": "01c5a05e-e197-11ec-8fea-0242ac120002",
  "operation": "PRODUCE",
  "cardId": "271b-6e47-8ec3-7f3f",
  "issuerId": "ISSUER-01",
  "issuerRequestId": "req-20250117-0001",
  "distributionChannel": "INSTANT",
  "persoStation": "KIOSK-PS-101",
  "requestedAt": "2025-01-17T06:28:02.492Z",
  "productionData": {
    "cardStock": "DEBIT-CLASSIC",
    "print": {
      "front": [
        { "text": "5266 0922 0141 6174", "xMm": 8, "yMm": 30, "sizePt": 14, "sensitive": true },
        { "text": "SUALEH FATEHI", "xMm": 8, "yMm": 42, "sizePt": 10 },
        { "text": "04/28", "xMm": 50, "yMm": 36, "sizePt": 9 }
      ],
      "back": [ { "text": "123", "xMm": 60, "yMm": 20, "sizePt": 8, "sensitive": true } ]
    },
    "magstripe": {
      "coercivity": "HICO",
      "track1": "B5266092201416174^FATEHI/SUALEH^2804201000000000000",
      "track2": "5266092201416174=2804201000000000000"
    },
    "chip": {
      "apdus": [
        { "command": "00A4040007A000000003101000", "expectSw": "9000" },
        { "command": "80E2000010DF0102030405060708090A0B0C0D0E0F10", "expectSw": "9000" }
      ]
    },
    "delivery": { "collectTimeoutSec": 60 }
  }
}`;

type Json = Record<string, unknown>;
const example = (): Json => JSON.parse(EXAMPLE_JSON) as Json;

function segments(path: string): Array<string | number> {
  return path.split(".").flatMap((s) => {
    const m = /^(\w+)\[(\d+)\]$/.exec(s);
    return m ? [m[1] as string, Number(m[2])] : [s];
  });
}
function setAt(root: Json, path: string, value: unknown): void {
  const segs = segments(path);
  let cur = root as Record<string | number, unknown>;
  for (const seg of segs.slice(0, -1)) cur = cur[seg] as Record<string | number, unknown>;
  const last = segs.at(-1) as string | number;
  if (value === undefined) delete cur[last];
  else cur[last] = value;
}

/** The example with one path set (`undefined` deletes the key). */
function withField(path: string, value: unknown): Json {
  const job = example();
  setAt(job, path, value);
  return job;
}

function dataException(v: JobValidation) {
  if (v.kind !== "data-exception") throw new Error(`expected data-exception, got ${v.kind}`);
  return v;
}

function expectField(job: unknown, error: string, errorCode = "FIELD_INVALID_FORMAT") {
  const v = dataException(validateJob(job, STATION));
  expect({ reason: v.reason, errorCode: v.errorCode, error: v.error }).toEqual({
    reason: errorCode,
    errorCode,
    error,
  });
  return v;
}

describe("valid jobs", () => {
  it("accepts the contract's example as written", () => {
    const v = validateJob(example(), STATION);
    expect(v.kind).toBe("valid");
    if (v.kind !== "valid") return;
    expect(v.job.productionData.magstripe?.coercivity).toBe("HICO");
    expect(v.job.productionData.print?.front).toHaveLength(3);
  });

  it("applies defaults: operation, distributionChannel, coercivity, empty print side", () => {
    const job = example();
    delete job.operation;
    delete job.distributionChannel;
    const pd = job.productionData as Json;
    delete (pd.magstripe as Json).coercivity;
    delete (pd.print as Json).back;
    delete pd.delivery;
    const v = validateJob(job, STATION);
    if (v.kind !== "valid") throw new Error(v.kind);
    expect(v.job.operation).toBe("PRODUCE");
    expect(v.job.distributionChannel).toBe("INSTANT");
    expect(v.job.productionData.magstripe?.coercivity).toBe("HICO");
    expect(v.job.productionData.print?.back).toEqual([]);
    expect(v.job.productionData.delivery).toBeUndefined();
  });

  it("accepts LOCO, lower-case hex, and each of print/magstripe/chip alone", () => {
    expect(validateJob(withField("productionData.magstripe.coercivity", "LOCO"), STATION).kind).toBe("valid");
    expect(
      validateJob(withField("productionData.chip.apdus[0].command", "00a4040007a000000003101000"), STATION)
        .kind,
    ).toBe("valid");
    for (const keep of ["print", "magstripe", "chip"]) {
      const job = example();
      const pd = job.productionData as Json;
      for (const k of ["print", "magstripe", "chip"]) if (k !== keep) delete pd[k];
      expect(validateJob(job, STATION).kind).toBe("valid");
    }
  });

  it("ignores (strips) unknown fields at every level", () => {
    const job = example();
    job.futureField = { nested: true };
    const pd = job.productionData as Json;
    pd.hologram = "GOLD";
    ((pd.print as Json).front as Json[])[0]!.font = "OCR-B";
    (pd.magstripe as Json).track4 = "x";
    const v = validateJob(job, STATION);
    if (v.kind !== "valid") throw new Error(v.kind);
    expect(v.job).not.toHaveProperty("futureField");
    expect(v.job.productionData).not.toHaveProperty("hologram");
    expect(v.job.productionData.print?.front[0]).not.toHaveProperty("font");
    expect(v.job.productionData.magstripe).not.toHaveProperty("track4");
  });

  it("accepts boundaries: 20 lines, corner positions, sizes 4 and 48, timeouts 5 and 600", () => {
    const line = { text: "X", xMm: 85.6, yMm: 54, sizePt: 48 };
    expect(validateJob(withField("productionData.print.front", Array(20).fill(line)), STATION).kind).toBe(
      "valid",
    );
    const corner = { text: "é漢字", xMm: 0, yMm: 0, sizePt: 4 };
    expect(validateJob(withField("productionData.print.back", [corner]), STATION).kind).toBe("valid");
    expect(validateJob(withField("productionData.delivery.collectTimeoutSec", 5), STATION).kind).toBe(
      "valid",
    );
    expect(validateJob(withField("productionData.delivery.collectTimeoutSec", 600), STATION).kind).toBe(
      "valid",
    );
    expect(validateJob(withField("requestedAt", "2025-01-17T15:28:02+09:00"), STATION).kind).toBe("valid");
    expect(validateJob(withField("operationId", "x".repeat(128)), STATION).kind).toBe("valid");
    expect(validateJob(withField("productionData.magstripe.track3", "0".repeat(104)), STATION).kind).toBe(
      "valid",
    );
  });
});

describe("refused (synchronous)", () => {
  const cases: Array<[string, unknown, string, string, boolean]> = [
    // [title, job, errorCode, error, has operationId]
    ["null", null, "FIELD_INVALID_FORMAT", "job", false],
    ["an array", [example()], "FIELD_INVALID_FORMAT", "job", false],
    ["a string", EXAMPLE_JSON, "FIELD_INVALID_FORMAT", "job", false],
    ["no operationId", withField("operationId", undefined), "FIELD_MISSING", "operationId", false],
    ["empty operationId", withField("operationId", ""), "FIELD_INVALID_FORMAT", "operationId", false],
    ["numeric operationId", withField("operationId", 42), "FIELD_INVALID_FORMAT", "operationId", false],
    ["null operationId", withField("operationId", null), "FIELD_INVALID_FORMAT", "operationId", false],
    [
      "129-char operationId",
      withField("operationId", "x".repeat(129)),
      "FIELD_INVALID_FORMAT",
      "operationId",
      false,
    ],
    [
      "operationId with a newline",
      withField("operationId", "a\nb"),
      "FIELD_INVALID_FORMAT",
      "operationId",
      false,
    ],
    ["no cardId", withField("cardId", undefined), "FIELD_MISSING", "cardId", true],
    ["empty cardId", withField("cardId", ""), "FIELD_INVALID_FORMAT", "cardId", true],
    ["operation CANCEL", withField("operation", "CANCEL"), "UNSUPPORTED_OPERATION", "operation", true],
    [
      "operation produce (case)",
      withField("operation", "produce"),
      "UNSUPPORTED_OPERATION",
      "operation",
      true,
    ],
    ["operation null", withField("operation", null), "FIELD_INVALID_FORMAT", "operation", true],
    [
      "CENTRAL channel",
      withField("distributionChannel", "CENTRAL"),
      "UNSUPPORTED_CHANNEL",
      "distributionChannel",
      true,
    ],
    [
      "numeric channel",
      withField("distributionChannel", 1),
      "FIELD_INVALID_FORMAT",
      "distributionChannel",
      true,
    ],
  ];
  for (const [title, job, errorCode, error, hasId] of cases) {
    it(title, () => {
      const v = validateJob(job, STATION);
      const expected: Record<string, unknown> = { kind: "refused", errorCode, error };
      if (hasId) expected.operationId = "01c5a05e-e197-11ec-8fea-0242ac120002";
      expect(v).toEqual(expected);
    });
  }

  it("checks refusal rules before the station", () => {
    const job = withField("distributionChannel", "CENTRAL");
    delete job.persoStation;
    expect(validateJob(job, STATION).kind).toBe("refused");
  });
});

describe("persoStation", () => {
  const header = {
    operationId: "01c5a05e-e197-11ec-8fea-0242ac120002",
    cardId: "271b-6e47-8ec3-7f3f",
    issuerRequestId: "req-20250117-0001",
  };

  it("absent → MISSING_SATELLITEUID", () => {
    expect(validateJob(withField("persoStation", undefined), STATION)).toEqual({
      kind: "data-exception",
      header,
      reason: "MISSING_SATELLITEUID",
      errorCode: "FIELD_MISSING",
      error: "persoStation",
    });
  });

  it("null or empty → MISSING_SATELLITEUID too", () => {
    for (const v of [null, ""]) {
      expect(dataException(validateJob(withField("persoStation", v), STATION)).reason).toBe(
        "MISSING_SATELLITEUID",
      );
    }
  });

  it("another station → WRONG_SATELLITEUID", () => {
    expect(validateJob(example(), "KIOSK-PS-202")).toEqual({
      kind: "data-exception",
      header,
      reason: "WRONG_SATELLITEUID",
      errorCode: "FIELD_INVALID_VALUE",
      error: "persoStation",
    });
    // Station ids are compared exactly.
    expect(dataException(validateJob(withField("persoStation", "kiosk-ps-101"), STATION)).reason).toBe(
      "WRONG_SATELLITEUID",
    );
  });

  it("not a string → WRONG_SATELLITEUID, FIELD_INVALID_FORMAT", () => {
    const v = dataException(validateJob(withField("persoStation", 101), STATION));
    expect([v.reason, v.errorCode]).toEqual(["WRONG_SATELLITEUID", "FIELD_INVALID_FORMAT"]);
  });

  it("is checked before every other data field", () => {
    const job = withField("productionData", undefined);
    delete job.persoStation;
    expect(dataException(validateJob(job, STATION)).reason).toBe("MISSING_SATELLITEUID");
  });

  it("header leaves out an invalid issuerRequestId, which is then the reported field", () => {
    const v = dataException(validateJob(withField("issuerRequestId", 7), STATION));
    expect(v.header).toEqual({ operationId: header.operationId, cardId: header.cardId });
    expect(v.error).toBe("issuerRequestId");
  });
});

describe("data-exception per field", () => {
  const T1 = "productionData.magstripe.track1";
  const T2 = "productionData.magstripe.track2";
  const T3 = "productionData.magstripe.track3";
  const cases: Array<[string, string, unknown, string?, string?]> = [
    // [title, path set, value, reported path (default: the same), errorCode (default INVALID_FORMAT)]
    ["empty issuerId", "issuerId", "", undefined],
    ["requestedAt not ISO", "requestedAt", "17/01/2025", undefined],
    ["requestedAt without offset", "requestedAt", "2025-01-17T06:28:02", undefined],
    ["no productionData", "productionData", undefined, undefined, "FIELD_MISSING"],
    ["productionData a string", "productionData", "x", undefined],
    ["empty cardStock", "productionData.cardStock", "", undefined],
    ["print a list", "productionData.print", [], undefined],
    ["line text empty", "productionData.print.front[1].text", "", undefined],
    ["line text blank", "productionData.print.front[1].text", "   ", undefined],
    ["line text 65 chars", "productionData.print.front[1].text", "A".repeat(65), undefined],
    ["line text with newline", "productionData.print.front[1].text", "A\nB", undefined],
    ["line text missing", "productionData.print.front[1].text", undefined, undefined, "FIELD_MISSING"],
    ["xMm negative", "productionData.print.front[0].xMm", -1, undefined],
    ["xMm past card width", "productionData.print.front[0].xMm", 85.7, undefined],
    ["xMm a string", "productionData.print.front[0].xMm", "8", undefined],
    ["yMm past card height", "productionData.print.back[0].yMm", 54.1, undefined],
    ["sizePt 3", "productionData.print.front[2].sizePt", 3, undefined],
    ["sizePt 49", "productionData.print.front[2].sizePt", 49, undefined],
    ["sensitive a string", "productionData.print.back[0].sensitive", "yes", undefined],
    [
      "21 lines",
      "productionData.print.back",
      Array(21).fill({ text: "X", xMm: 1, yMm: 1, sizePt: 8 }),
      undefined,
    ],
    ["print with no line", "productionData.print", { front: [], back: [] }, undefined, "FIELD_MISSING"],
    ["coercivity MEDIUM", "productionData.magstripe.coercivity", "MEDIUM", undefined],
    [
      "magstripe without track",
      "productionData.magstripe",
      { coercivity: "HICO" },
      undefined,
      "FIELD_MISSING",
    ],
    ["track 1 lower case", T1, "B5266092201416174^fatehi/sualeh^2804201000000000000", undefined],
    ["track 1 with sentinels", T1, "%B5266092201416174^FATEHI/SUALEH^2804201000000000000?", undefined],
    ["track 1 77 chars", T1, `B5266092201416174^FATEHI/SUALEH^2804201${"0".repeat(39)}`, undefined],
    ["track 1 format code", T1, "A5266092201416174^FATEHI/SUALEH^2804201000000000000", undefined],
    ["track 1 one-letter name", T1, "B5266092201416174^F^2804201000000000000", undefined],
    ["track 1 Luhn", T1, "B5266092201416175^FATEHI/SUALEH^2804201000000000000", undefined],
    ["track 1 month 13", T1, "B5266092201416174^FATEHI/SUALEH^2813201000000000000", undefined],
    ["track 1 short service code", T1, "B5266092201416174^FATEHI/SUALEH^280420", undefined],
    ["track 2 a letter", T2, "5266092201416174=2804201A00000000000", undefined],
    ["track 2 38 chars", T2, "5266092201416174=280420100000000000000", undefined],
    ["track 2 with sentinels", T2, ";5266092201416174=2804201000000000000?", undefined],
    ["track 2 Luhn", T2, "5266092201416175=2804201000000000000", undefined],
    ["track 2 PAN 12 digits", T2, "526609220141=2804201000000000000", undefined],
    ["track 2 PAN 20 digits", T2, "52660922014161740000=2804201", undefined],
    ["track 2 no separator", T2, "52660922014161742804201000000000000", undefined],
    ["track 2 month 00", T2, "5266092201416174=2800201000000000000", undefined],
    ["track 2 PAN differs from track 1", T2, "4111111111111111=2804201000000000000", undefined],
    ["track 2 expiry differs from track 1", T2, "5266092201416174=2805201000000000000", undefined],
    ["track 2 service code differs", T2, "5266092201416174=2804101000000000000", undefined],
    ["track 2 empty", T2, "", undefined],
    ["track 2 null", T2, null, undefined],
    ["track 3 a letter", T3, "0123=A", undefined],
    ["track 3 105 chars", T3, "0".repeat(105), undefined],
    ["chip without apdus", "productionData.chip.apdus", undefined, undefined, "FIELD_MISSING"],
    ["chip with empty apdus", "productionData.chip.apdus", [], undefined, "FIELD_MISSING"],
    ["command odd length", "productionData.chip.apdus[1].command", "80E20000A", undefined],
    ["command not hex", "productionData.chip.apdus[0].command", "00A4040G", undefined],
    ["command 3 bytes", "productionData.chip.apdus[0].command", "00A404", undefined],
    ["command 262 bytes", "productionData.chip.apdus[0].command", "00".repeat(262), undefined],
    ["expectSw 2 digits", "productionData.chip.apdus[0].expectSw", "90", undefined],
    ["expectSw not hex", "productionData.chip.apdus[0].expectSw", "90XX", undefined],
    ["expectSw missing", "productionData.chip.apdus[1].expectSw", undefined, undefined, "FIELD_MISSING"],
    ["timeout 4", "productionData.delivery.collectTimeoutSec", 4, undefined],
    ["timeout 601", "productionData.delivery.collectTimeoutSec", 601, undefined],
    ["timeout fractional", "productionData.delivery.collectTimeoutSec", 30.5, undefined],
    ["timeout a string", "productionData.delivery.collectTimeoutSec", "60", undefined],
  ];
  for (const [title, path, value, reported, errorCode] of cases) {
    it(title, () => {
      expectField(withField(path, value), reported ?? path, errorCode);
    });
  }

  it("boundary commands: 4 bytes and 261 bytes are accepted", () => {
    expect(validateJob(withField("productionData.chip.apdus[0].command", "00A40400"), STATION).kind).toBe(
      "valid",
    );
    expect(
      validateJob(withField("productionData.chip.apdus[0].command", "00".repeat(261)), STATION).kind,
    ).toBe("valid");
  });

  it("none of print, magstripe, chip → FIELD_MISSING on productionData", () => {
    const job = example();
    const pd = job.productionData as Json;
    delete pd.print;
    delete pd.magstripe;
    delete pd.chip;
    expectField(job, "productionData", "FIELD_MISSING");
  });

  it("reports the first failing field in document order", () => {
    const faults: Array<[string, unknown]> = [
      ["issuerId", ""],
      ["requestedAt", "yesterday"],
      ["productionData.cardStock", ""],
      ["productionData.print.front[2].xMm", -3],
      ["productionData.print.front[2].yMm", -3],
      ["productionData.print.back[0].sizePt", 100],
      ["productionData.magstripe.track1", "bad"],
      ["productionData.magstripe.track2", "bad"],
      ["productionData.chip.apdus[0].command", "X"],
      ["productionData.chip.apdus[1].expectSw", "X"],
      ["productionData.delivery.collectTimeoutSec", 0],
    ];
    // With faults k..end applied, fault k is the one reported.
    for (let k = 0; k < faults.length; k++) {
      const job = example();
      for (const [path, value] of faults.slice(k)) setAt(job, path, value);
      expect(dataException(validateJob(job, STATION)).error).toBe(faults[k]?.[0]);
    }
  });

  it("own track rules come before the track 1 / track 2 comparison", () => {
    const job = withField(T2, "4111111111111111=2804201000000000000");
    ((job.productionData as Json).magstripe as Json as Json).track3 = "X";
    expect(dataException(validateJob(job, STATION)).error).toBe(T3);
  });

  it("the 'nothing to produce' rule comes after every field rule", () => {
    const job = example();
    const pd = job.productionData as Json;
    delete pd.print;
    delete pd.magstripe;
    delete pd.chip;
    (pd.delivery as Json).collectTimeoutSec = 1;
    expect(dataException(validateJob(job, STATION)).error).toBe("productionData.delivery.collectTimeoutSec");
  });
});

describe("robustness", () => {
  it("never throws, whatever the input", () => {
    const odd: unknown[] = [
      undefined,
      0,
      true,
      Symbol("x"),
      () => 1,
      new Date(),
      Object.create(null),
      { ...example(), productionData: Object.create(null) },
      { ...example(), productionData: { print: { front: [null], back: "x" } } },
      { ...example(), productionData: { magstripe: { track1: 5, track2: ["x"], track3: {} } } },
      { ...example(), productionData: { chip: { apdus: [1, "x", { command: null }] } } },
      JSON.parse('{"operationId":"a","cardId":"b","persoStation":"KIOSK-PS-101","__proto__":{"x":1}}'),
    ];
    for (const raw of odd) {
      // The catch-all outcome would hide a bug in the rules: none of these may need it.
      expect(validateJob(raw, STATION)).not.toMatchObject({ errorCode: "VALIDATION_FAILED" });
    }
  });
});

describe("no secret in any result", () => {
  const PAN = "4111111111111111";
  const CSC = "987";
  const T1 = `B${PAN}^SECRET/HOLDER^2912201123456789012`;
  const T2 = `${PAN}=2912201123456789012`;
  const T3 = "0112345678901234567890=9876543210";
  const APDU = "80E2800013DEADBEEFCAFEBABE0011223344556677889900";
  const secrets = [
    PAN,
    PAN.slice(0, 12),
    CSC,
    "SECRET/HOLDER",
    T1,
    T2,
    T3,
    "DEADBEEF",
    "CAFEBABE",
    "4111 1111",
  ];

  function secretJob(): Json {
    return {
      ...example(),
      productionData: {
        cardStock: "DEBIT-CLASSIC",
        print: {
          front: [{ text: "4111 1111 1111 1111", xMm: 8, yMm: 30, sizePt: 14, sensitive: true }],
          back: [{ text: CSC, xMm: 60, yMm: 20, sizePt: 8, sensitive: true }],
        },
        magstripe: { track1: T1, track2: T2, track3: T3 },
        chip: { apdus: [{ command: APDU, expectSw: "9000" }] },
      },
    };
  }

  // One mutation per rule that sees a secret, plus a few where the secret sits in the wrong field.
  const MS = "productionData.magstripe";
  const mutations: Array<[string, unknown] | null> = [
    null,
    [`${MS}.track1`, `${T1}a`],
    [`${MS}.track2`, `${T2}A`],
    [`${MS}.track2`, `${T2}${"0".repeat(20)}`],
    [`${MS}.track2`, T2.replace(PAN, "4111111111111112")],
    [`${MS}.track2`, T2.replace(PAN, "5266092201416174")],
    [`${MS}.track3`, `${T3}X`],
    [`${MS}.coercivity`, PAN],
    ["productionData.chip.apdus[0].command", `${APDU}0`],
    ["productionData.chip.apdus[0].expectSw", APDU],
    ["productionData.print.front[0].text", `${PAN}\n${CSC}${"x".repeat(60)}`],
    ["productionData.print.back[0].xMm", CSC],
    ["productionData.cardStock", { pan: PAN }],
    ["requestedAt", T2],
    ["issuerId", `${T1}\n`],
    ["persoStation", PAN],
    ["persoStation", { track2: T2 }],
    ["distributionChannel", T1],
    ["operation", T2],
    ["cardId", { pan: PAN }],
    ["operationId", [T1, T2]],
  ];

  it("stringified results (and zod's own errors) never contain card data", () => {
    for (const mutation of mutations) {
      const job = secretJob();
      if (mutation) setAt(job, mutation[0], mutation[1]);
      const v = validateJob(job, STATION);
      // Only the unmutated job is valid, so every mutation exercises a failing rule.
      expect(v.kind === "valid").toBe(mutation === null);
      if (v.kind === "valid") continue;
      const text = JSON.stringify(v);
      for (const s of secrets) expect(text).not.toContain(s);
      const zod = ProductionJobSchema.safeParse(job);
      if (!zod.success) {
        const zodText = JSON.stringify(zod.error.issues) + String(zod.error.message);
        for (const s of secrets) expect(zodText).not.toContain(s);
      }
    }
  });
});

describe("sample jobs", () => {
  it("all validate, with or without chip, for the default and another station", () => {
    for (let i = 0; i < 300; i++) {
      const job = makeSampleJob(i, { withChip: i % 2 === 0 });
      const v = validateJob(job, STATION);
      if (v.kind !== "valid") throw new Error(`sample ${i}: ${JSON.stringify(v)}`);
      expect(v.job).toEqual(job);
    }
    const other = makeSampleJob(5, { station: "KIOSK-PS-202", collectTimeoutSec: 5, withChip: true });
    const v = validateJob(other, "KIOSK-PS-202");
    expect(v.kind).toBe("valid");
    expect(other.productionData.delivery?.collectTimeoutSec).toBe(5);
    expect(other.productionData.chip?.apdus).toHaveLength(2);
    expect(makeSampleJob(5).productionData.chip).toBeUndefined();
  });

  it("large indexes still validate", () => {
    for (const i of [999_999_999, 123_456_789, 10 ** 8]) {
      expect(validateJob(makeSampleJob(i, { withChip: true }), STATION).kind).toBe("valid");
    }
    expect(() => makeSampleJob(-1)).toThrow(RangeError);
    expect(() => makeSampleJob(1.5)).toThrow(RangeError);
  });

  it("PANs are Luhn-valid and unique; ids unique per run, stable for a given runId", () => {
    const pans = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const pan = samplePan(i);
      expect(luhnValid(pan)).toBe(true);
      pans.add(pan);
    }
    expect(pans.size).toBe(1000);

    const a = makeSampleJobs(50, { runId: "run-a" });
    const b = makeSampleJobs(50, { runId: "run-b" });
    const ids = new Set([...a, ...b].map((j) => j.operationId));
    expect(ids.size).toBe(100);
    for (const id of ids)
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(makeSampleJob(3, { runId: "run-a" }).operationId).toBe(a[3]?.operationId);
    expect(new Set(a.map((j) => j.cardId)).size).toBe(50);
    // Without a runId, two calls in one process share the process's run.
    expect(makeSampleJob(7).operationId).toBe(makeSampleJob(7).operationId);
  });

  it("front shows the grouped PAN (sensitive), name and MM/YY; back the CSC (sensitive); expiry in the future", () => {
    const now = new Date("2025-06-15T00:00:00Z");
    const job = makeSampleJob(0, { now });
    const pan = samplePan(0);
    const [panLine, nameLine, expLine] = job.productionData.print?.front ?? [];
    expect(panLine?.text.replace(/ /g, "")).toBe(pan);
    expect(panLine?.text).toMatch(/^\d{4} \d{4} \d{4} \d{4}$/);
    expect(panLine?.sensitive).toBe(true);
    expect(nameLine?.sensitive).toBeUndefined();
    expect(job.productionData.print?.back[0]?.sensitive).toBe(true);
    expect(job.productionData.print?.back[0]?.text).toMatch(/^\d{3}$/);
    const t2 = job.productionData.magstripe?.track2 ?? "";
    const yymm = t2.slice(pan.length + 1, pan.length + 5);
    expect(Number(yymm.slice(0, 2)) + 2000).toBeGreaterThan(2025);
    expect(expLine?.text).toBe(`${yymm.slice(2)}/${yymm.slice(0, 2)}`);
    expect(job.productionData.magstripe?.track1).toContain(`B${pan}^`);
  });
});
