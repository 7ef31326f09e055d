import type { DeviceFault } from "../device-fault.js";
import type { Coercivity, MagstripeTracks } from "../magstripe/encoder.js";
import type { CardImage, PrintArea } from "./card-image.js";

/**
 * What the agent needs from a card printer, whatever its make: the boundary between the job engine
 * (pipeline, supervisor, recovery) and a printer family's adapter. Nothing on the agent's side of it
 * knows a command name, a panel layout or a compression; an adapter (drivers/printer/evolis/) turns
 * these operations into its family's wire protocol. docs/architecture.md says how a new family fits.
 *
 * Shaped so both kinds of vendor SDK fit behind it: command-stream printers (Evolis: each operation
 * is a few escape commands) and job-based ones (Zebra Link-OS: Print / MagEncode / PositionCard +
 * SmartCardEncode + Resume / EjectCard / Reject).
 *
 * Every operation rejects with a `DeviceError` whose code is a `DeviceFault` and whose message never
 * carries card data. After `DEVICE_TIMEOUT` or `DEVICE_DISCONNECTED` the card's whereabouts are
 * unknown: `readStatus().cardPosition` says where it is.
 */
export interface CardPrinter {
  readonly capabilities: PrinterCapabilities;
  readonly isOpen: boolean;
  /** What the printer said about itself at the last open (model, serial, firmware), if anything. */
  readonly identity: PrinterIdentity | undefined;
  readonly stats: PrinterLinkStats;
  /** Called when the link goes away without being asked to (cable pulled, printer off). */
  onDisconnect(listener: () => void): () => void;
  /** Opens the link and puts the printer in the state the adapter needs. Call again after a disconnect. */
  open(options?: OpenOptions): Promise<void>;
  close(): Promise<void>;

  /** Takes a blank from `feeder` (one of `capabilities.feeders`; default the first) into the printer. */
  insertCard(feeder?: string): Promise<void>;
  /** Parks the card at the contact station for the chip step (APDUs go through PC/SC, not here). */
  moveToContactStation(): Promise<void>;
  /** Prints the given sides (images of `capabilities.printArea`); the card stays inside. */
  printSides(sides: PrintSides): Promise<void>;
  /** Writes the tracks with the printer's own encoder, reads them back and compares (`MAG_VERIFY`). */
  encodeMagstripe(tracks: MagstripeTracks, coercivity: Coercivity): Promise<void>;
  /** Hands the card to the cardholder: it sits in the kiosk mouth. */
  presentCard(): Promise<void>;
  /**
   * Resolves true as soon as the mouth is empty (the cardholder took the card), false if the card is
   * still there after `timeoutMs`.
   */
  waitForCardTaken(timeoutMs: number): Promise<boolean>;
  /** Pulls an untaken card back from the mouth into the bin for captured cards. `NO_CARD`: the mouth was empty. */
  captureCard(): Promise<void>;
  /** Drops a card inside the printer into the reject bin. */
  rejectCard(): Promise<void>;

  readStatus(): Promise<PrinterStatus>;
  readCounters(): Promise<PrinterCounters>;

  /** Technician maintenance (docs/stock.md): a cleaning cycle with a cleaning card. */
  runCleaning(): Promise<void>;
  /** Technician maintenance: the printer restarts its firmware; settings are applied again after it. */
  resetPrinter(): Promise<void>;
  /** Technician maintenance: the printer's own test card, from `feeder`; it uses one blank. */
  printTestCard(feeder?: string): Promise<void>;
  /** Technician maintenance: whatever card is inside goes out through the mouth. */
  ejectCard(): Promise<void>;
}

export interface OpenOptions {
  /**
   * The previous session may have ended in the middle of a command (the agent was killed while a
   * card was in production): bring the printer back to a command boundary before anything else.
   */
  resync?: boolean;
}

export interface PrintSides {
  front?: CardImage;
  back?: CardImage;
}

export interface PrinterCapabilities {
  /** The adapter's family, e.g. `evolis`. */
  family: string;
  /** The renderer's canvas: one side as the cardholder sees it, in the printer's dots. */
  printArea: PrintArea;
  /** The feeders the agent takes cards from (the configuration's ids), first = default. */
  feeders: readonly string[];
  /** Sides the printer can print without a person turning the card. */
  sides: ReadonlyArray<"front" | "back">;
  magstripeEncoder: boolean;
  contactStation: boolean;
  /** Where a card the cardholder did not take ends: a capture bin, or (Evolis) the reject box. */
  capturedCardsGoTo: "capture-bin" | "reject-box";
}

/** Where the card is. `MOUTH`: presented, half out of the kiosk. */
export type CardPosition = "NONE" | "INSIDE" | "CONTACT" | "CONTACTLESS" | "MOUTH";

export interface PrinterStatus {
  cardPosition: CardPosition;
  /**
   * Why the printer cannot take a card now, most urgent first; empty when it can. The keywords are
   * device faults, which are also D1's reasons (docs/reasons.md).
   */
  stopReasons: DeviceFault[];
  /** Conditions that let production go on but need someone soon (CUPS `*-warning`). */
  warnings: PrinterWarning[];
  /**
   * Each feeder's sensors. An empty feeder holds only the jobs of its stock; FEEDER_EMPTY is among
   * the stop reasons only when every feeder is empty.
   */
  feeders: FeederStatus[];
  /** `advised`: clean soon (a warning); `required`: the printer refuses to print until cleaned. */
  cleaning: "none" | "advised" | "required";
  ribbon?: { remaining?: number; capacity?: number };
}

export interface FeederStatus {
  id: string;
  empty: boolean;
  /** The feeder's own near-empty sensor (the ledger's balance is the agent's business). */
  nearEmpty: boolean;
}

export type PrinterWarning = "FEEDER_NEAR_EMPTY" | "RIBBON_LOW" | "CLEANING_ADVISED";

export interface PrinterCounters {
  /** Cards the printer took in over its life, as its own counter says. */
  cardsInserted?: number;
  panelsPrinted?: number;
  /** Cleaning cycles the printer ran over its life: a cleaning done at the printer shows here too. */
  cleanings?: number;
}

export interface PrinterIdentity {
  model?: string;
  serial?: string;
  firmware?: string;
}

export interface PrinterLinkStats {
  /** Commands (or requests) sent. */
  commands: number;
  /** Replies thrown away: line noise, overlong replies, or text the waiting command cannot answer. */
  droppedFrames: number;
  /** Replies that arrived while nothing was waiting. */
  unexpectedReplies: number;
  bytesWritten: number;
}

/** The reason keyword a status read gives, or undefined when the printer can take a card. */
export function problemIn(status: PrinterStatus): DeviceFault | undefined {
  return status.stopReasons[0];
}
