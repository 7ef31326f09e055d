/**
 * MSR605X USB HID framing (shared/devices.md §3): the MSR206 byte protocol cut into 64-byte reports.
 * Each report is one header byte + up to 63 payload bytes, zero-padded. Header bits: 0x80 = first
 * report of a message, 0x40 = last, low 6 bits = payload length in this report.
 *
 *   6-byte message `string` → `C6 73 74 72 69 6E 67 00 …` (one report, first + last, length 6)
 *   141-byte message        → `BF …` (63) `3F …` (63) `4F …` (15)
 *
 * Host → device the report goes out with report id 0 (`[0x00, …64 bytes]` for node-hid). Device →
 * host, 64-byte input reports are reassembled until the 0x40 flag, keeping **every** chunk (a
 * well-known public implementation returns only the last one).
 */

export const MSR605X_VENDOR_ID = 0x0801;
export const MSR605X_PRODUCT_ID = 0x0003;

export const HID_REPORT_SIZE = 64;
export const HID_MAX_PAYLOAD = HID_REPORT_SIZE - 1;
export const HID_FIRST = 0x80;
export const HID_LAST = 0x40;
export const HID_LENGTH_MASK = 0x3f;
/** Report id of the device's only output report. */
export const HID_REPORT_ID = 0x00;

export interface HidReportHeader {
  first: boolean;
  last: boolean;
  /** Payload bytes in this report, 0–63. */
  length: number;
}

export function encodeHidHeader(header: HidReportHeader): number {
  if (!Number.isInteger(header.length) || header.length < 0 || header.length > HID_MAX_PAYLOAD) {
    throw new RangeError(`report payload length must be 0-${HID_MAX_PAYLOAD}`);
  }
  return (header.first ? HID_FIRST : 0) | (header.last ? HID_LAST : 0) | header.length;
}

export function parseHidHeader(byte: number): HidReportHeader {
  return { first: (byte & HID_FIRST) !== 0, last: (byte & HID_LAST) !== 0, length: byte & HID_LENGTH_MASK };
}

/**
 * A message as 64-byte reports (no report id). `maxPayload` (1–63, default 63) lets the simulator
 * cut a reply into more, smaller reports than needed, as firmware may.
 */
export function encodeHidReports(message: Buffer, maxPayload: number = HID_MAX_PAYLOAD): Buffer[] {
  if (message.length === 0) throw new RangeError("an empty message has no reports");
  if (!Number.isInteger(maxPayload) || maxPayload < 1 || maxPayload > HID_MAX_PAYLOAD) {
    throw new RangeError(`maxPayload must be 1-${HID_MAX_PAYLOAD}`);
  }
  const reports: Buffer[] = [];
  for (let offset = 0; offset < message.length; offset += maxPayload) {
    const chunk = message.subarray(offset, offset + maxPayload);
    const report = Buffer.alloc(HID_REPORT_SIZE);
    report[0] = encodeHidHeader({
      first: offset === 0,
      last: offset + chunk.length >= message.length,
      length: chunk.length,
    });
    chunk.copy(report, 1);
    reports.push(report);
  }
  return reports;
}

/** A report as node-hid's `write()` takes it: report id 0 in front, 65 bytes. */
export function withReportId(report: Buffer): Buffer {
  if (report.length !== HID_REPORT_SIZE) throw new RangeError(`a report is ${HID_REPORT_SIZE} bytes`);
  return Buffer.concat([Buffer.of(HID_REPORT_ID), report]);
}

/** `write()` arguments for a message: one 65-byte buffer per report. */
export function encodeHidOutput(message: Buffer): Buffer[] {
  return encodeHidReports(message).map(withReportId);
}

export interface HidReassemblerOptions {
  /** Default 64. */
  reportSize?: number;
  /** A message growing past this is dropped (the last flag never came). Default 4096. */
  maxMessageBytes?: number;
}

export interface HidReassemblerStats {
  /** Whole reports seen. */
  reports: number;
  /** Messages completed. */
  messages: number;
  /** Reports dropped because no message was open (no 0x80 report before them). */
  orphanReports: number;
  /** Messages dropped unfinished: a new 0x80 came first, they grew too long, or `reset()`. */
  droppedMessages: number;
  /** Bytes of dropped reports and messages (payload, plus partial reports on reset). */
  droppedBytes: number;
}

/**
 * Device → host reassembly. Input may arrive cut anywhere (a report split over several `data`
 * events, several reports in one): bytes are gathered into whole reports first, then each report's
 * payload is appended to the open message until a report with the 0x40 flag completes it.
 *
 * Resynchronisation: a report without 0x80 while no message is open is dropped and counted; a 0x80
 * report while a message is open drops the unfinished one and starts afresh.
 */
export class HidReassembler {
  private readonly reportSize: number;
  private readonly maxMessageBytes: number;
  private partialReport: Buffer = Buffer.alloc(0);
  private message: Buffer[] | undefined;
  private messageLength = 0;
  private readonly counters: HidReassemblerStats = {
    reports: 0,
    messages: 0,
    orphanReports: 0,
    droppedMessages: 0,
    droppedBytes: 0,
  };

  constructor(options: HidReassemblerOptions = {}) {
    this.reportSize = options.reportSize ?? HID_REPORT_SIZE;
    this.maxMessageBytes = options.maxMessageBytes ?? 4096;
  }

  get stats(): HidReassemblerStats {
    return { ...this.counters };
  }

  /** Whether a message has started and not finished, or a report is half received. */
  get pending(): boolean {
    return this.message !== undefined || this.partialReport.length > 0;
  }

  /** The messages completed by `data`, in order. */
  push(data: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let offset = 0;
    if (this.partialReport.length > 0) {
      const need = this.reportSize - this.partialReport.length;
      const piece = data.subarray(0, need);
      offset = piece.length;
      this.partialReport = Buffer.concat([this.partialReport, piece]);
      if (this.partialReport.length < this.reportSize) return out;
      const report = this.partialReport;
      this.partialReport = Buffer.alloc(0);
      this.onReport(report, out);
    }
    for (; offset + this.reportSize <= data.length; offset += this.reportSize) {
      this.onReport(data.subarray(offset, offset + this.reportSize), out);
    }
    if (offset < data.length) this.partialReport = Buffer.from(data.subarray(offset));
    return out;
  }

  /** Forgets a half-received report and an unfinished message (link closed, caller timeout), counting them. */
  reset(): void {
    if (this.message) this.dropMessage();
    this.counters.droppedBytes += this.partialReport.length;
    this.partialReport = Buffer.alloc(0);
  }

  private onReport(report: Buffer, out: Buffer[]): void {
    this.counters.reports++;
    const header = parseHidHeader(report[0]!);
    // length ≤ 63 and a report holds 63 payload bytes: never past the end.
    const payload = report.subarray(1, 1 + Math.min(header.length, this.reportSize - 1));
    if (header.first) {
      if (this.message) this.dropMessage();
      this.message = [];
      this.messageLength = 0;
    } else if (!this.message) {
      this.counters.orphanReports++;
      this.counters.droppedBytes += payload.length;
      return;
    }
    const message = this.message;
    message.push(Buffer.from(payload));
    this.messageLength += payload.length;
    if (this.messageLength > this.maxMessageBytes) {
      this.dropMessage();
      return;
    }
    if (header.last) {
      const length = this.messageLength;
      this.message = undefined;
      this.messageLength = 0;
      this.counters.messages++;
      // An empty message (first + last, length 0) carries nothing for the protocol above.
      if (length > 0) out.push(Buffer.concat(message));
    }
  }

  private dropMessage(): void {
    this.counters.droppedMessages++;
    this.counters.droppedBytes += this.messageLength;
    this.message = undefined;
    this.messageLength = 0;
  }
}
