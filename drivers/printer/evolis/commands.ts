/**
 * Every Evolis escape command this project knows, each with the public record it comes from. The
 * adapter can only send commands named here (`encodeCommand` takes an `EvolisCommandName`), the
 * simulator answers `ERROR CDE` to any other name, and docs/devices.md lists the same table
 * (test/drivers/printer/evolis/command-table.test.ts keeps the two in step).
 *
 * Sources (shared/evolis/README.md gathers them):
 * - guide: Evolis Printers Programming Guide A5013 Rev E (page numbers of its command definitions);
 * - kiosk driver: leithergit/Z390Kylin, Evolis_Z390_printer/QEvolisPrinter.cpp (a KC200B / Zenius in
 *   a bank kiosk over libevolis on /dev/usb/lp0), and leithergit/Z390,
 *   Evolis_Z390_LithographPrinter/Printer_Command.txt (the meanings of the Pneab forms);
 * - captures: dpavlin/Printer-EVOLIS test.windows/* (Evolis's Windows driver, copied into
 *   test/fixtures/evolis-captures/);
 * - sample code: Evolis sample classes CPrinter/CMag (ecquinosa/acc-afpslai-cardPrinting,
 *   Evolis/Discussion/CMag.vb), which read tracks back with `Smr;n` then `Rmb;n`.
 */

export interface EvolisCommandSpec {
  /** The forms the adapter sends (`<n>` a parameter it fills in). */
  forms: readonly string[];
  meaning: string;
  source: string;
  /** Sent by the adapter (false: only understood by the simulator, e.g. seen in the captures). */
  sentByAdapter: boolean;
}

export const EVOLIS_COMMANDS = {
  // Start-up settings of the kiosk driver (QEvolisPrinter::Open), sent at every open and, behind a
  // serial link, before every card (docs/devices.md, "Settings after a power cycle").
  Pem: {
    forms: ["Pem;2"],
    meaning: "the host handles errors (lost at power-off unless saved)",
    source: "guide p.20; kiosk driver Open",
    sentByAdapter: true,
  },
  Pcim: {
    forms: ["Pcim;F"],
    meaning: "insert cards from the feeder",
    source: "kiosk driver Open",
    sentByAdapter: true,
  },
  Pcem: {
    forms: ["Pcem;I"],
    meaning: "eject through the card exit (the kiosk mouth, bezel)",
    source: "kiosk driver Open",
    sentByAdapter: true,
  },
  Psmgr: {
    forms: ["Psmgr;2"],
    meaning: "no blocking on insert/eject errors",
    source: "kiosk driver Open",
    sentByAdapter: true,
  },
  Pneab: {
    forms: ["Pneab;E", "Pneab;A;0", "Pneab;A;1"],
    meaning: "E: do not eject at the end of printing; A;0 forbid / A;1 allow card ejection",
    source: "kiosk driver Open, print and Eject; Z390 Printer_Command.txt",
    sentByAdapter: true,
  },
  Pcrm: {
    forms: ["Pcrm;D"],
    meaning: "the reject box is the error output",
    source: "kiosk driver Open, Retract",
    sentByAdapter: true,
  },
  Pbc: {
    forms: ["Pbc;A;D"],
    meaning: "bezel: the printer does nothing by itself with an untaken card (the agent decides)",
    source: "kiosk driver Open (Pbc;A;R / Pbc;A;N / Pbc;D;<s> commented alternatives)",
    sentByAdapter: true,
  },
  // Identification, read once at open for the console and the logs.
  Rtp: { forms: ["Rtp"], meaning: "printer model", source: "guide p.38", sentByAdapter: true },
  Rsn: {
    forms: ["Rsn"],
    meaning: "serial number",
    source: "guide p.38; kiosk driver GetSN",
    sentByAdapter: true,
  },
  Rfv: { forms: ["Rfv"], meaning: "firmware version", source: "guide p.32", sentByAdapter: true },
  // Card moves.
  Si: {
    forms: ["Si"],
    meaning: "insert a card from the feeder to the print position",
    source: "guide p.42; kiosk driver Dispense",
    sentByAdapter: true,
  },
  Sis: {
    forms: ["Sis"],
    meaning: "move the card to the smart-card contact station",
    source: "guide p.59; kiosk driver MoveCard",
    sentByAdapter: true,
  },
  Se: {
    forms: ["Se"],
    meaning:
      "end of sequence: prints what was loaded; ejects the card (through the mouth, Pcem;I) when ejection is allowed (Pneab)",
    source: "guide p.42; captures (Se;1); kiosk driver Eject",
    sentByAdapter: true,
  },
  Sib: {
    forms: ["Sib"],
    meaning: "take the card back in from the mouth",
    source: "guide p.42 (insert from the back); kiosk driver InDraftCard",
    sentByAdapter: true,
  },
  Ser: {
    forms: ["Ser"],
    meaning: "eject the card into the reject box",
    source: "guide p.42; kiosk driver Retract",
    sentByAdapter: true,
  },
  // Printing (black ribbon, front and back).
  Pr: { forms: ["Pr;k"], meaning: "ribbon type: black", source: "guide p.25; captures", sentByAdapter: true },
  Ss: {
    forms: ["Ss"],
    meaning: "start of a print sequence",
    source: "guide p.44; captures",
    sentByAdapter: true,
  },
  Sr: {
    forms: ["Sr"],
    meaning: "the next panel is the front",
    source: "guide p.43; captures",
    sentByAdapter: true,
  },
  Sv: { forms: ["Sv"], meaning: "the next panel is the back", source: "guide p.45", sentByAdapter: true },
  Dbc: {
    forms: ["Dbc;k;2;<n>;<n bytes>"],
    meaning: "load a K/O-compressed black panel",
    source: "guide p.5–6, p.15; captures",
    sentByAdapter: true,
  },
  Db: {
    forms: ["Db;k;2;<82296 bytes>"],
    meaning: "load a raw black panel",
    source: "guide p.14; dpavlin/Printer-EVOLIS evolis-driver.pl",
    sentByAdapter: false,
  },
  // Magnetic stripe (the printer's own encoder).
  Pmc: {
    forms: ["Pmc;h", "Pmc;l"],
    meaning: "coercivity high / low",
    source: "guide p.50",
    sentByAdapter: true,
  },
  Dm: {
    forms: ["Dm;<n>;<data>"],
    meaning: "load track n (ISO data, no sentinels or LRC)",
    source: "guide p.49",
    sentByAdapter: true,
  },
  Smw: { forms: ["Smw"], meaning: "write the loaded tracks", source: "guide p.55", sentByAdapter: true },
  Smr: {
    forms: ["Smr;<n>"],
    meaning: "read track n back (answers the data, or OK and the data waits for Rmb;n)",
    source: "guide p.55; sample code CMag/CPrinter",
    sentByAdapter: true,
  },
  Rmb: {
    forms: ["Rmb;<n>"],
    meaning: "the track n buffer read by Smr",
    source: "sample code CMag.ReadMagTracksBuffer, CPrinter.ReadTrack",
    sentByAdapter: true,
  },
  // Status.
  Rlr: {
    forms: ["Rlr;p", "Rlr;r", "Rlr;h"],
    meaning:
      "p: where the card is (OK / CARD / SMART CARD / CONTACTLESS CARD; guide: NO CARD / ERR CARD); r: ERR NEED CLEANING; h: reject box full (CARD / NO CARD)",
    source: "guide p.34; kiosk driver CheckCardPostion, GetBoxStatus",
    sentByAdapter: true,
  },
  Rse: {
    forms: ["Rse;b", "Rse;f", "Rse;n", "Rse;o"],
    meaning: "sensor voltage (`d,dd Volts`): b mouth, f feeder, n feeder near empty, o cover",
    source: "guide p.37; kiosk driver CheckCardPostion, GetBoxStatus, GetPrinterStatus",
    sentByAdapter: true,
  },
  Rrt: {
    forms: ["Rrt;count", "Rrt;qty"],
    meaning: "ribbon panels left / ribbon capacity (may spuriously answer OK: retried)",
    source: "kiosk driver GetRibbonStatus",
    sentByAdapter: true,
  },
  Rco: {
    forms: ["Rco;c", "Rco;p", "Rco;n"],
    meaning: "counters: inserted cards, printed panels, cleanings performed",
    source: "guide p.31",
    sentByAdapter: true,
  },
  // Several feeders (docs/stock.md): which one the next insert takes from, and their sensors.
  Piem: {
    forms: ["Piem;<n>;0"],
    meaning: "insert from feeder n (1 or 2), eject as usual",
    source: "guide p.21",
    sentByAdapter: true,
  },
  Sk: {
    forms: ["Sk;f", "Sk;w"],
    meaning: "the feeder module: f which feeders are empty, w which are near empty (0 none, 1, 2, 3 both)",
    source: "guide p.64",
    sentByAdapter: true,
  },
  // Technician maintenance (kiosk-agent printer …).
  Scp: {
    forms: ["Scp"],
    meaning: "cleaning cycle with a cleaning card",
    source: "guide p.41",
    sentByAdapter: true,
  },
  Srs: {
    forms: ["Srs"],
    meaning: "software reset, as at power-on",
    source: "guide p.44; kiosk driver Reset",
    sentByAdapter: true,
  },
  St: { forms: ["St"], meaning: "print the printer's test card", source: "guide p.45", sentByAdapter: true },
  // Seen in the Windows driver's captures; understood by the simulator, never sent by the adapter.
  Pmi: {
    forms: ["Pmi;F;s"],
    meaning: "insertion mode",
    source: "guide p.22; captures",
    sentByAdapter: false,
  },
  Pc: { forms: ["Pc;k;=;10"], meaning: "contrast", source: "guide p.19; captures", sentByAdapter: false },
  Pdt: {
    forms: ["Pdt;DU"],
    meaning: "not in the guide; sent by the Windows driver",
    source: "captures",
    sentByAdapter: false,
  },
  Mr: { forms: ["Mr;s"], meaning: "ribbon motor", source: "guide p.18; captures", sentByAdapter: false },
  Ppws: {
    forms: ["Ppws;<n>"],
    meaning: "not in the guide; sent by the Windows driver",
    source: "captures",
    sentByAdapter: false,
  },
} as const satisfies Record<string, EvolisCommandSpec>;

export type EvolisCommandName = keyof typeof EVOLIS_COMMANDS;

export function isEvolisCommand(name: string): name is EvolisCommandName {
  return Object.hasOwn(EVOLIS_COMMANDS, name);
}
