import { type ParseArgsConfig, parseArgs } from "node:util";

export class UsageError extends Error {}

/** node:util parseArgs with a usage error instead of a thrown TypeError, and --help built in. */
export function parseCommandArgs<T extends NonNullable<ParseArgsConfig["options"]>>(
  argv: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs({
      args: argv,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}
