import type { KeyObject } from "node:crypto";
import { type JobValidation, validateJob } from "../jobs/validate.js";
import type { Logger } from "../log/logger.js";
import { hasEncryptedPayload, openPayload, type PayloadFailureCode } from "./jwe.js";

/**
 * Decrypts pushed jobs whose production data is a JWE, keeping pushes in arrival order: a plain
 * push while nothing is being decrypted is answered at once (as before); otherwise it waits behind
 * the pushes before it.
 */
export class PushPayloads {
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;

  constructor(
    private readonly key: KeyObject | undefined,
    private readonly required: boolean,
    private readonly log: Logger,
  ) {}

  /** Calls `answer` with the job to validate (decrypted if it was encrypted) and, if it failed, why. */
  handle(job: unknown, answer: (job: unknown, failure?: PayloadFailureCode) => void): void {
    if (this.pending === 0 && !this.required && !hasEncryptedPayload(job)) {
      answer(job);
      return;
    }
    this.pending++;
    this.chain = this.chain
      .then(async () => {
        const opened = await openPayload(job, this.key, { required: this.required });
        if (opened.failure)
          this.log.warn({ errorCode: opened.failure }, "encrypted production data not usable");
        answer(opened.job, opened.failure);
      })
      .catch((err: unknown) => this.log.error({ err }, "push could not be answered"))
      .finally(() => {
        this.pending--;
      });
  }

  /** Resolves once every push handed in so far was answered. */
  idle(): Promise<void> {
    return this.chain;
  }
}

/**
 * The validation outcome of a job whose production data could not be used. Header problems
 * (operationId, cardId, station…) win as for any job; otherwise the job is kept as DATA_EXCEPTION
 * with the failure code as reason and errorCode, and `productionData` as the field.
 */
export function payloadFailureVerdict(
  jobWithoutData: unknown,
  stationId: string,
  failure: PayloadFailureCode,
): JobValidation {
  const verdict = validateJob(jobWithoutData, stationId);
  if (verdict.kind === "refused") return verdict;
  if (verdict.kind === "data-exception" && !verdict.error.startsWith("productionData")) return verdict;
  const header =
    verdict.kind === "data-exception"
      ? verdict.header
      : {
          operationId: verdict.job.operationId,
          cardId: verdict.job.cardId,
          ...(verdict.job.issuerRequestId ? { issuerRequestId: verdict.job.issuerRequestId } : {}),
        };
  return { kind: "data-exception", header, reason: failure, errorCode: failure, error: "productionData" };
}
