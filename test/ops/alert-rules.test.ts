import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type OpsRig, startOpsRig } from "./rig.js";
import { type Sample, scrape, suppliesRead } from "./scrape.js";

/**
 * The supply alerts (deploy/prometheus/kiosk-agent-alerts.yml) under Prometheus's own promtool, and
 * against a running agent's /metrics, so the rules cannot drift from the code.
 */

const DIR = join(import.meta.dirname, "../../deploy/prometheus");
const RULES = "kiosk-agent-alerts.yml";
const RULE_TESTS = "kiosk-agent-alerts.test.yml";

/** Runs promtool in deploy/prometheus; a missing promtool fails with what to do, never skips. */
function promtool(...args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    execFile("promtool", args, { cwd: DIR, timeout: 15_000 }, (err, stdout, stderr) => {
      if ((err as NodeJS.ErrnoException | null)?.code === "ENOENT") {
        reject(
          new Error(
            "promtool not found: run `npm run setup` (it installs Debian's prometheus package, which ships promtool)",
          ),
        );
        return;
      }
      resolve({ code: err ? Number(err.code ?? 1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

interface AlertRule {
  alert: string;
  expr: string;
  /** kiosk_* metric names in the expression, in order. */
  metrics: string[];
  /** `$labels.x` names the labels and annotations use. */
  labelRefs: string[];
}

/**
 * The alerting rules of the rules file. No YAML parser is a dependency here: the file keeps one
 * shape (`- alert:` entries; `expr:` inline or a folded block), and a rule this reader gets nothing
 * from fails the test below.
 */
function readAlertRules(text: string): AlertRule[] {
  const blocks = text.split(/^\s*- alert:\s*/m).slice(1);
  return blocks.map((block) => {
    const alert = block.slice(0, block.indexOf("\n")).trim();
    const lines = block.split("\n");
    const at = lines.findIndex((l) => /^\s*expr:/.test(l));
    let expr = "";
    if (at >= 0) {
      const line = lines[at]!;
      const indent = line.search(/\S/);
      const inline = line.replace(/^\s*expr:\s*/, "");
      if (inline && !/^[>|]/.test(inline)) expr = inline;
      else {
        const body: string[] = [];
        for (const l of lines.slice(at + 1)) {
          if (l.trim() && l.search(/\S/) <= indent) break;
          body.push(l.trim());
        }
        expr = body.join(" ").trim();
      }
    }
    return {
      alert,
      expr,
      metrics: [...new Set(expr.match(/\bkiosk_[a-z_]+\b/g) ?? [])],
      labelRefs: [...new Set([...block.matchAll(/\$labels\.(\w+)/g)].map((m) => m[1]!))],
    };
  });
}

/** The labels the agent exports each supply gauge with (the scrape target adds instance and job). */
const EXPECTED_LABELS: Record<string, string[]> = {
  kiosk_printer_ribbon_remaining_panels: [],
  kiosk_printer_ribbon_capacity_panels: [],
  kiosk_stock_cards: ["feeder", "stock"],
  kiosk_stock_near_empty_threshold_cards: ["feeder", "stock"],
  kiosk_printer_feeder_empty: ["feeder", "stock"],
  kiosk_printer_bin_cards: ["bin"],
  kiosk_printer_bin_near_full_threshold_cards: ["bin"],
  kiosk_printer_bin_capacity_cards: ["bin"],
  kiosk_printer_cleaning_due: [],
  kiosk_stock_ledger_mismatch_cards: [],
};
/** Labels every alert has without the agent: its own and the scrape target's. */
const TARGET_LABELS = ["instance", "job"];

const rules = readAlertRules(readFileSync(join(DIR, RULES), "utf8"));
const labelKey = (s: Sample) =>
  Object.keys(s.labels)
    .sort()
    .map((k) => `${k}=${s.labels[k]}`)
    .join(",");

describe("supply alert rules (deploy/prometheus)", () => {
  it("the rules file is read: every alert has an expression over the agent's gauges", () => {
    expect(rules.map((r) => r.alert)).toEqual([
      "KioskRibbonLow",
      "KioskCardStockLow",
      "KioskFeederEmpty",
      "KioskBinNearlyFull",
      "KioskBinFull",
      "KioskPrinterCleaningAdvised",
      "KioskPrinterCleaningRequired",
      "KioskStockLedgerMismatch",
    ]);
    for (const rule of rules) {
      expect(rule.metrics.length, `${rule.alert}: no kiosk_* metric in "${rule.expr}"`).toBeGreaterThan(0);
      for (const m of rule.metrics) {
        expect(Object.keys(EXPECTED_LABELS), `${rule.alert} uses ${m}`).toContain(m);
      }
    }
  });

  it("promtool check rules accepts the file", async () => {
    const { code, out } = await promtool("check", "rules", RULES);
    expect(out, out).toContain(`SUCCESS: ${rules.length} rules found`);
    expect(code, out).toBe(0);
  });

  it("promtool test rules: each alert fires on recorded series and stays silent on a healthy kiosk", async () => {
    const { code, out } = await promtool("test", "rules", RULE_TESTS);
    expect(code, out).toBe(0);
    expect(out).toContain("SUCCESS");

    // The unit tests cover every alert both ways.
    const tests = readFileSync(join(DIR, RULE_TESTS), "utf8");
    const silent = new Set([...tests.matchAll(/alertname: (\w+)\s*\n\s*exp_alerts: \[\]/g)].map((m) => m[1]));
    const firing = new Set(
      [...tests.matchAll(/alertname: (\w+)\s*\n\s*exp_alerts:\s*\n\s*- exp_labels:/g)].map((m) => m[1]),
    );
    for (const { alert } of rules) {
      expect(firing, `${alert} never fires in ${RULE_TESTS}`).toContain(alert);
      expect(silent, `${alert} is never checked silent in ${RULE_TESTS}`).toContain(alert);
    }
  });

  describe("against a running agent", () => {
    let rig: OpsRig | undefined;
    afterEach(async () => {
      await rig?.close();
      rig = undefined;
    });

    it("exports every metric the rules use, with the labels they match and template on", async () => {
      rig = await startOpsRig({
        config: { health: { enabled: true, port: 0 } },
        printer: { ribbonPanels: 180, ribbonCapacity: 200 },
      });
      rig.agent.store.stock.record({
        feeder: "1",
        stock: "DEBIT-CLASSIC",
        kind: "loaded",
        quantity: 50,
        operator: "t",
      });
      await suppliesRead(rig.agent);
      const samples = await scrape(rig.agent);

      for (const [name, labels] of Object.entries(EXPECTED_LABELS)) {
        const series = samples.filter((s) => s.name === name);
        expect(series.length, `${name} is not exported`).toBeGreaterThan(0);
        for (const s of series) expect(Object.keys(s.labels).sort(), name).toEqual([...labels].sort());
      }

      for (const rule of rules) {
        // A `$labels.x` in the annotations is a label of every series the alert can come from.
        for (const ref of rule.labelRefs.filter((l) => !TARGET_LABELS.includes(l))) {
          for (const m of rule.metrics)
            expect(EXPECTED_LABELS[m] ?? [], `${rule.alert}: $labels.${ref} on ${m}`).toContain(ref);
        }
        // The rules compare metrics one-to-one on all labels: each series of the first metric has a
        // partner with the very same labels in every other metric of the expression.
        const [first, ...others] = rule.metrics;
        for (const s of samples.filter((x) => x.name === first)) {
          for (const other of others) {
            const partners = samples.filter((x) => x.name === other).map(labelKey);
            expect(
              partners,
              `${rule.alert}: ${first}{${labelKey(s)}} has no ${other} to compare with`,
            ).toContain(labelKey(s));
          }
        }
      }
    });
  });
});
