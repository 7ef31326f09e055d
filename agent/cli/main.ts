import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { AGENT_VERSION } from "../version.js";

/**
 * `kiosk-agent <command>`. Each command's modules are loaded (and, in the bundle, initialised) only
 * when it runs: the service's start does not pay for the simulator, the emulator or the demo. Exit codes: 0 success; 1 the command ran and failed (a demo job did not
 * end, a config is invalid); 2 wrong usage.
 */
const COMMANDS: Record<string, { summary: string; run: (argv: string[]) => Promise<number> }> = {
  run: {
    summary: "run the agent as a service (kiosk-agent run --config FILE)",
    run: async (argv) => (await import("./run.js")).runCommand(argv),
  },
  demo: {
    summary: "agent + simulated printer + D1 emulator, pushes sample jobs",
    run: async (argv) => (await import("./demo.js")).demoCommand(argv),
  },
  config: {
    summary: "config check FILE: validate a configuration file",
    run: async (argv) => (await import("./config-check.js")).configCheckCommand(argv),
  },
  keys: {
    summary: "keys generate --out DIR: the station key pair for encrypted jobs (JWE)",
    run: async (argv) => (await import("./keys.js")).keysCommand(argv),
  },
  audit: {
    summary: "audit export | verify --data-dir DIR: the audit trail; whether its hash chain is intact",
    run: async (argv) => (await import("./audit.js")).auditCommand(argv),
  },
  stock: {
    summary: "stock report|load|return|adjust|empty-bin|acknowledge-counter: the card-stock ledger",
    run: async (argv) => (await import("./stock.js")).stockCommand(argv),
  },
  store: {
    summary:
      "store check | rekey: whether the data directory's store and key are fit to start on; rotate the data key",
    run: async (argv) => (await import("./store.js")).storeCommand(argv),
  },
  status: {
    summary: "ask a running agent: D1 link, devices, queue, last errors",
    run: async (argv) => (await import("./status.js")).statusCommand(argv),
  },
  printer: {
    summary: "printer info|counters|clean|reset|eject|test-card: technician commands, audited",
    run: async (argv) => (await import("./printer.js")).printerCommand(argv),
  },
  simulator: {
    summary: "the virtual printer on a pseudo-terminal, for an agent run separately; faults",
    run: async (argv) => (await import("./simulator.js")).simulatorCommand(argv),
  },
  "d1-emulator": {
    summary: "a D1 for an agent run separately: push a job file, list what it reported",
    run: async (argv) => (await import("./d1-emulator.js")).d1EmulatorCommand(argv),
  },
};

export const USAGE = `Usage: kiosk-agent <command> [options]

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(12)} ${c.summary}`)
  .join("\n")}

Run 'kiosk-agent <command> --help' for a command's options.
Exit codes: 0 ok, 1 failed, 2 usage error; status also 3 (needs attention). See docs/cli.md.`;

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(USAGE);
    return name ? 0 : 2;
  }
  if (name === "--version" || name === "-V") {
    console.log(versionLine());
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`kiosk-agent: unknown command '${name}'\n\n${USAGE}`);
    return 2;
  }
  return command.run(rest);
}

/**
 * `kiosk-agent --version` in a checkout: package.json's version and the commit of the working tree
 * (the installed package answers from its build-info.json instead: deploy/debian/kiosk-agent.mjs).
 */
function versionLine(): string {
  // Any directory inside the checkout will do for git: this file's (sources or dist/).
  const root = fileURLToPath(new URL(".", import.meta.url));
  const git = (args: string[]) =>
    spawnSync("git", ["-C", root, ...args], { encoding: "utf8", timeout: 5000 }).stdout?.trim() ?? "";
  const commit = git(["rev-parse", "HEAD"]);
  if (!commit) return `kiosk-agent ${AGENT_VERSION} (git commit unknown: not a checkout)`;
  const dirty = git(["status", "--porcelain", "--untracked-files=no"]).length > 0;
  return `kiosk-agent ${AGENT_VERSION} (git ${commit}${dirty ? ", with uncommitted changes" : ""})`;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`kiosk-agent: ${(err as Error)?.message ?? String(err)}`);
    process.exitCode = 1;
  },
);
