import { ConfigError, loadConfig } from "../config/load.js";
import { parseCommandArgs, UsageError } from "./args.js";

const HELP = `Usage: kiosk-agent config check FILE

Validates FILE (JSON) with the environment overrides applied (KIOSK_AGENT__SECTION__KEY=value).
Prints each problem as 'key.path: what is wrong'. Exit 0 valid, 1 invalid, 2 usage.`;

export async function configCheckCommand(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseCommandArgs>;
  try {
    parsed = parseCommandArgs(argv, {}, true);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${err.message}\n\n${HELP}`);
      return 2;
    }
    throw err;
  }
  const [sub, file] = parsed.positionals;
  if (parsed.values.help) {
    console.log(HELP);
    return 0;
  }
  if (sub !== "check" || !file) {
    console.error(HELP);
    return 2;
  }
  try {
    const config = loadConfig(file);
    console.log(`${file}: valid (station ${config.station.id}, D1 ${new URL(config.d1.url).host})`);
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`${file}: ${err.message}`);
      return 1;
    }
    throw err;
  }
}
