import type { BindingInterface } from "@serialport/bindings-interface";
import type { Logger } from "../../agent/log/logger.js";
import type { Clock } from "../../agent/util/clock.js";
import { type HidBackend, HidTransport } from "../transport/hid-transport.js";
import { SerialTransport } from "../transport/serial-transport.js";
import {
  type MagstripeEncoder,
  type MagstripeEncoderKind,
  type PrinterWithEncoder,
  printerMagstripeEncoder,
} from "./encoder.js";
import { Msr206Encoder, type Msr206Timeouts, type SwipeRequest } from "./msr206-driver.js";

/** Settings both separate encoders share. */
interface Msr206Settings {
  /**
   * `magMs` is accepted for configuration files written before the swipe wait existed, and ignored
   * (with a warning): write, read and erase now wait `swipeTimeoutSec` for a person to swipe.
   */
  timeouts?: Partial<Msr206Timeouts> & { magMs?: number };
  /** How long a write, read or erase waits for the teller to swipe the card. Default 30. */
  swipeTimeoutSec?: number;
}

/** The `magstripe` section of the agent's configuration, once validated. */
export type MagstripeEncoderConfig =
  | { kind: "printer" }
  | ({
      kind: "msr206-hid";
      /** hidraw path; absent: the first device with vendorId/productId (default 0801:0003). */
      path?: string;
      vendorId?: number;
      productId?: number;
    } & Msr206Settings)
  | ({
      kind: "msr206-serial";
      path: string;
      /** MSR206 units default to 9600 8N1. */
      baudRate?: number;
    } & Msr206Settings);

export interface MagstripeEncoderDeps {
  clock: Clock;
  logger: Logger;
  /** The printer, for `kind: "printer"`. */
  printer?: PrinterWithEncoder;
  /** For `msr206-serial`: `autoDetect()` from `@serialport/bindings-cpp`, or `VirtualSerialBinding`. */
  serialBinding?: BindingInterface;
  /** For `msr206-hid`: default node-hid, loaded lazily; the demo passes `VirtualMsr206.hidBackend()`. */
  hidBackend?: HidBackend | (() => Promise<HidBackend>);
  /**
   * For the separate encoders, which are hand-swipe: called when a write, read or erase waits for
   * the teller to swipe the card (the agent shows it on the console). No card data.
   */
  onSwipeRequest?: (request: SwipeRequest) => void;
}

export interface ConfiguredMagstripeEncoder {
  kind: MagstripeEncoderKind;
  /** What the pipeline calls. */
  encoder: MagstripeEncoder;
  /** The separate encoder, when there is one: `open()` at start, `close()` at shutdown. */
  device?: Msr206Encoder;
}

/** Builds the encoder the configuration names. Opens nothing. */
export function createMagstripeEncoder(
  config: MagstripeEncoderConfig,
  deps: MagstripeEncoderDeps,
): ConfiguredMagstripeEncoder {
  const { logger } = deps;
  switch (config.kind) {
    case "printer": {
      if (!deps.printer) throw new TypeError('magstripe encoder "printer" needs the printer driver');
      return { kind: "printer", encoder: printerMagstripeEncoder(deps.printer) };
    }
    case "msr206-hid": {
      const transport = new HidTransport({
        ...(config.path === undefined ? {} : { path: config.path }),
        ...(config.vendorId === undefined ? {} : { vendorId: config.vendorId }),
        ...(config.productId === undefined ? {} : { productId: config.productId }),
        ...(deps.hidBackend === undefined ? {} : { backend: deps.hidBackend }),
        logger,
      });
      const device = new Msr206Encoder({ transport, ...msr206Options(config, deps) });
      return { kind: "msr206-hid", encoder: device, device };
    }
    case "msr206-serial": {
      if (!deps.serialBinding)
        throw new TypeError('magstripe encoder "msr206-serial" needs a serialport binding');
      const transport = new SerialTransport({
        path: config.path,
        baudRate: config.baudRate ?? 9600,
        binding: deps.serialBinding,
        logger,
      });
      const device = new Msr206Encoder({ transport, ...msr206Options(config, deps) });
      return { kind: "msr206-serial", encoder: device, device };
    }
  }
}

/** `Msr206Encoder` options out of the configuration (seconds → ms) and the agent's hooks. */
function msr206Options(config: Msr206Settings, deps: MagstripeEncoderDeps) {
  const { clock, logger } = deps;
  const { magMs, ...timeouts } = config.timeouts ?? {};
  if (magMs !== undefined) {
    logger.warn(
      { magMs },
      "magstripe.timeouts.magMs is ignored: write, read and erase wait for a swipe (magstripe.swipeTimeoutSec)",
    );
  }
  return {
    clock,
    logger,
    timeouts,
    ...(config.swipeTimeoutSec === undefined ? {} : { swipeTimeoutMs: config.swipeTimeoutSec * 1000 }),
    ...(deps.onSwipeRequest ? { onSwipeRequest: deps.onSwipeRequest } : {}),
  };
}
