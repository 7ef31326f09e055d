import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { blankImage, setPixel } from "../../../../drivers/printer/card-image.js";
import { EVOLIS_COMMANDS } from "../../../../drivers/printer/evolis/commands.js";
import { EVOLIS_PRINT_AREA } from "../../../../drivers/printer/evolis/panel.js";
import { driveClock, printerStack } from "./rig.js";

/**
 * No command without a public source: docs/devices.md's table "Commands the adapter sends", the
 * table in commands.ts, and what the adapter really puts on the wire agree in both directions.
 */
const DOC = fileURLToPath(new URL("../../../../docs/devices.md", import.meta.url));

function documentedRows(): Array<{ forms: string[]; source: string }> {
  const text = readFileSync(DOC, "utf8");
  const section = text.slice(text.indexOf("### Commands the adapter sends"));
  const table = section.slice(0, section.indexOf("\n\n", section.indexOf("| --- |")));
  return table
    .split("\n")
    .filter((line) => line.startsWith("| `"))
    .map((line) => {
      const cells = line.split(" | ");
      const forms = [...(cells[0] ?? "").matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
      return { forms, source: (cells[2] ?? "").replace(/\|\s*$/, "").trim() };
    });
}

const adapterForms = Object.values(EVOLIS_COMMANDS)
  .filter((spec) => spec.sentByAdapter)
  .flatMap((spec) => [...spec.forms]);

/** A form as a pattern over the simulator's command log (`<…>` is a parameter; data commands by name). */
function matches(form: string, entry: string): boolean {
  const name = form.split(";")[0]!;
  if (entry === name && (name === "Dm" || name === "Dbc" || name === "Db")) return true;
  const pattern = form
    .split(/<[^>]+>/)
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
    .join("[^;]+");
  return new RegExp(`^${pattern}$`).test(entry === "Se>mouth" ? "Se" : entry);
}

let closeAfter: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closeAfter) await close();
  closeAfter = [];
});

describe("every command the Evolis adapter sends names its public source", () => {
  it("docs/devices.md lists exactly the adapter's commands, each with a source", () => {
    const rows = documentedRows();
    expect(rows.length).toBeGreaterThan(25);
    for (const row of rows) expect(row.source, row.forms.join(", ")).toMatch(/\w/);
    const documented = rows.flatMap((r) => r.forms).sort();
    expect(documented).toEqual([...adapterForms].sort());
  });

  it("a run of every operation sends only those forms, and uses every one of them", async () => {
    const log: string[] = [];
    for (const magReadBack of ["rmb", "direct"] as const) {
      const stack = printerStack({
        printer: { magReadBack, takeAfterMs: null, feederCards: 5, ribbonPanels: 10 },
      });
      closeAfter.push(() => stack.driver.close());
      const { driver, printer, clock } = stack;
      await driver.open();
      await driver.readStatus();
      await driver.readCounters();
      await driver.insertCard();
      await driver.moveToContactStation();
      const side = blankImage(EVOLIS_PRINT_AREA);
      setPixel(side, 10, 10);
      await driver.printSides({ front: side, back: side });
      await driver.encodeMagstripe(
        { track1: "B4111111111111111^DOE/JOHN^2512101", track2: "4111111111111111=2512101" },
        "HICO",
      );
      await driver.encodeMagstripe({ track2: "4111111111111111=2512101" }, "LOCO");
      await driver.presentCard();
      let taken: boolean | undefined;
      void driver.waitForCardTaken(300).then((t) => {
        taken = t;
      });
      await driveClock(clock, () => taken !== undefined, 50);
      await driver.captureCard();
      await driver.insertCard();
      await driver.rejectCard();
      log.push(...printer.commandLog);
    }
    // Two feeders, and the technician's maintenance operations.
    const stack = printerStack({ feeders: ["1", "2"], printer: { feeders: { "1": 5, "2": 5 } } });
    closeAfter.push(() => stack.driver.close());
    const { driver, printer } = stack;
    await driver.open();
    await driver.readStatus();
    await driver.insertCard("2");
    await driver.rejectCard();
    await driver.printTestCard("1");
    await driver.captureCard(); // the test card waits in the mouth
    await driver.runCleaning();
    await driver.resetPrinter();
    await driver.insertCard("1");
    await driver.ejectCard();
    log.push(...printer.commandLog);
    const unknown = log.filter((entry) => !adapterForms.some((form) => matches(form, entry)));
    expect(unknown).toEqual([]);
    const unused = adapterForms.filter((form) => !log.some((entry) => matches(form, entry)));
    expect(unused).toEqual([]);
  });
});
