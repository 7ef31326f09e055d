#!/usr/bin/env node
// The agent is written in TypeScript and run through tsx's loader, so what runs is what is reviewed.
import { register } from "tsx/esm/api";

register();
await import("../agent/cli/main.ts");
