import { ConfigError, loadConfig } from "../config/load.js";
import { parseOrExitCode } from "./args.js";

const HELP = `Usage: kiosk-agent config check FILE

Validates FILE (JSON) with the environment overrides applied (KIOSK_AGENT__SECTION__KEY=value).
Prints each problem as 'key.path: what is wrong'. Exit 0 valid, 1 invalid, 2 usage.`;

export async function configCheckCommand(argv: string[]): Promise<number> {
  const parsed = parseOrExitCode(argv, {}, HELP, { allowPositionals: true });
  if (typeof parsed === "number") return parsed;
  const [sub, file] = parsed.positionals;
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
