import { createHash, randomUUID } from "node:crypto";
import { containsCardData } from "../log/mask.js";
import type { ProductionJob } from "./production-job.js";

/**
 * Demo jobs: valid by construction (test/jobs/validate.test.ts checks that), with test PANs that no
 * real card uses. Everything that varies is derived from `i`, so a job can be regenerated from its
 * index when a demo run is replayed.
 */

export interface SampleJobOptions {
  station?: string;
  collectTimeoutSec?: number;
  withChip?: boolean;
  /**
   * Makes operation ids unique across runs. D1 de-duplicates on operationId, so two demo runs must
   * not reuse ids; the default is random per process. Pass one to get repeatable ids.
   */
  runId?: string;
  /** Expiry dates are set a few years after this. */
  now?: Date;
}

export const SAMPLE_STATION = "KIOSK-PS-101";
/** The card stock sample jobs ask for (shared/production-job.md's example); the demo's feeder holds it. */
export const SAMPLE_STOCK = "DEBIT-CLASSIC";
// Mastercard test range: the same BIN as the contract's example job.
const TEST_BIN = "526609";
const SERVICE_CODE = "201";
const MAX_INDEX = 999_999_999;

const processRunId = randomUUID();

const GIVEN = [
  "SUALEH",
  "AIKO",
  "MARTIN",
  "FATIMA",
  "JOHN",
  "ELENA",
  "KENJI",
  "AMARA",
  "LUCAS",
  "PRIYA",
  "OMAR",
  "SOFIA",
  "HIROSHI",
  "CHLOE",
  "DAVID",
  "YUKI",
];
const SURNAMES = [
  "FATEHI",
  "TANAKA",
  "DUBOIS",
  "RAHMAN",
  "YATES",
  "IVANOVA",
  "SATO",
  "OKAFOR",
  "SILVA",
  "SHARMA",
  "HADDAD",
  "ROSSI",
  "SUZUKI",
  "MARTIN",
  "COHEN",
  "NAKAMURA",
  "MULLER",
];

function luhnCheckDigit(partial: string): string {
  let sum = 0;
  // The check digit will sit to the right, so the rightmost digit of `partial` is doubled.
  let double = true;
  for (let k = partial.length - 1; k >= 0; k--) {
    let d = partial.charCodeAt(k) - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return String((10 - (sum % 10)) % 10);
}

/** 16-digit Luhn-valid test PAN, distinct for every index. */
export function samplePan(i: number): string {
  const partial = TEST_BIN + String(i).padStart(9, "0");
  return partial + luhnCheckDigit(partial);
}

function hex(input: string, length: number): string {
  return createHash("sha256").update(input).digest("hex").slice(0, length);
}

/**
 * Ids must pass the door's card-data screen (docs/validation.md): a hash-made id can, by chance,
 * hold a Luhn-valid run of 13+ digits (about 1 in 1000 for a 4-4-4-4 hex card id). Such an id is
 * derived again with a salt; the first (unsalted) one is kept whenever it is clean.
 */
function cleanId(make: (salt: string) => string): string {
  for (let n = 0; ; n++) {
    const id = make(n === 0 ? "" : `:${n}`);
    if (!containsCardData(id)) return id;
  }
}

/** UUID-shaped (version 8, "custom") so it looks like D1's ids, but derived from (runId, i). */
function sampleOperationId(runId: string, i: number): string {
  const h = hex(`op:${runId}:${i}`, 32).split("");
  h[12] = "8";
  h[16] = ((Number.parseInt(h[16] ?? "0", 16) & 0x3) | 0x8).toString(16);
  const s = h.join("");
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20, 32)}`;
}

function pad2(n: number): string {
  return String(n).padStart(2, "0");
}

/** BCD-packs digits, padding an odd count with F as EMV does for tag 5A. */
function bcd(digits: string): string {
  return digits.length % 2 === 0 ? digits : `${digits}F`;
}

function tlv(tag: string, valueHex: string): string {
  return tag + pad2Hex(valueHex.length / 2) + valueHex;
}

function pad2Hex(n: number): string {
  return n.toString(16).toUpperCase().padStart(2, "0");
}

export function makeSampleJob(i: number, opts: SampleJobOptions = {}): ProductionJob {
  if (!Number.isInteger(i) || i < 0 || i > MAX_INDEX) {
    throw new RangeError(`sample job index must be an integer 0..${MAX_INDEX}`);
  }
  const runId = opts.runId ?? processRunId;
  const now = opts.now ?? new Date();

  const pan = samplePan(i);
  const given = GIVEN[i % GIVEN.length] ?? "ALEX";
  const surname = SURNAMES[(i * 7 + Math.floor(i / GIVEN.length)) % SURNAMES.length] ?? "SMITH";
  const expYear = now.getUTCFullYear() + 3 + (i % 3);
  const expMonth = (i % 12) + 1;
  const yy = pad2(expYear % 100);
  const mm = pad2(expMonth);
  const csc = String((i * 37 + 123) % 1000).padStart(3, "0");
  // Discretionary data: PIN verification key index + value and padding, fixed width like real issuers.
  const disc = `${String(i % 10)}${String((i * 13) % 10000).padStart(4, "0")}0000000`;

  const track1 = `B${pan}^${surname}/${given}^${yy}${mm}${SERVICE_CODE}${disc}000000`;
  const track2 = `${pan}=${yy}${mm}${SERVICE_CODE}${disc}`;

  let chip: ProductionJob["productionData"]["chip"];
  if (opts.withChip) {
    const lastDay = new Date(Date.UTC(expYear, expMonth, 0)).getUTCDate();
    const record = tlv("70", tlv("5A", bcd(pan)) + tlv("5F24", `${yy}${mm}${pad2(lastDay)}`));
    const dgi = `0101${pad2Hex(record.length / 2)}${record}`;
    chip = {
      apdus: [
        // SELECT the Mastercard credit/debit AID.
        { command: "00A4040007A000000004101000", expectSw: "9000" },
        // STORE DATA, last block (P1 = 0x80), carrying one DGI with the PAN and expiry record.
        { command: `80E28000${pad2Hex(dgi.length / 2)}${dgi}`, expectSw: "9000" },
      ],
    };
  }

  const productionData: ProductionJob["productionData"] = {
    cardStock: SAMPLE_STOCK,
    print: {
      front: [
        { text: pan.replace(/(\d{4})(?=\d)/g, "$1 "), xMm: 8, yMm: 30, sizePt: 14, sensitive: true },
        { text: `${given} ${surname}`, xMm: 8, yMm: 42, sizePt: 10 },
        { text: `${mm}/${yy}`, xMm: 50, yMm: 36, sizePt: 9 },
      ],
      back: [{ text: csc, xMm: 60, yMm: 20, sizePt: 8, sensitive: true }],
    },
    magstripe: { coercivity: "HICO", track1, track2 },
    ...(chip ? { chip } : {}),
    delivery: { collectTimeoutSec: opts.collectTimeoutSec ?? 60 },
  };

  return {
    operationId: cleanId((salt) => sampleOperationId(runId + salt, i)),
    operation: "PRODUCE",
    cardId: cleanId((salt) => hex(`card:${runId}:${i}${salt}`, 16).replace(/(.{4})(?=.)/g, "$1-")),
    issuerId: "ISSUER-01",
    issuerRequestId: cleanId((salt) => `req-${hex(runId + salt, 8)}-${String(i).padStart(6, "0")}`),
    distributionChannel: "INSTANT",
    persoStation: opts.station ?? SAMPLE_STATION,
    requestedAt: now.toISOString(),
    productionData,
  };
}

/** `count` jobs with indexes `0..count-1`, sharing options (and so one runId). */
export function makeSampleJobs(count: number, opts: SampleJobOptions = {}): ProductionJob[] {
  const shared = { ...opts, runId: opts.runId ?? randomUUID() };
  return Array.from({ length: count }, (_, i) => makeSampleJob(i, shared));
}
