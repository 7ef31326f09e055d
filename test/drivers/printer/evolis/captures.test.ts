import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../../../agent/util/clock.js";
import { type CardImage, getPixel, inkCount, sameImage } from "../../../../drivers/printer/card-image.js";
import { CommandParser } from "../../../../drivers/printer/evolis/command-parser.js";
import { compressKO, decompressKO } from "../../../../drivers/printer/evolis/ko-compression.js";
import { imageFromPanel, panelFromImage } from "../../../../drivers/printer/evolis/panel.js";
import { pngToImage } from "../../../../simulator/printer/preview.js";
import { VirtualEvolisPrinter } from "../../../../simulator/printer/virtual-evolis-printer.js";
import { settle } from "./rig.js";

/**
 * The eight captures of Evolis's own Windows driver (test/fixtures/evolis-captures/README.md): the
 * only real printer bytes in the public record. Decoding them with the project's own parser and K/O
 * decoder, and drawing them with its own orientation, must give the cardholder's view exactly.
 */
const DIR = fileURLToPath(new URL("../../../fixtures/evolis-captures/", import.meta.url));
const CAPTURES = readdirSync(DIR)
  .filter((f) => !f.includes("."))
  .sort();

function expectedImage(name: string): CardImage {
  return pngToImage(readFileSync(`${DIR}${name}-front-as-seen.png`), 300);
}

function parse(name: string) {
  const parser = new CommandParser();
  const commands = parser.push(readFileSync(`${DIR}${name}`));
  return { commands, parser };
}

describe("Evolis Windows driver captures", () => {
  it("are all here", () => {
    expect(CAPTURES).toEqual([
      "card-black",
      "card-black-fit",
      "card-gradient",
      "card-gradient-fit",
      "card-white",
      "card-white-fit",
      "evolis-card-curves",
      "evolis-card-text",
    ]);
  });

  it.each(CAPTURES)("%s: the device-side parser reads the job the Windows driver sent", (name) => {
    const { commands, parser } = parse(name);
    expect(
      commands.map((c) => (c.kind === "command" ? [c.name, ...c.params.slice(0, 2)].join(";") : c.kind)),
    ).toEqual([
      "Pr;k",
      "Pmi;F;s",
      "Pc;k;=",
      "Pdt;DU",
      "Mr;s",
      expect.stringMatching(/^Ppws;\d+$/),
      "Ss",
      "Sr",
      "Dbc;k;2",
      "Se;1",
    ]);
    // NUL padding after the panel and at the end of the job is noise before an ESC, nothing more.
    const nuls = [...readFileSync(`${DIR}${name}`).subarray(-64)].filter((b) => b === 0).length;
    expect(parser.droppedBytes).toBeGreaterThanOrEqual(Math.min(nuls, 32));
    expect(parser.droppedFrames).toBe(0);
  });

  it.each(CAPTURES)(
    "%s: decodes with the project's K/O decoder and draws pixel-identical to the expected view",
    (name) => {
      const dbc = parse(name).commands.find((c) => c.kind === "command" && c.name === "Dbc");
      if (dbc?.kind !== "command" || !dbc.binary) throw new Error("no Dbc in the capture");
      expect(dbc.binary.length).toBe(Number(dbc.params[2]));
      const seen = imageFromPanel(decompressKO(dbc.binary));
      const expected = expectedImage(name);
      expect([seen.width, seen.height]).toEqual([expected.width, expected.height]);
      expect(sameImage(seen, expected)).toBe(true);
    },
  );

  it("orientation: drawn with dot 0 at the top instead, a real capture comes out upside-down and mirrored", () => {
    const dbc = parse("evolis-card-text").commands.find((c) => c.kind === "command" && c.name === "Dbc");
    if (dbc?.kind !== "command" || !dbc.binary) throw new Error("no Dbc in the capture");
    const seen = imageFromPanel(decompressKO(dbc.binary));
    const expected = expectedImage("evolis-card-text");
    // Flip the rows: what a dot-0-at-the-top reading would show.
    let agreeing = 0;
    for (let y = 0; y < seen.height; y++) {
      for (let x = 0; x < seen.width; x++) {
        if (getPixel(seen, x, seen.height - 1 - y) === getPixel(expected, x, y)) agreeing++;
      }
    }
    expect(agreeing / (seen.width * seen.height)).toBeLessThan(0.9);
  });

  it.each(CAPTURES)(
    "%s: the project's encoder codes the same panel (shorter: trailing white bytes are left out)",
    (name) => {
      const dbc = parse(name).commands.find((c) => c.kind === "command" && c.name === "Dbc");
      if (dbc?.kind !== "command" || !dbc.binary) throw new Error("no Dbc in the capture");
      const panel = decompressKO(dbc.binary);
      const ours = compressKO(panel);
      expect(decompressKO(ours).equals(panel)).toBe(true);
      expect(ours.length).toBeLessThanOrEqual(dbc.binary.length);
      expect(panelFromImage(imageFromPanel(panel)).equals(panel)).toBe(true);
    },
  );

  it.each(CAPTURES)(
    "%s: the simulated Evolis replays the capture and prints the expected card",
    async (name) => {
      const printer = new VirtualEvolisPrinter({ clock: new ManualClock(), takeAfterMs: null });
      const replies: string[] = [];
      printer.attach({
        path: "capture",
        plugged: true,
        send: (bytes) => replies.push(bytes.toString("latin1")),
        unplug: () => undefined,
        replug: () => undefined,
      });
      const bytes = readFileSync(`${DIR}${name}`);
      // As a USB stack would deliver it: in 4 KiB pieces.
      for (let i = 0; i < bytes.length; i += 4096) printer.receive(bytes.subarray(i, i + 4096));
      await settle(() => replies.length >= 10);
      expect(replies).toEqual(Array(10).fill("OK\0"));
      const card = printer.record[0]!;
      expect(sameImage(card.front!, expectedImage(name))).toBe(true);
      expect(card.frontInkDots).toBe(inkCount(expectedImage(name)));
      // An unconfigured printer (no Pneab;E) ejects the printed card: the Windows driver's own flow.
      expect(printer.state.position).toBe("MOUTH");
    },
  );
});
