import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { stockCommand } from "../../agent/cli/stock.js";
import type { JobState } from "../../agent/jobs/state-machine.js";
import type { CardFeed } from "../../agent/stock/card-movement.js";
import { formatStockReport } from "../../agent/stock/report-format.js";
import { JobStore } from "../../agent/store/job-store.js";
import { MIGRATIONS } from "../../agent/store/migrations.js";
import { loadOrCreateKey, SealedBox } from "../../agent/store/sealed-box.js";
import { SPOIL_REASONS } from "../../agent/store/stock-ledger.js";
import { ManualClock } from "../../agent/util/clock.js";
import { tempDir } from "./support.js";

const FEEDER_KEYS = [
  "feeder",
  "stock",
  "opening",
  "loaded",
  "issued",
  "spoiled",
  "returned",
  "adjusted",
  "expectedClosing",
  "printerCounterDelta",
];

describe("kiosk-agent stock", () => {
  let dir: string;
  let remove: () => void;
  let clock: ManualClock;
  let store: JobStore | undefined;

  beforeEach(() => {
    ({ dir, remove } = tempDir("kiosk-stock-"));
    clock = new ManualClock();
  });
  afterEach(() => {
    store?.close();
    store = undefined;
    remove();
  });

  /** The agent's store on the data directory, as the running agent holds it. */
  const openStore = () => {
    store = new JobStore(
      join(dir, "jobs.sqlite"),
      new SealedBox(loadOrCreateKey(join(dir, "data.key"))),
      clock,
    );
    return store;
  };

  /** A job of `stock` through the agent's store, its card fed from `feeder`, ended from `from` to `to`. */
  const job = (
    id: string,
    feed: CardFeed,
    from: JobState,
    to: JobState,
    feeder = "1",
    stock = "DEBIT-CLASSIC",
  ) => {
    const s = store!;
    s.accept({ kind: "valid", operationId: id, cardId: `card-${id}`, jobJson: "{}", cardStock: stock });
    s.transition(id, "READY", "PRODUCING", {}, { feeder, ledgerStock: stock });
    s.markCardFed(id, feed);
    if (from === "PRESENTED") s.transition(id, "PRODUCING", "PRESENTED");
    s.transition(id, from, to, to === "FAILED" ? { reason: "CB_TIME" } : {});
    clock.advance(1000);
  };

  const stock = async (...argv: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await stockCommand(argv, {
      out: (t) => out.push(t),
      err: (t) => err.push(t),
      clock,
      env: {},
    });
    clock.advance(1000);
    return { code, out: out.join("\n"), err: err.join("\n") };
  };

  const writeConfig = (extra: Record<string, unknown> = {}) => {
    const file = join(dir, "config.json");
    writeFileSync(
      file,
      JSON.stringify({
        station: { id: "KIOSK-PS-101" },
        d1: { url: "wss://d1.example.test/perso", token: "station-bearer-token" },
        dataDir: dir,
        printer: {
          path: "/dev/ttyUSB0",
          feeders: [
            { id: "1", stock: "DEBIT-CLASSIC" },
            { id: "2", stock: "CREDIT-GOLD" },
          ],
        },
        ...extra,
      }),
    );
    return file;
  };

  const ledgerRows = () => {
    const db = new Database(join(dir, "jobs.sqlite"), { readonly: true });
    try {
      return db
        .prepare(
          "SELECT feeder, stock, kind, quantity, operator, second_operator AS secondOperator, note FROM stock_ledger ORDER BY seq",
        )
        .all();
    } finally {
      db.close();
    }
  };

  it("a missing database is refused with exit 1 and none is created; no data directory is a usage error", async () => {
    const missing = join(dir, "nowhere");
    for (const argv of [
      ["report", "--data-dir", missing],
      ["load", "--data-dir", missing, "--feeder", "1", "--stock", "X", "--cards", "5", "--operator", "alice"],
    ]) {
      const r = await stock(...argv);
      expect(r.code).toBe(1);
      expect(r.err).toContain(`no job database in ${missing} (jobs.sqlite)`);
      expect(r.out).toBe("");
    }
    expect(existsSync(join(missing, "jobs.sqlite"))).toBe(false);
    expect((await stock("report")).code).toBe(2);
    expect((await stock("report", "--data-dir", "")).code).toBe(2);
  });

  it("load, return, adjust, empty-bin and acknowledge-counter write the ledger while the agent holds it open", async () => {
    const s = openStore();
    s.stock.recordCounter(700);
    const load = await stock(
      "load",
      "--data-dir",
      dir,
      "--feeder",
      "1",
      "--stock",
      "DEBIT-CLASSIC",
      "--cards",
      "100",
      "--operator",
      "alice",
      "--note",
      "box 42",
    );
    expect(load).toMatchObject({ code: 0, err: "" });
    expect(load.out).toBe("feeder 1 (DEBIT-CLASSIC): loaded 100 cards, by alice. Ledger balance 0 → 100.");
    // The running agent's connection sees the load at once (same file, WAL).
    expect(s.stock.balances()).toEqual([{ feeder: "1", stock: "DEBIT-CLASSIC", cards: 100 }]);

    job("a", "presented", "PRESENTED", "DONE");
    job("b", "presented", "PRESENTED", "FAILED");
    s.stock.recordCounter(703); // one more than the ledger: a card the ledger never saw

    // Without --stock: the stock last loaded into the feeder.
    const ret = await stock(
      "return",
      "--data-dir",
      dir,
      "--feeder",
      "1",
      "--cards",
      "8",
      "--operator",
      "bob",
    );
    expect(ret.code).toBe(0);
    expect(ret.out).toBe(
      "feeder 1 (DEBIT-CLASSIC): returned 8 cards to the vault, by bob. Ledger balance 98 → 90.",
    );

    // `--cards -3` as typed (node's parser alone would take -3 for an option).
    const adj = await stock(
      "adjust",
      "--data-dir",
      dir,
      "--feeder",
      "1",
      "--cards",
      "-3",
      "--operator",
      "alice",
      "--note",
      "counted 87",
    );
    expect(adj.code).toBe(0);
    expect(adj.out).toBe("feeder 1 (DEBIT-CLASSIC): adjusted by -3 cards, by alice. Ledger balance 90 → 87.");
    const up = await stock(
      "adjust",
      "-d",
      dir,
      "--feeder",
      "1",
      "--cards=+2",
      "--operator",
      "alice",
      "--note",
      "found 2",
    );
    expect(up.out).toContain("adjusted by +2 cards, by alice. Ledger balance 87 → 89.");

    const bin = await stock(
      "empty-bin",
      "--data-dir",
      dir,
      "--bin",
      "capture",
      "--cards",
      "1",
      "--operator",
      "bob",
    );
    expect(bin).toMatchObject({ code: 0, err: "" });
    expect(bin.out).toBe("capture bin emptied: 1 card taken out, by bob. Its count starts again now.");
    expect(Object.values(s.stock.spoiledSinceEmptied("capture"))).toEqual([0, 0, 0, 0, 0]);

    expect(s.stock.counterCheck()).toMatchObject({ mismatch: 1 });
    const ack = await stock(
      "acknowledge-counter",
      "--data-dir",
      dir,
      "--operator",
      "carol",
      "--note",
      "test card from the printer menu",
    );
    expect(ack.code).toBe(0);
    expect(ack.out).toContain(
      "acknowledged by carol: a difference of +1 (the printer counted 3, the ledger 2)",
    );
    expect(s.stock.counterCheck()).toMatchObject({ mismatch: 0 });

    expect(ledgerRows()).toEqual([
      {
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        kind: "loaded",
        quantity: 100,
        operator: "alice",
        secondOperator: null,
        note: "box 42",
      },
      {
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        kind: "issued",
        quantity: 1,
        operator: null,
        secondOperator: null,
        note: null,
      },
      {
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        kind: "spoiled",
        quantity: 1,
        operator: null,
        secondOperator: null,
        note: null,
      },
      {
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        kind: "returned",
        quantity: 8,
        operator: "bob",
        secondOperator: null,
        note: null,
      },
      {
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        kind: "adjusted",
        quantity: -3,
        operator: "alice",
        secondOperator: null,
        note: "counted 87",
      },
      {
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        kind: "adjusted",
        quantity: 2,
        operator: "alice",
        secondOperator: null,
        note: "found 2",
      },
    ]);
    const audit = s.db
      .prepare(
        "SELECT event, detail FROM audit_log WHERE event IN ('STOCK','BIN') AND operation_id IS NULL ORDER BY seq",
      )
      .all() as Array<{ event: string; detail: string }>;
    expect(
      audit.map((a) => [a.event, JSON.parse(a.detail).kind ?? "bin", JSON.parse(a.detail).operator]),
    ).toEqual([
      ["STOCK", "loaded", "alice"],
      ["STOCK", "returned", "bob"],
      ["STOCK", "adjusted", "alice"],
      ["STOCK", "adjusted", "alice"],
      ["BIN", "bin", "bob"],
      ["STOCK", "counter-acknowledged", "carol"],
    ]);

    // Nothing to acknowledge without a reading: refused.
    const empty = tempDir("kiosk-stock-empty-");
    try {
      new JobStore(
        join(empty.dir, "jobs.sqlite"),
        new SealedBox(loadOrCreateKey(join(empty.dir, "data.key"))),
        clock,
      ).close();
      const none = await stock(
        "acknowledge-counter",
        "--data-dir",
        empty.dir,
        "--operator",
        "carol",
        "--note",
        "n",
      );
      expect(none.code).toBe(1);
      expect(none.err).toContain("no reading of the printer's counter recorded yet");
    } finally {
      empty.remove();
    }
  });

  it("report: JSON shape and arithmetic, --since opening balances, the printer's counter and its mismatch", async () => {
    const s = openStore();
    s.stock.record({ feeder: "1", stock: "DEBIT-CLASSIC", kind: "loaded", quantity: 50, operator: "alice" });
    s.stock.recordCounter(1000);
    job("a", "presented", "PRESENTED", "DONE");
    job("b", "misfed", "PRODUCING", "FAILED");
    s.stock.recordCounter(1002);
    clock.advance(60_000);
    const since = new Date(clock.now()).toISOString();
    clock.advance(60_000);
    job("c", "presented", "PRESENTED", "DONE");
    job("d", "presented", "PRESENTED", "FAILED");
    job("e", "fed", "PRODUCING", "CANCELED");
    s.stock.recordCounter(1006); // 4 inserted since the last reading; the ledger fed 3
    s.stock.record({ feeder: "1", stock: "DEBIT-CLASSIC", kind: "returned", quantity: 4, operator: "bob" });

    const r = await stock("report", "--data-dir", dir, "--since", since, "--json");
    expect(r).toMatchObject({ code: 0, err: "" });
    const report = JSON.parse(r.out);
    expect(Object.keys(report)).toEqual(["since", "until", "feeders", "printer"]);
    expect(report.since).toBe(since);
    // stock() moves the clock on by a second after each command.
    expect(report.until).toBe(new Date(clock.now() - 1000).toISOString());
    expect(report.feeders).toHaveLength(1);
    const line = report.feeders[0];
    expect(Object.keys(line)).toEqual(FEEDER_KEYS);
    expect(Object.keys(line.spoiled)).toEqual([...SPOIL_REASONS]);
    expect(line).toEqual({
      feeder: "1",
      stock: "DEBIT-CLASSIC",
      opening: 48,
      loaded: 0,
      issued: 1,
      spoiled: {
        REJECTED_AFTER_PRINT: 0,
        CAPTURED_NOT_TAKEN: 1,
        MISFEED: 0,
        TEST_CARD: 0,
        CANCELED_IN_PRODUCTION: 1,
      },
      returned: 4,
      adjusted: 0,
      expectedClosing: 48 - 1 - 2 - 4,
      printerCounterDelta: 4,
    });
    expect(report.printer).toEqual({ counterDelta: 4, ledgerFed: 3, mismatch: 1 });

    const all = JSON.parse((await stock("report", "--data-dir", dir, "--json")).out);
    expect(all.since).toBeNull();
    expect(all.feeders[0]).toMatchObject({ opening: 0, loaded: 50, issued: 2, expectedClosing: 41 });
    expect(all.feeders[0].spoiled).toEqual({
      REJECTED_AFTER_PRINT: 0,
      CAPTURED_NOT_TAKEN: 1,
      MISFEED: 1,
      TEST_CARD: 0,
      CANCELED_IN_PRODUCTION: 1,
    });
    expect(all.printer).toEqual({ counterDelta: 6, ledgerFed: 5, mismatch: 1 });

    const text = await stock("report", "--data-dir", dir, "--since", since);
    expect(text.code).toBe(0);
    const lines = text.out.split("\n");
    expect(lines[0]).toBe(`Card stock from ${since} to ${new Date(clock.now() - 1000).toISOString()}`);
    expect(lines).toContain(
      "FEEDER  STOCK          OPENING  LOADED  ISSUED  SPOILED  RETURNED  ADJUSTED  EXPECTED CLOSING  PRINTER COUNTER",
    );
    expect(lines).toContain(
      "1       DEBIT-CLASSIC       48       0       1        2         4         0                41                4",
    );
    expect(lines).toContain("        spoiled: CAPTURED_NOT_TAKEN 1, CANCELED_IN_PRODUCTION 1");
    expect(text.out).toContain(
      "Printer counter: +4 cards inserted; the ledger counted 3 cards fed between the same readings: mismatch +1",
    );
    expect(
      lines.some((l) => l.startsWith("MISMATCH: the printer took 1 card more than the ledger counted.")),
    ).toBe(true);

    // An acknowledgement quiets the live check, never the report over a period that includes it.
    expect(
      (await stock("acknowledge-counter", "-d", dir, "--operator", "carol", "--note", "jam cleared by hand"))
        .code,
    ).toBe(0);
    expect(JSON.parse((await stock("report", "-d", dir, "--json")).out).printer.mismatch).toBe(1);
  });

  it("report: several feeders leave printerCounterDelta null per line; configured feeders are listed", async () => {
    const s = openStore();
    s.stock.record({ feeder: "1", stock: "DEBIT-CLASSIC", kind: "loaded", quantity: 10, operator: "alice" });
    s.stock.recordCounter(10);
    job("a", "presented", "PRESENTED", "DONE");
    s.stock.recordCounter(11);
    const config = writeConfig();
    const report = JSON.parse((await stock("report", "--config", config, "--json")).out);
    expect(
      report.feeders.map((f: Record<string, unknown>) => [
        f.feeder,
        f.stock,
        f.expectedClosing,
        f.printerCounterDelta,
      ]),
    ).toEqual([
      ["1", "DEBIT-CLASSIC", 9, null],
      ["2", "CREDIT-GOLD", 0, null],
    ]);
    for (const f of report.feeders) expect(Object.keys(f)).toEqual(FEEDER_KEYS);
    expect(report.printer).toEqual({ counterDelta: 1, ledgerFed: 1, mismatch: 0 });
    const text = await stock("report", "--config", config);
    expect(text.out).toContain("they agree");
    expect(text.out).not.toContain("MISMATCH");
  });

  it("dual control: above the threshold one operator, or the same one twice, is refused; two are recorded", async () => {
    openStore().stock.record({
      feeder: "1",
      stock: "DEBIT-CLASSIC",
      kind: "loaded",
      quantity: 100,
      operator: "alice",
    });
    const adjust = (...more: string[]) =>
      stock(
        "adjust",
        "--data-dir",
        dir,
        "--feeder",
        "1",
        "--cards",
        "-25",
        "--operator",
        "alice",
        "--note",
        "recount",
        ...more,
      );

    const one = await adjust();
    expect(one.code).toBe(1);
    expect(one.out).toBe("");
    expect(one.err).toContain(
      "an adjustment of 25 cards is above the dual-control threshold (10): a second operator must confirm it",
    );
    expect(one.err).toContain("--second-operator NAME");
    const same = await adjust("--second-operator", "Alice");
    expect(same.code).toBe(1);
    expect(same.err).toContain("the second operator must be another person");
    expect(ledgerRows()).toHaveLength(1);

    const two = await adjust("--second-operator", "bob");
    expect(two.code).toBe(0);
    expect(two.out).toBe(
      "feeder 1 (DEBIT-CLASSIC): adjusted by -25 cards, by alice, confirmed by bob. Ledger balance 100 → 75.",
    );
    expect(ledgerRows().at(-1)).toMatchObject({
      kind: "adjusted",
      quantity: -25,
      operator: "alice",
      secondOperator: "bob",
    });

    // The threshold comes from the configuration when there is one.
    const config = writeConfig({ stock: { dualControlAbove: 3 } });
    const four = await stock(
      "adjust",
      "--config",
      config,
      "--feeder",
      "1",
      "--cards",
      "+4",
      "--operator",
      "alice",
      "--note",
      "n",
    );
    expect(four.code).toBe(1);
    expect(four.err).toContain("above the dual-control threshold (3)");
    const three = await stock(
      "adjust",
      "--config",
      config,
      "--feeder",
      "1",
      "--cards",
      "+3",
      "--operator",
      "alice",
      "--note",
      "n",
    );
    expect(three.code).toBe(0);
  });

  it("with --config: the feeder's stock is the default, another stock or an unknown feeder is refused", async () => {
    openStore();
    const config = writeConfig();
    const ok = await stock(
      "load",
      "--config",
      config,
      "--feeder",
      "2",
      "--cards",
      "30",
      "--operator",
      "alice",
    );
    expect(ok.code).toBe(0);
    expect(ok.out).toBe("feeder 2 (CREDIT-GOLD): loaded 30 cards, by alice. Ledger balance 0 → 30.");

    const wrong = await stock(
      "load",
      "--config",
      config,
      "--feeder",
      "1",
      "--stock",
      "CREDIT-GOLD",
      "--cards",
      "30",
      "--operator",
      "alice",
    );
    expect(wrong.code).toBe(1);
    expect(wrong.err).toContain(
      "feeder 1 is configured for DEBIT-CLASSIC, not CREDIT-GOLD: the load is refused",
    );
    expect(wrong.err).toContain("CREDIT-GOLD goes into feeder 2");

    const unknown = await stock(
      "load",
      "--config",
      config,
      "--feeder",
      "3",
      "--stock",
      "X",
      "--cards",
      "1",
      "--operator",
      "alice",
    );
    expect(unknown.code).toBe(1);
    expect(unknown.err).toContain("feeder 3 is not in the configuration (printer.feeders: 1, 2)");

    // Without a configuration and without a load to go by, the stock must be named.
    const unnamed = await stock(
      "load",
      "--data-dir",
      dir,
      "--feeder",
      "4",
      "--cards",
      "1",
      "--operator",
      "alice",
    );
    expect(unnamed.code).toBe(1);
    expect(unnamed.err).toContain("feeder 4 has no configured stock and was never loaded");
    expect(ledgerRows()).toEqual([
      expect.objectContaining({ feeder: "2", stock: "CREDIT-GOLD", quantity: 30 }),
    ]);

    const bad = writeConfig({ stock: { dualControlAbove: -1 } });
    expect((await stock("report", "--config", bad)).code).toBe(1);
  });

  it("usage errors exit 2 and record nothing", async () => {
    openStore();
    const base = ["--data-dir", dir, "--feeder", "1", "--stock", "S", "--operator", "alice"];
    for (const argv of [
      [],
      ["frobnicate", "--data-dir", dir],
      ["report", "extra", "--data-dir", dir],
      ["report", "--data-dir", dir, "--since", "yesterday-ish"],
      ["report", "--data-dir", dir, "--feeder", "1"],
      ["load", ...base],
      ["load", ...base, "--cards", "0"],
      ["load", ...base, "--cards", "-4"],
      ["load", ...base, "--cards", "12abc"],
      ["load", ...base, "--cards", "5", "--second-operator", "bob"],
      ["adjust", ...base, "--cards", "3", "--note", "unsigned"],
      ["adjust", ...base, "--cards", "-3"],
      ["adjust", ...base, "--cards", "-0", "--note", "zero"],
      [
        "load",
        "--data-dir",
        dir,
        "--feeder",
        "feeder-one",
        "--stock",
        "S",
        "--cards",
        "1",
        "--operator",
        "a",
      ],
      ["load", ...base, "--cards", "1", "--note", "card 5266092201416174 was bent"],
      ["empty-bin", "--data-dir", dir, "--bin", "floor", "--cards", "1", "--operator", "alice"],
      ["acknowledge-counter", "--data-dir", dir, "--operator", "alice"],
      ["report", "--data-dir", dir, "--bogus"],
    ]) {
      const r = await stock(...argv);
      expect(r.code, argv.join(" ")).toBe(2);
      expect(r.err, argv.join(" ")).toContain("Usage: kiosk-agent stock");
    }
    // The refused note is not echoed back.
    const note = await stock("load", ...base, "--cards", "1", "--note", "card 5266092201416174 was bent");
    expect(note.err).not.toContain("5266092201416174");
    expect(ledgerRows()).toEqual([]);
    const help = await stock("--help");
    expect(help.code).toBe(0);
    expect(help.out).toContain("acknowledge-counter --operator NAME --note TEXT");
  });

  it("migrates a database from before the ledger, and formatStockReport is what the command prints", async () => {
    const file = join(dir, "jobs.sqlite");
    const old = new Database(file);
    old.pragma("journal_mode = WAL");
    old.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)");
    for (const m of MIGRATIONS.filter((m) => m.version < 5)) {
      old.exec(m.sql);
      old.prepare("INSERT INTO schema_migrations VALUES (?, ?)").run(m.version, "2026-01-01T00:00:00.000Z");
    }
    old.close();

    const r = await stock(
      "load",
      "--data-dir",
      dir,
      "--feeder",
      "1",
      "--stock",
      "DEBIT-CLASSIC",
      "--cards",
      "20",
      "--operator",
      "alice",
    );
    expect(r.code).toBe(0);
    expect(ledgerRows()).toHaveLength(1);

    // The same clock reading: the report's `until` is the time it was made.
    const expected = formatStockReport(openStore().stock.report());
    const printed = await stock("report", "--data-dir", dir);
    expect(printed.out).toBe(expected);
    expect(printed.out).toContain("Printer counter: no reading recorded");
  });
});
