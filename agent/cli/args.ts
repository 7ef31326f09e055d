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

export interface CommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

const consoleIo: CommandIo = { out: (t) => console.log(t), err: (t) => console.error(t) };

/**
 * The start every subcommand shares: parse argv; on `--help` print the help (exit 0), on a usage
 * mistake print it after the problem (exit 2). Returns the parsed arguments, or the exit code.
 */
export function parseOrExitCode<T extends NonNullable<ParseArgsConfig["options"]>>(
  argv: string[],
  options: T,
  help: string,
  { allowPositionals = false, io = consoleIo }: { allowPositionals?: boolean; io?: CommandIo } = {},
): { values: Record<string, string | boolean | undefined>; positionals: string[] } | number {
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseCommandArgs(argv, options, allowPositionals) as typeof parsed;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.err(`${err.message}\n\n${help}`);
    return 2;
  }
  if (parsed.values.help) {
    io.out(help);
    return 0;
  }
  return parsed as { values: Record<string, string | boolean | undefined>; positionals: string[] };
}
