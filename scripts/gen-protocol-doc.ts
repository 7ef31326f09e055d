/**
 * Generates docs/protocol.schema.json — the JSON Schema of every agent ↔ D1 message — from the zod
 * schemas the agent and the D1 emulator actually use (agent/d1/messages.ts, agent/d1/operation.ts,
 * agent/jobs/production-job.ts). docs/protocol.md is the prose; this file is the machine contract.
 *
 *   npm run docs:protocol            write docs/protocol.schema.json
 *   npm run docs:protocol -- --check exit 1 if the file is not up to date (for CI)
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { z } from "zod";
import * as M from "../agent/d1/messages.js";
import { OperationSchema } from "../agent/d1/operation.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const outFile = join(root, "docs", "protocol.schema.json");
const jobModule = join(root, "agent", "jobs", "production-job.ts");

interface Meta {
  id: string;
  title: string;
  description: string;
}

const definitions: Array<[z.ZodType, Meta]> = [
  [M.HelloMessage, meta("HelloMessage", "hello", "agent → D1. First frame after the socket opens.")],
  [
    M.NotifyMessage,
    meta("NotifyMessage", "notify", "agent → D1. Status events; eventIds[i] belongs to operations[i]."),
  ],
  [
    M.PushResultMessage,
    meta(
      "PushResultMessage",
      "push-result",
      "agent → D1. Answer to push, sent after the job is committed to disk (or refused).",
    ),
  ],
  [M.CancelResultMessage, meta("CancelResultMessage", "cancel-result", "agent → D1. Answer to cancel.")],
  [
    M.StatusResultMessage,
    meta("StatusResultMessage", "status-result", "agent → D1. Answer to status-query."),
  ],
  [
    M.ErrorMessage,
    meta("ErrorMessage", "error", "Both directions. The receiver could not read a frame; the link stays up."),
  ],
  [
    M.WelcomeMessage,
    meta("WelcomeMessage", "welcome", "D1 → agent. Answer to hello; the link is up from here."),
  ],
  [
    M.PushMessage,
    meta("PushMessage", "push", "D1 → agent. A production job for this station (job: see ProductionJob)."),
  ],
  [
    M.AckMessage,
    meta("AckMessage", "ack", "D1 → agent. These eventIds are stored by D1 and need not be sent again."),
  ],
  [M.CancelMessage, meta("CancelMessage", "cancel", "D1 → agent. Cancel an operation not yet produced.")],
  [
    M.StatusQueryMessage,
    meta(
      "StatusQueryMessage",
      "status-query",
      "D1 → agent. On-demand status, by operationIds or since a time.",
    ),
  ],
  [
    OperationSchema,
    meta("Operation", "operation", "D1's operation object (status notification / on-demand status)."),
  ],
  [M.AgentToD1, meta("AgentToD1", "agent → D1", "Any frame the agent sends, discriminated by `type`.")],
  [M.D1ToAgent, meta("D1ToAgent", "D1 → agent", "Any frame D1 sends, discriminated by `type`.")],
];

function meta(id: string, title: string, description: string): Meta {
  return { id, title, description };
}

async function main(): Promise<void> {
  const check = process.argv.includes("--check");
  let hasJob = false;
  if (existsSync(jobModule)) {
    // Imported only if present: the job schema may be written after this script.
    const mod = (await import(pathToFileURL(jobModule).href)) as { ProductionJobSchema?: z.ZodType };
    if (mod.ProductionJobSchema) {
      definitions.push([
        mod.ProductionJobSchema,
        meta(
          "ProductionJob",
          "production job",
          "The `job` of a push (shared/production-job.md). Structure only: content rules (Luhn, track " +
            "syntax, PAN agreement) are checked by the agent and reported as DATA_EXCEPTION.",
        ),
      ]);
      hasJob = true;
    }
  }
  if (!hasJob)
    console.warn("gen-protocol-doc: agent/jobs/production-job.ts (ProductionJobSchema) not found; skipped");

  const registry = z.registry<Meta>();
  for (const [schema, m] of definitions) registry.add(schema, m);
  // "input": what a sender may put on the wire (fields with a default are optional).
  const generated = z.toJSONSchema(registry, {
    uri: (id) => `#/$defs/${id}`,
    io: "input",
    unrepresentable: "any",
  }) as { schemas: Record<string, Record<string, unknown>> };

  const defs: Record<string, Record<string, unknown>> = {};
  for (const [, { id, title, description }] of definitions) {
    // Metadata comes from zod's global registry (.describe()); the titles and texts above win.
    const { $schema: _s, $id: _i, description: _d, ...schema } = generated.schemas[id]!;
    defs[id] = { title, description, ...schema };
  }
  if (hasJob) {
    const push = defs["PushMessage"]!;
    const props = push["properties"] as Record<string, unknown>;
    // The wire schema takes any job (the agent answers a bad one itself); point readers at its shape.
    props["job"] = { $ref: "#/$defs/ProductionJob" };
  }

  const document = {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: "https://kiosk-agent.local/docs/protocol.schema.json",
    title: "kiosk-agent ↔ D1 WebSocket protocol",
    description:
      "One JSON object per WebSocket text frame. GENERATED by `npm run docs:protocol` from agent/d1/*.ts" +
      (hasJob ? " and agent/jobs/production-job.ts" : "") +
      "; do not edit. Prose: docs/protocol.md.",
    oneOf: [{ $ref: "#/$defs/AgentToD1" }, { $ref: "#/$defs/D1ToAgent" }],
    $defs: defs,
  };
  const text = `${JSON.stringify(document, null, 2)}\n`;
  const rel = relative(root, outFile);
  if (check) {
    const current = existsSync(outFile) ? readFileSync(outFile, "utf8") : "";
    if (current !== text) {
      console.error(`${rel} is out of date: run npm run docs:protocol`);
      process.exit(1);
    }
    console.log(`${rel} is up to date`);
    return;
  }
  writeFileSync(outFile, text);
  console.log(`wrote ${rel} (${Object.keys(defs).length} definitions)`);
}

await main();
