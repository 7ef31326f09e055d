import { autoDetect } from "@serialport/bindings-cpp";
import { PcscApduTransport } from "../../drivers/chip/pcsc-transport.js";
import { KioskAgent } from "../agent.js";
import { ConfigError, loadConfig } from "../config/load.js";
import { LogFileError, openLogFile } from "../log/file-destination.js";
import { createLogger } from "../log/logger.js";
import { parseOrExitCode } from "./args.js";

const HELP = `Usage: kiosk-agent run --config FILE

Runs the agent as a service against real devices. Stops cleanly on SIGTERM / SIGINT: no new jobs,
the card in hand finished or parked within shutdown.graceSec, statuses flushed, exit 0
(docs/operations.md).
Environment overrides: KIOSK_AGENT__SECTION__KEY=value (e.g. KIOSK_AGENT__D1__TOKEN).`;

export async function runCommand(argv: string[]): Promise<number> {
  const parsed = parseOrExitCode(argv, { config: { type: "string", short: "c" } }, HELP);
  if (typeof parsed === "number") return parsed;
  const { values } = parsed;
  // Every file the service makes (store, -wal, -shm, key, pid, log.file) is private to its user, as
  // under the unit's UMask=0077, also when it is started by hand or from another init.
  process.umask(0o077);
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(typeof values.config === "string" ? values.config : undefined);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      return 1;
    }
    throw err;
  }
  let logFile: ReturnType<typeof openLogFile> | undefined;
  try {
    // Before anything else runs: a log path that cannot work is one line, as a config error is.
    logFile = config.log.file ? openLogFile(config.log.file) : undefined;
  } catch (err) {
    if (err instanceof LogFileError) {
      console.error(`kiosk-agent: cannot start: ${err.message}`);
      return 1;
    }
    throw err;
  }
  const logger = createLogger({ level: config.log.level, ...(logFile ? { destination: logFile } : {}) });
  let agent: KioskAgent;
  try {
    const chip = config.chip.reader
      ? new PcscApduTransport({
          reader: config.chip.reader,
          cardTimeoutMs: config.chip.cardTimeoutMs,
          logger,
        })
      : undefined;
    agent = new KioskAgent(config, { logger, serialBinding: autoDetect(), ...(chip ? { chip } : {}) });
  } catch (err) {
    // A TLS or key file that cannot be used: the message names the config key and the file.
    console.error(`kiosk-agent: cannot start: ${(err as Error).message}`);
    logger.flush();
    return 1;
  }
  agent.start();
  const signal = await new Promise<string>((resolve) => {
    const onSignal = (name: string) => {
      process.on(name, () => logger.warn({ signal: name }, "already stopping"));
      resolve(name);
    };
    process.once("SIGTERM", () => onSignal("SIGTERM"));
    process.once("SIGINT", () => onSignal("SIGINT"));
  });
  await agent.shutdown(signal);
  logger.flush();
  return 0;
}
