import type { BindingInterface } from "@serialport/bindings-interface";
import type { Logger } from "../../agent/log/logger.js";
import type { Clock } from "../../agent/util/clock.js";
import { DeviceFileTransport } from "../transport/device-file-transport.js";
import { SerialTransport } from "../transport/serial-transport.js";
import { TcpTransport } from "../transport/tcp-transport.js";
import type { Transport } from "../transport/transport.js";
import type { CardPrinter } from "./card-printer.js";
import { EvolisPrinter, type EvolisTimeouts, type PrinterLinkKind } from "./evolis/evolis-printer.js";

/** The `printer` section of the agent's configuration, once validated (agent/config/schema.ts). */
export interface PrinterConfig {
  family: "evolis";
  link: PrinterLinkKind;
  path?: string | undefined;
  baudRate: number;
  host?: string | undefined;
  port?: number | undefined;
  timeouts: EvolisTimeouts;
  replyIdleGapMs: number;
  takePollMs: number;
  /** The feeders (ids) cards are taken from; the first is the default. */
  feeders: ReadonlyArray<{ id: string }>;
}

export interface PrinterDeps {
  clock: Clock;
  logger: Logger;
  /** For `link: serial`: `autoDetect()` from `@serialport/bindings-cpp`, or the simulator's binding. */
  serialBinding?: BindingInterface;
}

/**
 * The link the configuration names, under the adapter of the family it names. The only place that
 * knows which families exist: a new family adds its adapter here and a value to `printer.family`,
 * and nothing in the agent changes (docs/architecture.md, "Adding a printer family").
 */
export function createPrinter(config: PrinterConfig, deps: PrinterDeps): CardPrinter {
  const transport = createLink(config, deps);
  switch (config.family) {
    case "evolis":
      return new EvolisPrinter({
        transport,
        link: config.link,
        clock: deps.clock,
        logger: deps.logger,
        timeouts: config.timeouts,
        replyIdleGapMs: config.replyIdleGapMs,
        takePollMs: config.takePollMs,
        feeders: config.feeders.map((f) => f.id),
      });
  }
}

/** For logs and the console: `usb:/dev/usb/lp0`, `tcp:10.0.0.5:9100`, `serial:/dev/ttyUSB0`. */
export function describeLink(config: Pick<PrinterConfig, "link" | "path" | "host" | "port">): string {
  return config.link === "tcp" ? `tcp:${config.host}:${config.port}` : `${config.link}:${config.path}`;
}

function createLink(config: PrinterConfig, deps: PrinterDeps): Transport {
  const missing = (key: string) => new TypeError(`printer.link ${config.link} needs printer.${key}`);
  switch (config.link) {
    case "serial":
      if (!config.path) throw missing("path");
      if (!deps.serialBinding) throw new TypeError("printer.link serial needs a serialport binding");
      return new SerialTransport({
        path: config.path,
        baudRate: config.baudRate,
        binding: deps.serialBinding,
        logger: deps.logger,
      });
    case "usb":
      if (!config.path) throw missing("path");
      return new DeviceFileTransport({ path: config.path, logger: deps.logger });
    case "tcp":
      if (!config.host) throw missing("host");
      if (config.port === undefined) throw missing("port");
      return new TcpTransport({ host: config.host, port: config.port, logger: deps.logger });
  }
}
