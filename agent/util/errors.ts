/**
 * Errors are values with a reason code. Messages never carry card data: callers pass field paths
 * and reason keywords, not values.
 */
export class CodedError<Code extends string = string> extends Error {
  readonly code: Code;
  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}
