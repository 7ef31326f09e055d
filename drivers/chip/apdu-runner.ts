import { CodedError } from "../../agent/util/errors.js";
import type { ApduTransport } from "./apdu-transport.js";

export type ChipFault = "CHIP_NO_ATR" | "CHIP_SW_MISMATCH" | "CHIP_IO_ERROR";

/** `index` names the failing APDU's position in the script; never its bytes. */
export class ChipError extends CodedError<ChipFault> {
  constructor(
    code: ChipFault,
    readonly index: number | undefined,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

export interface ScriptApdu {
  command: string;
  expectSw: string;
}

const MAX_CHAINED_RESPONSES = 32;

/**
 * Runs a personalisation script APDU by APDU, as a PC/SC host must under T=0: `61xx` means more
 * data is waiting (fetch it with GET RESPONSE, Le = xx); `6Cxx` means wrong Le (re-send with Le =
 * xx). Only the final status word is compared with `expectSw`.
 */
export async function runApduScript(transport: ApduTransport, apdus: ScriptApdu[]): Promise<{ atr: Buffer }> {
  let atr: Buffer;
  try {
    ({ atr } = await transport.connect());
  } catch (cause) {
    // A transport that already said what went wrong (e.g. CHIP_IO_ERROR: no PC/SC service) keeps its code.
    if (cause instanceof ChipError) throw cause;
    throw new ChipError("CHIP_NO_ATR", undefined, "no card answered in the contact station", { cause });
  }
  try {
    if (atr.length < 2) throw new ChipError("CHIP_NO_ATR", undefined, "card answered with an empty ATR");
    for (const [index, apdu] of apdus.entries()) {
      const sw = await exchange(transport, Buffer.from(apdu.command, "hex"), index);
      if (sw.toUpperCase() !== apdu.expectSw.toUpperCase()) {
        throw new ChipError("CHIP_SW_MISMATCH", index, `APDU #${index} answered an unexpected status word`);
      }
    }
  } finally {
    await transport.disconnect().catch(() => undefined);
  }
  return { atr };
}

async function exchange(transport: ApduTransport, command: Buffer, index: number): Promise<string> {
  // `6Cxx` corrects the Le of the command just sent, which may be a GET RESPONSE.
  let sent = command;
  let response = await transmit(transport, sent, index);
  for (let i = 0; i < MAX_CHAINED_RESPONSES; i++) {
    const sw1 = response[response.length - 2];
    const sw2 = response[response.length - 1]!;
    if (sw1 === 0x6c) {
      sent = withLe(sent, sw2);
      response = await transmit(transport, sent, index);
    } else if (sw1 === 0x61) {
      sent = Buffer.from([0x00, 0xc0, 0x00, 0x00, sw2]);
      response = await transmit(transport, sent, index);
    } else {
      return response
        .subarray(response.length - 2)
        .toString("hex")
        .toUpperCase();
    }
  }
  throw new ChipError("CHIP_IO_ERROR", index, `APDU #${index}: too many chained responses`);
}

/** The short command APDU `command` with its Le set to `le` (appended when it has none). */
function withLe(command: Buffer, le: number): Buffer {
  const lc = command.length > 5 ? command[4]! : 0;
  // Case 1 (header only) and case 3 (header, Lc, data) carry no Le: append one.
  const hasLe = command.length === 5 || (command.length > 5 && command.length === 6 + lc);
  if (!hasLe) return Buffer.concat([command, Buffer.from([le])]);
  const resend = Buffer.from(command);
  resend[resend.length - 1] = le;
  return resend;
}

async function transmit(transport: ApduTransport, command: Buffer, index: number): Promise<Buffer> {
  let response: Buffer;
  try {
    response = await transport.transmit(command);
  } catch (cause) {
    const code = cause instanceof ChipError ? cause.code : "CHIP_IO_ERROR";
    throw new ChipError(code, index, `APDU #${index}: the reader failed`, { cause });
  }
  if (response.length < 2) throw new ChipError("CHIP_IO_ERROR", index, `APDU #${index}: response too short`);
  return response;
}
